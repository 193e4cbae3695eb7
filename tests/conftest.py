import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def write_fake_dist(root: Path, dist: str, module: str, source: str, ep_name: str, version: str = "0.1.0") -> None:
    """An installed-looking distribution: ``module.py`` plus ``dist-version.dist-info`` with a gradkit entry point."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[gradkit]\n{ep_name} = {module}\n")


class CLI:
    def __init__(self, pythonpath: Path):
        self.pythonpath = pythonpath

    def env(self, env=None):
        e = dict(os.environ)
        e["PYTHONPATH"] = str(self.pythonpath) + os.pathsep + e.get("PYTHONPATH", "")
        e["GRADKIT_CACHE_DIR"] = str(self.pythonpath.parent / "gradkit-cache")
        for k in ("GRADKIT_STRICT", "GRADKIT_CATALOG", "GRADKIT_SOURCE", "GRADKIT_NO_CACHE"):
            e.pop(k, None)
        e.update(env or {})
        return e

    def python(self, code, env=None):
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              env=self.env(env), timeout=120)

    def run(self, *args, env=None, check=True):
        proc = subprocess.run([sys.executable, "-m", "gradkit_core", *args], capture_output=True, text=True,
                              env=self.env(env), timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"gradkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args):
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def fake_site(tmp_path):
    return tmp_path / "site"


@pytest.fixture
def cli(fake_site):
    fake_site.mkdir(parents=True, exist_ok=True)
    return CLI(fake_site)


@pytest.fixture
def fake_dist(fake_site):
    """``fake_dist(dist, module, source, ep_name)`` writes a fake installed plugin into the CLI's path."""
    return lambda *a, **k: write_fake_dist(fake_site, *a, **k)
