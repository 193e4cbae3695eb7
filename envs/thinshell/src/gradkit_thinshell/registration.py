"""Gymnasium ids of the thin-shell tasks (string entry points; imports gymnasium only, never torch)."""

ENV_IDS = {
    "gradkit/ThinShellSeparate-v0": "gradkit_thinshell.envs:ThinShellSeparateEnv",
    "gradkit/ThinShellLift-v0": "gradkit_thinshell.envs:ThinShellLiftEnv",
    "gradkit/ThinShellFold-v0": "gradkit_thinshell.envs:ThinShellFoldEnv",
}


def register_envs() -> None:
    """Register every id with gymnasium (idempotent)."""
    from gymnasium.envs.registration import register, registry

    for env_id, entry in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry)
