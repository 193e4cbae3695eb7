"""gradkit plugin: Quark medical alignment (RFN + Tri-Factor).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Quark Medical Alignment: A Holistic Multi-Dimensional Alignment and Collaborative "
                   "Optimization Paradigm", arxiv="2602.11661", year=2026)

#: (name, factory, summary) of the multi-objective reward aggregators, all one interface
_REWARDS = [
    ("rfn", "rfn", "Reference-Frozen Normalization: per-objective z-score with statistics of the frozen "
                   "reference policy, clipped, equal weights (reconstruction rfn_trifactor_v0)"),
    ("tri-factor", "tri_factor", "RFN + Tri-Factor adaptive weights (weakness x risk x redundancy, EMA-smoothed; "
                                 "reconstruction rfn_trifactor_v0)"),
    ("raw-sum", "raw_sum", "baseline: plain sum of the raw objective rewards"),
    ("group-norm", "group_norm", "baseline: GRPO group normalization of the raw sum"),
    ("batch-zscore", "batch_zscore", "baseline: per-objective z-score over the current batch, equal weights"),
    ("popart", "popart", "baseline: PopArt-like running (EMA) per-objective mean/std normalization, equal weights"),
    ("fixed-weights", "fixed_weights", "baseline: fixed hand-set weights on the raw objective rewards"),
]


@hookimpl
def gradkit_register_rewards(register):
    for name, factory, summary in _REWARDS:
        register(name, f"gradkit_quark.rewards:{factory}", summary=summary, paper=PAPER,
                 tags=["multi-objective", "reward-normalization", "rlhf"])


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "quark",
        "gradkit_quark.reproduce:run",
        summary="multi-objective GRPO on a factorized categorical policy: rewards of mismatched scales, a "
                "redundant one and a rare safety penalty; RFN / Tri-Factor (+ violation-rate risk, hard safety "
                "gate) vs raw sum, group norm, batch z-score, PopArt, fixed weights, PCGrad",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "quark",
        "gradkit_quark.bench:run",
        summary="RFN / Tri-Factor vs trl 1.16 GRPOTrainer's multi-reward aggregation (reward_weights, "
                "normalize_then_sum) inside the same trainer: worst-objective and CPU-per-step ratios; parity of "
                "group-norm + fixed weights with trl's advantages",
        paper=PAPER,
    )
