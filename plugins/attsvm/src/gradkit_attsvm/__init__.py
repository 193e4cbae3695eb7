"""gradkit plugin: Transformers as Support Vector Machines (Tarzanagh, Li, Thrampoulidis, Oymak, 2023).

Registers components only; imports no torch and no cvxpy.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Transformers as Support Vector Machines", arxiv="2308.16898", year=2023)


@hookimpl
def gradkit_register_solvers(register):
    register("att-svm", "gradkit_attsvm.svm:AttSVM", paper=PAPER,
             tags=["convex", "cvxpy", "max-margin", "attention", "float64"],
             summary="Att-SVM: min ||W|| (Frobenius or nuclear) s.t. (x_it - x_i,alpha_i)^T W z_i <= -1, via cvxpy",
             defaults={"norm": "fro", "solver": "CLARABEL"})


@hookimpl
def gradkit_register_optimizers(register):
    register("normalized-gd", "gradkit_attsvm.optim:NormalizedGD", paper=PAPER,
             tags=["first-order", "normalized", "attention-svm"],
             summary="Normalized GD: p <- p - lr * g / (||g||_F + eps) per tensor (the paper's attention training rule)",
             defaults={"lr": 0.1})


@hookimpl
def gradkit_register_reproductions(register):
    register("attsvm", "gradkit_attsvm.reproduce:run", paper=PAPER,
             summary="GD on W / (K,Q) vs Frobenius / nuclear Att-SVM: correlation, softmax saturation, SVM rank vs d")


@hookimpl
def gradkit_register_benchmarks(register):
    register("attsvm", "gradkit_attsvm.bench:run", paper=PAPER,
             summary="Att-SVM solve time per cvxpy backend (Clarabel, SCS, OSQP) and vs 2000 normalized-GD steps, as ratios")
