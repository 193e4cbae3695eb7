"""gradkit plugin: programmable variational inference (ADEV, PLDI 2024).  Registers components only."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Probabilistic Programming with Programmable Variational Inference", arxiv="2406.15742",
             year=2024)

_OBJECTIVES = {
    "elbo": "ELBO E_q[log p(x,z) - log q(z)] as a program; gradient estimators from the guide's primitives",
    "iwae": "IWAE(K): E[log mean_k p(x,z_k)/q(z_k)] as a program",
    "hvi": "hierarchical VI: ELBO with q(z) of an auxiliary program q(u,z) estimated by conditional SIR(1)",
    "iwhvi": "IWHVI(N, K): importance-weighted hierarchical VI (conditional SIR(N) density, outer IWAE(K))",
    "diwhvi": "doubly importance-weighted HVI (N inner, K >= 2 outer particles)",
    "q_wake": "reweighted wake-sleep guide update: sum_i w_i log q(z_i) over an SIR(N) population",
    "p_wake": "reweighted wake-sleep model update: sum_i w_i log p(x, z_i) over an SIR(N) population",
}


@hookimpl
def gradkit_register_estimators(register):
    register("adev", "gradkit_pvi.adev:Expectation",
             summary="E[program] with per-primitive estimators (reparam, REINFORCE +/- baseline, enumeration, "
                     "MVD, implicit reparam): .surrogate() backward = unbiased gradient",
             paper=PAPER, tags=["variational-inference", "probabilistic-programming"])
    for name, summary in _OBJECTIVES.items():
        register(name, f"gradkit_pvi.objectives:{name}", summary=summary, paper=PAPER,
                 tags=["variational-inference", "objective"])


@hookimpl
def gradkit_register_reproductions(register):
    register("pvi", "gradkit_pvi.reproduce:run",
             summary="Table 4 cone model: ELBO, IWAE(5), HVI, IWHVI(5,1), DIWHVI(5,5) vs the paper and Pyro; "
                     "discrete-latent estimators (REINFORCE with and without a learned baseline, MVD, enum, "
                     "the MVD+enum hybrid, IWAE+MVD, RWS) on a binary-latent VAE, each at its best learning rate",
             paper=PAPER)


@hookimpl
def gradkit_register_benchmarks(register):
    register("pvi", "gradkit_pvi.bench:run",
             summary="programmed vs hand-written ELBO gradient on an MLP VAE (batch 64-1024) and vs Pyro Trace_ELBO",
             paper=PAPER)
