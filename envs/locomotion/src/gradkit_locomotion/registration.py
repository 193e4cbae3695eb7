"""The task ids and their gymnasium registration (string entry points: MuJoCo is imported on ``make``).

Importing this module imports nothing but the standard library.  gymnasium itself costs about
100 ms at start-up (it imports numpy; 0.1-0.6 s measured here vs 0.06 s for all of gradkit_core),
which every ``gradkit list`` would pay, so :func:`register_when_gymnasium_loads` registers the ids
the moment gymnasium's registry module is imported (or at once when it already is).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Dict, NamedTuple, Optional


class TaskInfo(NamedTuple):
    entry_point: str
    summary: str
    descriptor: str
    vector_entry_point: Optional[str] = None


_T = "gradkit_locomotion.tasks:"
#: gymnasium id -> what it is (the single source of truth for both registries)
TASKS: Dict[str, TaskInfo] = {
    "gradkit/PointOmni-v0": TaskInfo(
        "gradkit_locomotion.point:PointOmniEnv",
        "2-D point mass (numpy), reward 1 - 0.5|a|^2, descriptor final x-y in [-1, 1]^2, T = 50 (CI omni task)",
        "final_xy",
        "gradkit_locomotion.point:PointOmniVectorEnv",
    ),
    "gradkit/AntOmni-v0": TaskInfo(
        _T + "AntOmni",
        "ant_omni: Ant-v5, reward survive+ctrl+contact+3.03 clipped >= 0, descriptor final x-y in [-30, 30]^2, T = 250",
        "final_xy",
    ),
    "gradkit/AntTrapOmni-v0": TaskInfo(
        _T + "AntTrapOmni",
        "anttrap_omni: ant_omni with a U-shaped trap of three walls in front of the start",
        "final_xy",
    ),
    "gradkit/HalfCheetahUni-v0": TaskInfo(
        _T + "HalfCheetahUni",
        "halfcheetah_uni: HalfCheetah-v5, reward clipped >= 0, descriptor 2 feet-contact fractions, T = 1000",
        "feet_contact",
    ),
    "gradkit/Walker2dUni-v0": TaskInfo(
        _T + "Walker2dUni",
        "walker2d_uni: Walker2d-v5, reward clipped >= 0, descriptor 2 feet-contact fractions, T = 1000",
        "feet_contact",
    ),
    "gradkit/HopperUni-v0": TaskInfo(
        _T + "HopperUni",
        "hopper_uni: Hopper-v5, reward clipped >= 0, descriptor foot-contact fraction, T = 1000",
        "feet_contact",
    ),
    "gradkit/AntUni-v0": TaskInfo(
        _T + "AntUni",
        "ant_uni: Ant-v5, reward clipped >= 0, descriptor 4 feet-contact fractions, T = 1000",
        "feet_contact",
    ),
}


def register_envs() -> None:
    """Register every task id with gymnasium (idempotent)."""
    from gymnasium.envs.registration import register, registry

    for env_id, task in TASKS.items():
        if env_id in registry:
            continue
        register(id=env_id, entry_point=task.entry_point, vector_entry_point=task.vector_entry_point)


_GYM_REGISTRY = "gymnasium.envs.registration"


class _RegisteringLoader:
    """Runs the real loader of gymnasium's registry module, then registers the gradkit ids."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register_envs()

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


class _GymnasiumImportHook:
    """One-shot ``sys.meta_path`` finder for ``gymnasium.envs.registration``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _GYM_REGISTRY:
            return None
        _remove_hook()
        spec = importlib.util.find_spec(fullname)  # the real spec, from the remaining finders
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _GymnasiumImportHook)]


def register_when_gymnasium_loads() -> None:
    """Register the ids with gymnasium now if it is imported, else as soon as it is."""
    if _GYM_REGISTRY in sys.modules:
        register_envs()
    elif not any(isinstance(f, _GymnasiumImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _GymnasiumImportHook())
