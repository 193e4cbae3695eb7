"""gradkit plugin: LoRA-GGPO (Chang, Guo, Chang & Wu, 2025) with LoRA / Flat-LoRA / LoRA-SAM baselines.

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="LoRA-GGPO: Mitigating Double Descent in LoRA Fine-Tuning via Gradient-Guided Perturbation Optimization",
    arxiv="2502.14538",
    year=2025,
)
FLAT = dict(title="Flat-LoRA: Low-Rank Adaptation over a Flat Loss Landscape", arxiv="2409.14396", year=2024)
SAM_PAPER = dict(title="Sharpness-Aware Minimization for Efficiently Improving Generalization", arxiv="2010.01412",
                 year=2021)


@hookimpl
def gradkit_register_trainers(register):
    common = dict(tags=["lora", "peft", "fine-tuning"])
    register("lora-ggpo", "gradkit_loraggpo.trainer:LoRAFineTuner", paper=PAPER, defaults={"method": "ggpo"},
             summary="LoRA fine-tuning with gradient-guided per-row weight noise "
                     "(sigma*||W'_i|| + beta*||G_i||^2)/sqrt(out), redrawn every step, off in eval", **common)
    register("lora", "gradkit_loraggpo.trainer:LoRAFineTuner", paper=PAPER, defaults={"method": "lora"},
             summary="Plain LoRA fine-tuning (baseline of LoRA-GGPO)", **common)
    register("flat-lora", "gradkit_loraggpo.trainer:LoRAFineTuner", paper=FLAT, defaults={"method": "flat"},
             summary="Flat-LoRA: per-row weight noise sigma_t*||W'_i||/sqrt(in), cosine-increasing sigma_t", **common)
    register("lora-mgpo", "gradkit_loraggpo.trainer:LoRAFineTuner", paper=PAPER, defaults={"method": "mgpo"},
             summary="LoRA-MGPO (v2 of the paper; reconstruction): momentum-guided perturbation, EMA-normalised",
             **common)
    register("lora-sam", "gradkit_loraggpo.trainer:LoRAFineTuner", paper=SAM_PAPER, defaults={"method": "sam"},
             summary="LoRA trained with SAM (two forward/backward passes per step)", **common)


@hookimpl
def gradkit_register_architectures(register):
    register("ggpo-lora-linear", "gradkit_loraggpo.lora:GGPOLoRALinear", paper=PAPER,
             summary="Frozen nn.Linear + rank-r LoRA + training-time weight perturbation (ggpo/flat/mgpo/none)",
             tags=["lora", "layer"])
    register("wrap-lora", "gradkit_loraggpo.lora:wrap_lora", paper=PAPER,
             summary="Replace a model's nn.Linear layers by GGPOLoRALinear (in place), freezing the base weights",
             tags=["lora", "wrapper"])


@hookimpl
def gradkit_register_optimizers(register):
    register("sam", "gradkit_loraggpo.sam:SAM", paper=SAM_PAPER,
             summary="Sharpness-Aware Minimization (closure, 2 passes) over AdamW or SGD: the LoRA-SAM baseline",
             tags=["sharpness", "closure"], defaults={"lr": 1e-3, "rho": 0.05})


@hookimpl
def gradkit_register_reproductions(register):
    register("loraggpo", "gradkit_loraggpo.reproduce:run", paper=PAPER,
             summary="LoRA-GGPO vs LoRA / Flat-LoRA / LoRA-SAM across ranks, noisy-label digits fine-tuning "
                     "(test accuracy curve, sharpness)")


@hookimpl
def gradkit_register_benchmarks(register):
    register("loraggpo", "gradkit_loraggpo.bench:run", paper=PAPER,
             summary="LoRA-GGPO step time vs plain LoRA, Flat-LoRA and peft LoRA (when installed)")
