"""The kinds of component and their hook names (no imports: read on every `gradkit list`)."""

#: every kind, in display order, mapped to its hook name
KIND_HOOKS = {
    "explainers": "gradkit_register_explainers",
    "optimizers": "gradkit_register_optimizers",
    "transforms": "gradkit_register_transforms",
    "text_optimizers": "gradkit_register_text_optimizers",
    "unlearners": "gradkit_register_unlearners",
    "agents": "gradkit_register_agents",
    "simulators": "gradkit_register_simulators",
    "envs": "gradkit_register_envs",
    "samplers": "gradkit_register_samplers",
    "estimators": "gradkit_register_estimators",
    "architectures": "gradkit_register_architectures",
    "trainers": "gradkit_register_trainers",
    "rewards": "gradkit_register_rewards",
    "solvers": "gradkit_register_solvers",
    "benchmarks": "gradkit_register_benchmarks",
    "reproductions": "gradkit_register_reproductions",
    "metrics": "gradkit_register_metrics",
}

#: kinds that hold runnable experiments rather than methods; a bare name that also
#: names a method resolves to the method
EXPERIMENT_KINDS = frozenset({"benchmarks", "reproductions"})
