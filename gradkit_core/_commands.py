"""The ``gradkit`` verbs that do work: install, reproduce, bench, doctor.

Kept apart from :mod:`gradkit_core.cli` so that ``gradkit list`` never compiles or imports them.
Ordinary failures raise :class:`CommandError` (or a :class:`~gradkit_core.errors.GradkitError`);
``cli.main`` prints them as one line and exits 1 or 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from .errors import GradkitError


class CommandError(GradkitError):
    """An ordinary failure of a command: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- install
def _installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(dist)
        return True
    except PackageNotFoundError:
        return False


def install_command(names: List[str], source: Any = None, editable: bool = False,
                    reinstall: bool = False) -> List[str]:
    """The pip command that installs ``names`` with their first-party closure from ``source``.

    First-party packages are passed to pip as paths (a checkout's directories or wheel files), so pip
    never looks their names up on an index; third-party dependencies come from the index as usual,
    pinned by the source's constraints file.  First-party packages already installed are left alone
    unless ``reinstall``.
    """
    from . import catalog

    chosen = []
    for name in names:
        e = catalog.find(name) or catalog.find_component(name)
        if e is None:
            known = ", ".join(sorted(x.name for x in catalog.entries())) or "(no catalog found)"
            raise CommandError(f"{name!r} is not a first-party plugin or component; catalogued plugins: {known}", 2)
        chosen.append(e.name)
    closure = catalog.closure(chosen)
    wanted = [e.distribution for e in closure if reinstall or e.name in chosen or not _installed(e.distribution)]
    if not _installed(catalog.CORE_DISTRIBUTION):  # pragma: no cover - gradkit runs from an installed core
        wanted.insert(0, catalog.CORE_DISTRIBUTION)
    src = Path(source) if source is not None else catalog.default_source()
    if src is None:
        raise CommandError(
            "no install source: pass --from DIR (a gradkit checkout, or a wheelhouse made with "
            f"`python tools/build_wheels.py`) or set {catalog.SOURCE_ENV}; first-party packages are never "
            "taken from a package index", 2)
    paths = catalog.locate(src, wanted)
    cmd = [sys.executable, "-m", "pip", "install"]
    cons = catalog.constraints_file(src)
    if cons is not None:
        cmd += ["-c", str(cons)]
    for d in wanted:
        p = paths[d]
        cmd += (["-e"] if editable and p.is_dir() else []) + [str(p)]
    return cmd


def cmd_install(args: argparse.Namespace) -> int:
    import subprocess

    cmd = install_command(args.names, source=args.source, editable=args.editable, reinstall=args.reinstall)
    print("$ " + " ".join(cmd))
    if args.dry_run:
        return 0
    rc = subprocess.call(cmd)
    if rc != 0:
        raise CommandError(f"pip exited with status {rc}")
    return 0


