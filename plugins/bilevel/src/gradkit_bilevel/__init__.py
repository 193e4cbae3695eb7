"""gradkit plugin: MAID, an adaptively inexact first-order method for bilevel optimisation
(Salehi, Mukherjee, Roberts, Ehrhardt, SIMODS; arXiv:2308.10098).

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="An adaptively inexact first-order method for bilevel optimization with application to "
                   "hyperparameter learning", arxiv="2308.10098", year=2023)


@hookimpl
def gradkit_register_solvers(register):
    register("maid", "gradkit_bilevel.maid:MAID", paper=PAPER,
             tags=["bilevel", "hyperparameter-learning", "inexact", "line-search", "float64"],
             summary="MAID: adaptive lower-level/CG accuracies and inexact backtracking from a-posteriori bounds",
             defaults={"eps": 0.1, "delta": 0.1, "eta": 1e-4, "rho": 0.9, "tau": 0.5, "nu": 1.05, "beta": 0.1,
                       "max_bt": 3, "budget": 1e6, "gtol": 1e-6, "eps_rtol": 1e-10})
    register("maid-fixed-eps", "gradkit_bilevel.maid:MAIDFixedEps", paper=PAPER,
             tags=["bilevel", "baseline", "line-search"],
             summary="MAID's inexact backtracking with fixed accuracies eps = delta (baseline)",
             defaults={"eps": 1e-3, "rho": 0.9, "beta": 0.1})
    register("hoag", "gradkit_bilevel.baselines:HOAG", paper=PAPER, tags=["bilevel", "baseline"],
             summary="HOAG (Pedregosa 2016): summable accuracies eps_k = eps0/k^1.1, fixed step (baseline)",
             defaults={"step": 1.0, "eps0": 0.1, "power": 1.1})
    register("hypergradient-descent", "gradkit_bilevel.baselines:HypergradientDescent", paper=PAPER,
             tags=["bilevel", "baseline"],
             summary="Fixed-accuracy (or exact, closed-form) hypergradient descent with a fixed step (baseline)",
             defaults={"step": 1.0, "eps": 1e-6})
    register("grid-search", "gradkit_bilevel.baselines:GridSearch", paper=PAPER, tags=["bilevel", "baseline"],
             summary="Grid search over a box of hyperparameters, lower level solved at every point (baseline)",
             defaults={"points": 10, "eps": 1e-4})


@hookimpl
def gradkit_register_reproductions(register):
    register("bilevel", "gradkit_bilevel.reproduce:run", paper=PAPER,
             summary="MAID vs HOAG / fixed-accuracy / grid search: upper loss vs lower-level + CG work "
                     "(quadratic, TV denoising)")


@hookimpl
def gradkit_register_benchmarks(register):
    register("bilevel", "gradkit_bilevel.bench:run", paper=PAPER,
             summary="Work (lower-level + CG products) and wall time to a target upper loss, as ratios to MAID")
