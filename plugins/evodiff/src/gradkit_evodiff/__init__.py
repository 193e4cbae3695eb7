"""gradkit plugin: EVODiff (Li, Chen, Zeng, NeurIPS 2025).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="EVODiff: Entropy-aware Variance Optimized Diffusion Inference", arxiv="2509.26096", year=2025)

_COMMON = dict(prediction="noise", skip_type="logSNR", denoise_to_zero=True)


@hookimpl
def gradkit_register_samplers(register):
    register("evodiff", "gradkit_evodiff.samplers:EVODiff",
             summary="EVODiff: 2nd-order multistep data-prediction ODE solver with variance-optimised "
                     "balance/interpolation/corrector coefficients (1 NFE per step)",
             paper=PAPER, tags=["diffusion", "ode-solver", "training-free"],
             defaults=dict(_COMMON, temperature=0.25, r_clip=(0.25, 1.5), shift_mu=0.5, proj_clip=2.0,
                           consistency_above=None, zeta_floor="auto"))
    register("ddim", "gradkit_evodiff.samplers:DDIM", summary="DDIM (= first-order DPM-Solver++), baseline",
             paper=PAPER, tags=["diffusion", "baseline"], defaults=dict(_COMMON))
    register("dpmpp-2m", "gradkit_evodiff.samplers:DPMSolverPP2M",
             summary="multistep DPM-Solver++(2M), data prediction, baseline", paper=PAPER,
             tags=["diffusion", "baseline"], defaults=dict(_COMMON, lower_order_final=True))
    register("dpmpp-3m", "gradkit_evodiff.samplers:DPMSolverPP3M",
             summary="multistep DPM-Solver++(3M), data prediction, baseline", paper=PAPER,
             tags=["diffusion", "baseline"], defaults=dict(_COMMON, lower_order_final=True))
    register("edm-heun", "gradkit_evodiff.samplers:EDMHeun",
             summary="EDM deterministic Heun sampler (NFE = 2N - 1), baseline", paper=PAPER,
             tags=["diffusion", "baseline"], defaults=dict(prediction="noise", skip_type="edm"))


@hookimpl
def gradkit_register_reproductions(register):
    register("evodiff", "gradkit_evodiff.reproduce:run",
             summary="EVODiff vs DDIM / DPM-Solver++(2M,3M) / EDM-Heun at NFE 4-20 on a 2-D Gaussian mixture "
                     "(exact denoiser and a trained EDM MLP): reconstruction error and sliced W2",
             paper=PAPER)


@hookimpl
def gradkit_register_benchmarks(register):
    register("evodiff", "gradkit_evodiff.bench:run",
             summary="EVODiff per-step overhead vs DDIM / DPM-Solver++ at equal NFE (cheap and costly models)",
             paper=PAPER)
