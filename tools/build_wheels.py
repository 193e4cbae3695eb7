"""Build wheels of gradkit-core and first-party packages into a local wheelhouse.

    python tools/build_wheels.py [--out wheelhouse] [NAME ...]

Without names, every package in the catalog; with names, those plugins and their first-party
dependencies (from registry.toml's ``requires``).  gradkit-core is always included, and the
repository's ``tools/constraints.txt`` is copied beside the wheels.  Then, on any machine:

    python -m venv env
    env/bin/pip install -c wheelhouse/constraints.txt wheelhouse/gradkit_core-*.whl
    env/bin/gradkit install NAME --from wheelhouse

First-party packages come only from this folder; their third-party dependencies from your index.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME")
    ap.add_argument("--out", default=str(ROOT / "wheelhouse"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import os

    os.environ["GRADKIT_CATALOG"] = str(ROOT / "registry.toml")
    from gradkit_core import catalog

    try:
        entries = catalog.closure(args.names) if args.names else catalog.entries()
    except catalog.CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dirs = [ROOT] + [ROOT / e.directory for e in entries]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    try:
        import setuptools  # noqa: F401 - with it here, skip pip's isolated build environments

        cmd.append("--no-build-isolation")
    except ImportError:
        pass
    rc = subprocess.call(cmd + [str(d) for d in dirs])
    if rc != 0:
        print(f"error: pip wheel exited with status {rc}", file=sys.stderr)
        return rc
    shutil.copy(ROOT / "tools" / "constraints.txt", out / "constraints.txt")
    print(f"wrote {len(dirs)} wheels and constraints.txt to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
