"""The task ids and their gymnasium registration (string entry points: MuJoCo is imported on ``make``).

This module imports only ``gymnasium.envs.registration`` (gymnasium + numpy, no MuJoCo, no torch).
"""

from __future__ import annotations

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
