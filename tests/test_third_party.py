"""A third-party package, pip-installed from a temporary directory, registers a method like a first-party one."""

import os
import subprocess
import sys
import textwrap

PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "my-gradkit-sgd"
version = "1.2.3"
dependencies = []

[project.entry-points.gradkit]
my-sgd = "my_gradkit_sgd"
"""

MODULE = '''
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_optimizers(register):
    register("my-sgd", "my_gradkit_sgd.impl:MySGD", summary="plain SGD from a user package",
             defaults={"lr": 0.5})
'''

IMPL = '''
import torch

class MySGD(torch.optim.SGD):
    """SGD with a fixed default learning rate."""
'''


def test_pip_installed_third_party_plugin_lists_and_creates(tmp_path):
    src = tmp_path / "src"
    pkg = src / "my_gradkit_sgd"
    pkg.mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (pkg / "__init__.py").write_text(textwrap.dedent(MODULE))
    (pkg / "impl.py").write_text(textwrap.dedent(IMPL))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("GRADKIT_STRICT", None)
    code = textwrap.dedent(
        """
        import sys, torch, gradkit_core as gk
        names = {(s.kind, s.name, s.plugin) for s in gk.list()}
        assert ("optimizers", "my-sgd", "my-sgd") in names, names
        rec = {p.name: p for p in gk.plugins()}["my-sgd"]
        assert rec.status == "ok" and rec.version == "1.2.3", rec
        p = torch.nn.Parameter(torch.ones(3))
        opt = gk.create("my-sgd", [p])
        p.grad = torch.ones(3)
        opt.step()
        assert torch.allclose(p, torch.full((3,), 0.5)), p
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
    listing = subprocess.run([sys.executable, "-m", "gradkit_core", "list", "--kind", "optimizers"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert "my-sgd" in listing.stdout and "plain SGD from a user package" in listing.stdout
