"""The ``gradkit`` command.

``--help`` and ``plugins`` work with any broken plugin installed: discovery never
raises unless ``GRADKIT_STRICT`` is set, and no component code is imported to list.
"""

from __future__ import annotations

import argparse
import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only (typing is not imported on a cached `gradkit list`)
    from typing import List, Optional

from .errors import GradkitError
from ._kinds import KIND_HOOKS


class _LazyModule:
    """Import a module on first attribute access (keeps `gradkit list` start-up small)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


json = _LazyModule("json")
_catalog = _LazyModule("gradkit_core.catalog")


def _gk():
    import gradkit_core

    return gradkit_core


def _print_rows(rows: List[dict], cols: List[str]) -> None:
    from ._table import format_table

    print(format_table([{c: r.get(c, "") for c in cols} for r in rows]))


# ---------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    gk = _gk()
    specs = gk.list(kind=args.kind, pattern=args.pattern or "*")
    rows = [s.as_dict() for s in specs]
    for r in rows:
        r["installed"] = True
    if args.available:
        have = {(s.kind, s.name) for s in specs}
        installed_plugins = {p.name for p in gk.plugins()}
        for e in _catalog.entries():
            for kind, names in e.components.items():
                if args.kind and kind != args.kind:
                    continue
                for n in names:
                    if (kind, n) in have or e.name in installed_plugins:
                        continue
                    import fnmatch

                    if not fnmatch.fnmatch(n.lower(), (args.pattern or "*").lower()):
                        continue
                    rows.append(
                        {
                            "name": n,
                            "kind": kind,
                            "plugin": e.name,
                            "summary": "",
                            "paper": {"title": e.paper, "arxiv": e.arxiv, "year": e.year},
                            "installed": False,
                            "install": e.install_command(),
                        }
                    )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no components installed" + (f" of kind {args.kind}" if args.kind else ""))
        print("see `gradkit list --available` for first-party plugins")
        return 0
    table = []
    for r in rows:
        row = {
            "kind": r["kind"],
            "name": r["name"],
            "plugin": r["plugin"],
            "summary": (r.get("summary") or "")[:70],
        }
        if args.available:
            row["installed"] = "yes" if r["installed"] else f"no: {r['install']}"
        table.append(row)
    cols = ["kind", "name", "plugin", "summary"] + (["installed"] if args.available else [])
    _print_rows(table, cols)
    return 0


# ---------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    gk = _gk()
    spec = gk.info(args.name, kind=args.kind)
    d = spec.as_dict()
    if args.doc:
        obj = spec.load()
        d["doc"] = (getattr(obj, "__doc__", "") or "").strip()
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    width = max(len(k) for k in d)
    for k, v in d.items():
        if k == "paper":
            v = spec.paper.cite()
        elif isinstance(v, (list, dict)):
            v = json.dumps(v)
        print(f"{k.ljust(width)}  {v}")
    return 0


# ---------------------------------------------------------------------- plugins
def cmd_plugins(args: argparse.Namespace) -> int:
    gk = _gk()
    recs = gk.plugins()
    if args.json:
        print(json.dumps([r.as_dict() for r in recs], indent=1))
        return 0
    if not recs:
        print("no gradkit plugins installed")
        return 0
    rows = [
        {
            "name": r.name,
            "distribution": r.distribution,
            "version": r.version,
            "status": r.status,
            "components": len(r.components),
            "error": "; ".join([r.error] * bool(r.error) + [f"warning: {w}" for w in r.warnings]),
        }
        for r in recs
    ]
    _print_rows(rows, ["name", "distribution", "version", "status", "components", "error"])
    return 0


# ---------------------------------------------------------------------- the verbs that do work
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_install(args: argparse.Namespace) -> int:
    from . import _commands

    return _commands.cmd_install(args)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import _commands

    return _commands.run_experiment("reproductions", args)


def cmd_bench(args: argparse.Namespace) -> int:
    from . import _commands

    return _commands.run_experiment("benchmarks", args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import _commands

    return _commands.cmd_doctor(args)


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradkit",
        description="One registry for gradient-based machine-learning methods.",
    )
    p.add_argument("--version", action="version", version=f"gradkit-core {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    kinds = list(KIND_HOOKS)

    s = sub.add_parser("list", help="list installed components")
    s.add_argument("pattern", nargs="?", default="*", help="shell wildcard on the name (default *)")
    s.add_argument("--kind", choices=kinds)
    s.add_argument("--available", action="store_true", help="also list catalogued plugins that are not installed")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="show one component")
    s.add_argument("name")
    s.add_argument("--kind", choices=kinds)
    s.add_argument("--doc", action="store_true", help="import the target and show its docstring")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("plugins", help="show every plugin with its load status")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plugins)

    s = sub.add_parser("install", help="pip-install first-party plugins with their first-party dependencies")
    s.add_argument("names", nargs="+", metavar="NAME", help="plugin (or component) name from the catalog")
    s.add_argument("--from", dest="source", metavar="DIR",
                   help="a gradkit checkout or a wheelhouse made by tools/build_wheels.py (default: $GRADKIT_SOURCE, "
                        "else the checkout of an editable core)")
    s.add_argument("--editable", "-e", action="store_true", help="editable installs (from a checkout)")
    s.add_argument("--reinstall", action="store_true", help="also reinstall first-party dependencies already installed")
    s.add_argument("--dry-run", action="store_true", help="print the pip command only")
    s.set_defaults(func=cmd_install)

    for verb, func, what in (
        ("reproduce", cmd_reproduce, "run a plugin's small-scale reproduction of its paper's claim"),
        ("bench", cmd_bench, "run a plugin's speed/memory benchmark against the usual reference"),
    ):
        s = sub.add_parser(verb, help=what)
        s.add_argument("name")
        s.add_argument("--quick", action="store_true", help="smallest setting (seconds)")
        s.add_argument("--full", action="store_true", help="the long setting, where the plugin has one")
        s.add_argument("--out", help="output directory (default results/NAME)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--no-progress", action="store_true")
        s.add_argument("--jobs", type=_positive_int, default=None,
                       help="worker processes for independent runs, where the plugin supports it")
        s.add_argument("--executor", choices=["local", "serial", "ray"], default=None,
                       help="where independent runs go: local worker processes (default), serial, or Ray "
                            "(pip install 'gradkit-core[ray]'), for plugins that take --jobs")
        s.add_argument("--address", default=None,
                       help="with --executor ray: an existing Ray cluster (e.g. ray://head:10001 or auto); "
                            "default: a local Ray instance with --jobs CPUs")
        s.add_argument("--resume", action="store_true",
                       help="reuse the finished runs stored under OUT/runs, where the plugin supports it")
        s.add_argument("--check", action="store_true", help="exit 1 if a claim does not hold")
        s.set_defaults(func=func)

    s = sub.add_parser("doctor", help="check the installation and explain broken plugins")
    s.set_defaults(func=cmd_doctor)
    return p


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; ordinary errors print one line ``error: ...`` and return 1 (a failure while
    working) or 2 (a request that cannot be served: unknown name, bad option, broken catalog)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except GradkitError as exc:
        code = getattr(exc, "code", None)
        if code is None:
            from .errors import ComponentImportError

            code = 1 if isinstance(exc, ComponentImportError) else 2
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return code
    except BrokenPipeError:  # pragma: no cover - `gradkit list | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
