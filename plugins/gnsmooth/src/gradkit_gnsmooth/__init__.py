"""gradkit plugin: Gradient-Normalized Smoothness (Semenov, Jaggi, Doikov, 2025).

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
             arxiv="2506.13710", year=2025)


@hookimpl
def gradkit_register_optimizers(register):
    register("gn-smooth", "gradkit_gnsmooth.gns:GradNormSmooth", paper=PAPER,
             tags=["second-order", "full-batch", "requires-closure", "float64"],
             summary="Gradient-regularized Newton with adaptive gamma (Algorithm 1); step(closure) required",
             defaults={"lr": 1.0, "gamma0": 1.0, "gamma_min": 1e-9, "max_search": 40})


@hookimpl
def gradkit_register_solvers(register):
    register("gn-smooth-solver", "gradkit_gnsmooth.gns:GradNormSmoothSolver", paper=PAPER,
             tags=["second-order", "approximate-hessian", "float64"],
             summary="Algorithm 1 on a float64 problem: exact, zero or approximate (callable / rank-one) Hessians",
             defaults={"gamma0": 1.0, "gamma_min": 1e-9, "max_search": 40})
    register("super-universal-newton", "gradkit_gnsmooth.baselines:SuperUniversalNewton", paper=PAPER,
             tags=["second-order", "baseline"],
             summary="Super-universal Newton: lambda = H_k ||g||^alpha with an adaptive H_k (baseline)")
    register("adaptive-gradient", "gradkit_gnsmooth.baselines:AdaptiveGradient", paper=PAPER,
             tags=["first-order", "baseline"], summary="Gradient method with adaptive Lipschitz estimate (baseline)")
    register("adaptive-fast-gradient", "gradkit_gnsmooth.baselines:AdaptiveFastGradient", paper=PAPER,
             tags=["first-order", "accelerated", "baseline"],
             summary="Nesterov's fast gradient method with adaptive Lipschitz estimate (baseline)")


@hookimpl
def gradkit_register_reproductions(register):
    register("gnsmooth", "gradkit_gnsmooth.reproduce:run", paper=PAPER,
             summary="GNS with approximate vs exact Hessians vs gradient methods: log-sum-exp, logistic, softmax")


@hookimpl
def gradkit_register_benchmarks(register):
    register("gnsmooth", "gradkit_gnsmooth.bench:run", paper=PAPER,
             summary="Time to a target accuracy: GNS (approx/exact) vs scipy Newton-CG and L-BFGS-B, as ratios")
