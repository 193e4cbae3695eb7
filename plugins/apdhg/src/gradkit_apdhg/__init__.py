"""gradkit plugin: adaptive PDHG based on the average spectrum (Xu & He, 2026).

Registers components only; imports nothing heavy.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Adaptive primal dual hybrid gradient algorithms based on average spectrum for saddle point problems",
             arxiv="2603.00644", year=2026)

_SOLVE = "create(name, **options).solve(problem, x0=None, y0=None, max_iter=..., tol=..., f_star=None)"


@hookimpl
def gradkit_register_solvers(register):
    register("apdhg", "gradkit_apdhg.solvers:AdaptivePDHG", paper=PAPER,
             tags=["saddle-point", "linear-programming", "prediction-correction", "float64", "reconstruction"],
             summary="Adaptive PC-PDHG: step test along the displacement (average spectrum) + He-Yuan correction "
                     "(M, alpha, (r,s) rule reconstructed, not verified against the paper); " + _SOLVE,
             defaults={"r0": 1.0, "s0": 1.0, "nu": 0.9, "gamma": 1.0, "grow": 1.5, "shrink": 0.7, "loose": 0.3})
    register("chambolle-pock", "gradkit_apdhg.solvers:ChambollePock", paper=PAPER,
             tags=["saddle-point", "baseline", "float64"],
             summary="Chambolle-Pock primal-dual (theta=1, tau*sigma*||A||^2 < 1) baseline",
             defaults={"theta": 1.0})
    register("pdhg", "gradkit_apdhg.solvers:PlainPDHG", paper=PAPER,
             tags=["saddle-point", "baseline", "float64"],
             summary="Plain PDHG / Arrow-Hurwicz with fixed steps, no correction (can stall or diverge) baseline",
             defaults={"r": 1.0, "s": 1.0})
    register("pc-pdhg", "gradkit_apdhg.solvers:FixedPCPDHG", paper=PAPER,
             tags=["saddle-point", "baseline", "prediction-correction", "float64"],
             summary="He-Yuan prediction-correction PDHG with fixed max-spectrum steps (r*s >= ||A||^2/nu) baseline",
             defaults={"nu": 0.9, "gamma": 1.0})


@hookimpl
def gradkit_register_reproductions(register):
    register("apdhg", "gradkit_apdhg.reproduce:run", paper=PAPER,
             summary="Assignment LP: iterations/work to relative KKT 1e-4/1e-6, adaptive PC-PDHG vs Chambolle-Pock, "
                     "fixed PC-PDHG, plain PDHG; rounding accuracy vs the Hungarian solution")


@hookimpl
def gradkit_register_benchmarks(register):
    register("apdhg", "gradkit_apdhg.bench:run", paper=PAPER,
             summary="Time to relative KKT 1e-4 on the assignment LP: adaptive PC-PDHG vs Chambolle-Pock, "
                     "scipy HiGHS and linear_sum_assignment, as ratios")
