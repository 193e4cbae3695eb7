"""gradkit env package: the quality-diversity locomotion tasks of DCG-MAP-Elites (QDax task set).

Importing this package registers the ``gradkit/*`` ids with gymnasium (string entry points, so
MuJoCo is imported only by ``gymnasium.make``) and, through the hooks below, with gradkit.
It imports neither gymnasium nor numpy (nor MuJoCo, nor torch): when gymnasium is not imported
yet, the ids are registered the moment it is (see :mod:`gradkit_locomotion.registration`).
"""

from gradkit_core import hookimpl

from .registration import TASKS, register_envs, register_when_gymnasium_loads

PLUGIN_API_VERSION = 1

__all__ = ["TASKS", "register_envs", "component_name"]

PAPER = dict(
    title="MAP-Elites with Descriptor-Conditioned Gradients and Archive Distillation into a Single Policy",
    arxiv="2303.03832",
    year=2023,
)

register_when_gymnasium_loads()


def component_name(env_id: str) -> str:
    """The gradkit component name of a gymnasium id: the id itself (``gradkit/AntOmni-v0``)."""
    return env_id


@hookimpl
def gradkit_register_envs(register):
    for env_id, task in TASKS.items():
        register(
            component_name(env_id),
            task.entry_point,
            summary=f"{env_id}: {task.summary}",
            paper=PAPER,
            tags=["quality-diversity", task.descriptor, "mujoco" if "Point" not in env_id else "numpy"],
        )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "locomotion",
        "gradkit_locomotion.bench:run",
        summary="step time of each QD task vs its raw gymnasium v5 env (wrapper overhead ratio)",
        paper=PAPER,
    )
