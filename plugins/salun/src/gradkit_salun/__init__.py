"""gradkit plugin: SalUn (Fan et al., ICLR 2024).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image "
    "Classification and Generation",
    arxiv="2310.12508",
    year=2024,
)

_U = "gradkit_salun.unlearn"
_M = "gradkit_salun.metrics"


@hookimpl
def gradkit_register_unlearners(register):
    register("salun", f"{_U}:SalUn", paper=PAPER, tags=["classification", "saliency", "random-label"],
             summary="SalUn: random-label unlearning restricted to the top-ratio weight-saliency mask (hard)",
             defaults={"ratio": 0.5})
    register("salun-soft", f"{_U}:SalUnSoft", paper=PAPER, tags=["classification", "saliency", "proximal"],
             summary="SalUn-soft: random-label unlearning with proximal soft-thresholding of the weight change",
             defaults={"ratio": 0.5})
    register("salun-diffusion", "gradkit_salun.diffusion:SalUnDiffusion", paper=PAPER,
             tags=["generation", "diffusion", "saliency"],
             summary="SalUn for class-conditional DDPMs: map the forgotten class to another, saliency-masked",
             defaults={"ratio": 0.5})
    register("retrain", f"{_U}:Retrain", paper=PAPER, tags=["classification", "baseline", "exact"],
             summary="Retrain from scratch on the retain set (the gold-standard unlearning baseline)")
    register("fine-tune", f"{_U}:FineTune", paper=PAPER, tags=["classification", "baseline"],
             summary="Fine-tune (FT) on the retain set only")
    register("gradient-ascent", f"{_U}:GradientAscent", paper=PAPER, tags=["classification", "baseline"],
             summary="Gradient ascent (GA) on the forget set's cross-entropy")
    register("random-label", f"{_U}:RandomLabel", paper=PAPER, tags=["classification", "baseline"],
             summary="Random labeling (RL): forget set with random wrong labels + retain set, all weights")
    register("l1-sparse", f"{_U}:L1Sparse", paper=PAPER, tags=["classification", "baseline", "sparsity"],
             summary="l1-sparse unlearning: fine-tune on retain with a linearly decaying l1 penalty")


@hookimpl
def gradkit_register_metrics(register):
    register("unlearning-ua", f"{_M}:unlearning_accuracy", paper=PAPER, tags=["unlearning"],
             summary="UA = 1 - accuracy on the forget set (closer to Retrain is better)")
    register("unlearning-ra", f"{_M}:retain_accuracy", paper=PAPER, tags=["unlearning"],
             summary="RA = accuracy on the retain set (higher is better)")
    register("unlearning-ta", f"{_M}:test_accuracy", paper=PAPER, tags=["unlearning"],
             summary="TA = accuracy on the test set (higher is better)")
    register("mia-efficacy", f"{_M}:mia_efficacy", paper=PAPER, tags=["unlearning", "privacy"],
             summary="MIA-Efficacy: share of the forget set an SVC (retain vs test confidence) calls non-member")
    register("unlearning-rte", f"{_M}:run_time", paper=PAPER, tags=["unlearning", "cost"],
             summary="RTE: wall-clock seconds of an unlearning run (lower is better)")
    register("unlearning-avg-gap", f"{_M}:avg_gap", paper=PAPER, tags=["unlearning"],
             summary="Avg.Gap: mean |metric - Retrain's metric| over UA, RA, TA, MIA (lower is better)")
    register("unlearning-metrics", f"{_M}:unlearning_metrics", paper=PAPER, tags=["unlearning"],
             summary="All of UA, RA, TA and MIA-Efficacy for one model, as a dict")


@hookimpl
def gradkit_register_reproductions(register):
    register("salun", "gradkit_salun.reproduce:run", paper=PAPER,
             summary="SalUn vs Retrain/FT/GA/RL/l1-sparse on digits: random 10% and class-wise forgetting, seeds")
    register("salun-diffusion", "gradkit_salun.reproduce_diffusion:run", paper=PAPER,
             summary="SalUn vs RL vs GA forgetting digit 0 in a tiny class-conditional DDPM (UA, retain accuracy, MMD)")


@hookimpl
def gradkit_register_benchmarks(register):
    register("salun", "gradkit_salun.bench:run", paper=PAPER,
             summary="Run time of SalUn (mask + unlearning) and the baselines relative to retraining")