# ---------------------------------------------------------------------- experiments
def _check_out_dir(out: Path) -> Path:
    """Create ``out`` and prove it writable before any work is done."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a directory", 2)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".gradkit-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CommandError(f"--out {out} is not writable: {exc.strerror or exc}", 1) from None
    return out


def run_experiment(kind: str, args: argparse.Namespace) -> int:
    import inspect

    import gradkit_core as gk

    spec = gk.info(args.name, kind=kind)
    fn = spec.load()
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    accepts_var = any(p.kind == p.VAR_KEYWORD for p in params.values())
    what = f"{kind[:-1]} {spec.name!r}"
    if args.full and not (accepts_var or "full" in params):
        raise CommandError(f"{what} has no --full mode", 2)
    for opt, value in (("jobs", args.jobs), ("resume", args.resume or None), ("executor", args.executor)):
        if value is not None and not (accepts_var or opt in params or (opt == "executor" and "jobs" in params)):
            raise CommandError(f"{what} does not take --{opt} (it runs in one process, from scratch)", 2)
    if args.address and args.executor != "ray":
        raise CommandError("--address names a Ray cluster: use it with --executor ray", 2)
    out_dir = _check_out_dir(Path(args.out) if args.out else Path("results") / spec.name)
    wanted: Dict[str, Any] = {"quick": args.quick, "full": args.full, "seed": args.seed,
                              "progress": not args.no_progress, "out": out_dir}
    kwargs = {k: v for k, v in wanted.items() if accepts_var or k in params}
    if args.jobs is not None:
        kwargs["jobs"] = args.jobs
    if args.resume:
        kwargs["resume"] = True
    from . import executors
    from .results import RunsFailed

    t0 = time.perf_counter()
    try:
        with executors.use(args.executor or "local", args.address):
            result = fn(**kwargs)
    except RunsFailed as exc:
        log = out_dir / "failures.txt"
        log.write_text(exc.tracebacks())
        raise CommandError(f"{exc} -- tracebacks in {log}", 1) from None
    elapsed = time.perf_counter() - t0
    from .results import Result

    if not isinstance(result, Result):
        raise CommandError(f"{spec.target_path} returned {type(result).__name__}, expected "
                           "gradkit_core.results.Result (a bug in the plugin)", 1)
    result.meta.setdefault("seconds", round(elapsed, 2))
    result.meta.setdefault("quick", args.quick)
    result.meta.setdefault("full", args.full)
    result.meta.setdefault("seed", args.seed)
    if args.executor:
        result.meta.setdefault("executor", args.executor)
    result.meta.setdefault("component", spec.qualified_name)
    result.meta.setdefault("command", "gradkit " + " ".join(sys.argv[1:]) if sys.argv else "")
    result.meta.setdefault("versions", _versions(spec))
    print(result.report())
    written = result.save(out_dir)
    print("\nwrote " + ", ".join(str(p) for p in written) + f"  ({elapsed:.1f} s)")
    if args.check and not result.all_passed:
        return 1
    return 0


def _versions(spec: Any) -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("gradkit-core", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    import gradkit_core as gk

    for rec in gk.plugins():
        if rec.name == spec.plugin and rec.distribution:
            out[rec.distribution] = rec.version
    return out


# ---------------------------------------------------------------------- doctor
def cmd_doctor(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from . import catalog
    from .registry import STRICT_ENV, Registry, strict_enabled

    problems = 0
    print(f"python        {sys.version.split()[0]} ({sys.executable})")
    for pkg in ("gradkit-core", "pluggy", "attrs", "torch", "gymnasium", "mujoco", "matplotlib"):
        try:
            v = version(pkg)
        except PackageNotFoundError:
            v = "not installed"
        print(f"{pkg.ljust(13)} {v}")
    strict = strict_enabled()
    print(f"strict mode   {'on' if strict else 'off'} ({STRICT_ENV}={os.environ.get(STRICT_ENV, '')!r})")
    try:
        path = catalog.catalog_path()
        entries = catalog.entries()
        print(f"catalog       {path or 'not found'}")
    except GradkitError as exc:
        problems += 1
        entries, path = [], None
        print(f"catalog       ! {exc}")
    # a fresh scan, never the cache: doctor is where a user looks when something is wrong
    reg = Registry(strict=False, use_cache=False)
    recs = reg.plugins()
    print(f"plugins       {len(recs)} discovered, {sum(len(r.components) for r in recs)} components")
    for r in recs:
        if r.status != "ok":
            problems += 1
            print(f"  ! {r.name} ({r.distribution} {r.version}): {r.status}: {r.error}")
        for w in r.warnings:
            problems += 1
            print(f"  ! {r.name} ({r.distribution} {r.version}): warning: {w}")
    if entries:
        installed = {r.name for r in recs}
        missing = [e.name for e in entries if e.name not in installed]
        if missing:
            print(f"  catalogued but not installed: {', '.join(missing)}  (gradkit install NAME)")
        for e in entries:
            if e.name not in installed:
                continue
            have = {(s.kind, s.name) for s in reg.list(plugin=e.name)}
            for kind, names in e.components.items():
                for n in names:
                    if (kind, n) not in have:
                        problems += 1
                        print(f"  ! {e.name}: catalogued {kind} {n!r} is not registered by the installed plugin")
    if strict and problems:
        print(f"{STRICT_ENV} is set: every problem above is an error")
    print("ok" if problems == 0 else f"{problems} problem(s)")
    return 0 if problems == 0 else 1
