"""Listing never imports torch (or any component code), with every plugin installed."""

import subprocess
import sys
import textwrap


def run_py(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_python_api_listing_imports_no_torch():
    out = run_py(
        """
        import sys
        import gradkit_core as gk
        specs = gk.list()
        assert len(specs) > 0
        gk.plugins(); gk.kinds(); gk.info("lion", kind="optimizers"); gk.list(kind="optimizers", pattern="l*")
        heavy = sorted(m for m in ("torch", "numpy", "gymnasium", "mujoco", "sklearn", "scipy") if m in sys.modules)
        assert not heavy, heavy
        print(len(specs))
        """
    )
    assert out.returncode == 0, out.stderr


def test_cli_list_plugins_and_available_import_no_torch():
    out = run_py(
        """
        import sys, io, contextlib
        from gradkit_core import cli
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            for argv in (["list"], ["list", "--json"], ["list", "--available"], ["plugins"], ["plugins", "--json"],
                         ["info", "lion", "--kind", "optimizers"], ["--help"] if False else ["list", "--kind", "envs"]):
                assert cli.main(argv) == 0, argv
        heavy = sorted(m for m in ("torch", "numpy", "gymnasium", "mujoco") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    assert out.returncode == 0, out.stderr


def test_every_installed_plugin_entry_module_is_light():
    out = run_py(
        """
        import sys, importlib
        from importlib.metadata import entry_points
        for ep in entry_points(group="gradkit"):
            importlib.import_module(ep.value.split(":")[0])
            heavy = [m for m in ("torch", "numpy", "gymnasium", "mujoco", "sklearn") if m in sys.modules]
            assert not heavy, (ep.name, heavy)
        """
    )
    assert out.returncode == 0, out.stderr
