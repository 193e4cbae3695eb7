"""The ``gradkit`` command.

``--help`` and ``plugins`` work with any broken plugin installed: discovery never
raises unless ``GRADKIT_STRICT`` is set, and no component code is imported to list.
"""

from __future__ import annotations

import argparse
import os
import sys
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
subprocess = _LazyModule("subprocess")
time = _LazyModule("time")
_catalog = _LazyModule("gradkit_core.catalog")


def Path(*a):  # noqa: N802 - lazy pathlib.Path
    from pathlib import Path as _P

    return _P(*a)


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
            "version": r.version,
            "status": r.status,
            "components": len(r.components),
            "error": r.error,
        }
        for r in recs
    ]
    _print_rows(rows, ["name", "version", "status", "components", "error"])
    return 0


# ---------------------------------------------------------------------- install
def _constraints_file(root) -> Optional[object]:
    p = root / "tools" / "constraints.txt"
    return p if p.is_file() else None


def cmd_install(args: argparse.Namespace) -> int:
    entries = []
    for name in args.names:
        e = _catalog.find(name) or _catalog.find_component(name)
        if e is None:
            known = ", ".join(sorted(x.name for x in _catalog.entries())) or "(no catalog found)"
            print(f"error: {name!r} is not a first-party plugin; catalogued: {known}", file=sys.stderr)
            return 2
        if not e.path.is_dir():
            print(f"error: {e.name}: directory {e.path} does not exist (install from a source checkout)",
                  file=sys.stderr)
            return 2
        entries.append(e)
    cmd = [sys.executable, "-m", "pip", "install"]
    cons = _constraints_file(Path(entries[0].root))
    if cons is not None:
        cmd += ["-c", str(cons)]
    for e in entries:
        cmd += (["-e"] if args.editable else []) + [str(e.path)]
    print("$ " + " ".join(cmd))
    if args.dry_run:
        return 0
    return subprocess.call(cmd)


# ---------------------------------------------------------------------- experiments
def _run_experiment(kind: str, args: argparse.Namespace) -> int:
    import inspect

    gk = _gk()
    spec = gk.info(args.name, kind=kind)
    fn = spec.load()
    params = inspect.signature(fn).parameters
    accepts_var = any(p.kind == p.VAR_KEYWORD for p in params.values())
    wanted = {"quick": args.quick, "full": args.full, "seed": args.seed, "progress": not args.no_progress}
    out_dir = Path(args.out) if args.out else Path("results") / spec.name
    wanted["out"] = out_dir
    kwargs = {k: v for k, v in wanted.items() if accepts_var or k in params}
    if args.full and "full" not in kwargs:
        print(f"error: {kind[:-1]} {spec.name!r} has no --full mode", file=sys.stderr)
        return 2
    for opt, value in (("jobs", args.jobs), ("resume", args.resume or None)):
        if value is None:
            continue
        if not (accepts_var or opt in params):
            print(f"error: {kind[:-1]} {spec.name!r} does not take --{opt} (it runs in one process, "
                  f"from scratch)", file=sys.stderr)
            return 2
        kwargs[opt] = value
    t0 = time.perf_counter()
    result = fn(**kwargs)
    elapsed = time.perf_counter() - t0
    from .results import Result

    if not isinstance(result, Result):
        print(f"error: {spec.target_path} returned {type(result).__name__}, expected gradkit_core.results.Result",
              file=sys.stderr)
        return 1
    result.meta.setdefault("seconds", round(elapsed, 2))
    result.meta.setdefault("quick", args.quick)
    result.meta.setdefault("seed", args.seed)
    print(result.report())
    written = result.save(out_dir)
    print("\nwrote " + ", ".join(str(p) for p in written) + f"  ({elapsed:.1f} s)")
    if args.check and not result.all_passed:
        return 1
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_reproduce(args: argparse.Namespace) -> int:
    return _run_experiment("reproductions", args)


def cmd_bench(args: argparse.Namespace) -> int:
    return _run_experiment("benchmarks", args)


# ---------------------------------------------------------------------- doctor
def cmd_doctor(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    gk = _gk()
    problems = 0
    print(f"python        {sys.version.split()[0]} ({sys.executable})")
    for pkg in ("gradkit-core", "pluggy", "attrs", "torch", "gymnasium", "mujoco"):
        try:
            v = version(pkg)
        except PackageNotFoundError:
            v = "not installed"
        print(f"{pkg.ljust(13)} {v}")
    print(f"strict mode   {'on' if os.environ.get('GRADKIT_STRICT') else 'off'} (GRADKIT_STRICT)")
    path = _catalog.catalog_path()
    print(f"catalog       {path or 'not found (set GRADKIT_CATALOG)'}")
    recs = gk.plugins()
    print(f"plugins       {len(recs)} discovered, {sum(len(r.components) for r in recs)} components")
    for r in recs:
        if r.status != "ok":
            problems += 1
            print(f"  ! {r.name} ({r.distribution} {r.version}): {r.status}: {r.error}")
    if path is not None:
        installed = {r.name for r in recs}
        missing = [e.name for e in _catalog.entries() if e.name not in installed]
        if missing:
            print(f"  catalogued but not installed: {', '.join(missing)}  (gradkit install NAME)")
        for e in _catalog.entries():
            if e.name not in installed:
                continue
            have = {(s.kind, s.name) for s in gk.list(plugin=e.name)}
            for kind, names in e.components.items():
                for n in names:
                    if (kind, n) not in have:
                        problems += 1
                        print(f"  ! {e.name}: catalogued {kind} {n!r} is not registered by the installed plugin")
    print("ok" if problems == 0 else f"{problems} problem(s)")
    return 0 if problems == 0 else 1


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradkit",
        description="One registry for gradient-based machine-learning methods.",
    )
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

    s = sub.add_parser("install", help="pip-install first-party plugins from the catalog")
    s.add_argument("names", nargs="+")
    s.add_argument("--editable", "-e", action="store_true")
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
        s.add_argument("--resume", action="store_true",
                       help="reuse the finished runs stored under OUT/runs, where the plugin supports it")
        s.add_argument("--check", action="store_true", help="exit 1 if a claim does not hold")
        s.set_defaults(func=func)

    s = sub.add_parser("doctor", help="check the installation and explain broken plugins")
    s.set_defaults(func=cmd_doctor)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except GradkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # pragma: no cover - `gradkit list | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
