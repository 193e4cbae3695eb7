"""Registration: the package entry point is light, and every component resolves to working code."""

import subprocess
import sys

import gradkit_core as gk


def test_entry_point_module_imports_no_torch_or_gymnasium():
    code = "import sys, gradkit_thinshell; print('torch' in sys.modules, 'gymnasium' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_components_resolve():
    from gradkit_thinshell import ENV_IDS, env_name
    from gradkit_thinshell.sim import ThinShellSim

    sim = gk.create("thin-shell", kind="simulators", n=3, Kb=3.0)
    assert isinstance(sim, ThinShellSim) and sim.n_vertices == 9
    assert float(sim.params[2]) == 3.0
    assert gk.info("thin-shell", kind="simulators").paper.arxiv == "2404.00451"
    for env_id, entry in ENV_IDS.items():
        spec = gk.info(env_name(env_id), kind="envs")
        assert spec.target == entry
    assert callable(gk.get("thinshell", kind="reproductions")) and callable(gk.get("thinshell", kind="benchmarks"))
    assert gk.get("thinshell-cmaes-grad", kind="solvers").__name__ == "cmaes_then_grad"
