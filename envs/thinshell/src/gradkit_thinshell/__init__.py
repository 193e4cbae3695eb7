"""gradkit-thinshell: differentiable thin-shell simulator and manipulation tasks (ThinShellLab, ICLR 2024).

Light module: registers components with string targets; nothing heavy is imported here.
The gymnasium ids are registered by ``import gradkit_thinshell.envs`` (or at import of this package when
gymnasium is already loaded); ``gymnasium.make("gradkit_thinshell.envs:gradkit/ThinShellSeparate-v0")``
works from a fresh process.
"""

import sys

from gradkit_core import hookimpl
from gradkit_core.spec import NAME_RE

from .registration import ENV_IDS, register_envs

PLUGIN_API_VERSION = 1

if "gymnasium" in sys.modules:  # register the ids now when gymnasium is already loaded (cheap, no torch)
    register_envs()

PAPER = dict(title="Thin-Shell Object Manipulations With Differentiable Physics Simulations", arxiv="2404.00451",
             year=2024)

ENVS = {
    "gradkit/ThinShellSeparate-v0": ("ThinShellSeparateEnv", "drag the top of two stacked sheets off the bottom one"),
    "gradkit/ThinShellLift-v0": ("ThinShellLiftEnv", "lift a block resting on a gripper-held sheet toward a target"),
    "gradkit/ThinShellFold-v0": ("ThinShellFoldEnv", "fold a sheet to target dihedral angles (plastic crease)"),
}


def env_name(env_id: str) -> str:
    """The gradkit component name of a gymnasium id (the id itself when the core accepts its capitals)."""
    return env_id if NAME_RE.match(env_id) else env_id.lower()


@hookimpl
def gradkit_register_simulators(register):
    register("thin-shell", "gradkit_thinshell.sim:ThinShellSim",
             summary="Differentiable thin-shell sim (PyTorch f64): membrane + plastic hinge bending, penalty contact, "
                     "lagged smoothed friction, Newton implicit Euler, implicit-differentiation gradients",
             paper=PAPER, tags=["differentiable-physics", "cloth", "thin-shell", "implicit-differentiation"],
             capabilities=["rollout", "grad-actions", "grad-initial-state", "grad-params"])


@hookimpl
def gradkit_register_envs(register):
    for env_id, (cls, summary) in ENVS.items():
        register(env_name(env_id), f"gradkit_thinshell.envs:{cls}", summary=summary + f" (gymnasium id {env_id})",
                 paper=PAPER, tags=["gymnasium", "thin-shell", env_id])


@hookimpl
def gradkit_register_solvers(register):
    register("thinshell-cmaes-grad", "gradkit_thinshell.trajopt:cmaes_then_grad",
             summary="ThinShellLab trajectory optimiser: CMA-ES over piecewise-constant gripper velocities, then Adam "
                     "through the differentiable simulator", paper=PAPER, tags=["trajectory-optimization", "cma-es"])


@hookimpl
def gradkit_register_reproductions(register):
    register("thinshell", "gradkit_thinshell.reproduce:run",
             summary="separate/lift: CMA-ES vs gradient vs CMA-ES->gradient at equal budgets; friction inverse design",
             paper=PAPER)


@hookimpl
def gradkit_register_benchmarks(register):
    register("thinshell", "gradkit_thinshell.bench:run",
             summary="forward step and forward+backward time vs mesh size; Newton iterations per step", paper=PAPER)
