"""gradkit plugin: identity-decoupled face anonymization (Cheng, Dai, Sun, 2026).  Registers components only;
imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Identity-Decoupled Anonymization for Visual Evidence in Multi-modal Retrieval-Augmented Generation",
             arxiv="2604.23584", year=2026)


@hookimpl
def gradkit_register_architectures(register):
    register("idanon-vae", "gradkit_idanon.vae:DisentangledFaceVAE",
             summary="disentangled face VAE: global identity code + spatial attribute code", paper=PAPER,
             tags=["privacy", "vae"], defaults={"id_dim": 16, "attr_channels": 4, "width": 32})
    register("idanon-diffusion", "gradkit_idanon.diffusion:ConditionalDiffusion",
             summary="conditional DDPM G(x | z_id, z_attr) (FiLM identity code, attribute-map channels), DDIM sampling",
             paper=PAPER, tags=["privacy", "diffusion"], defaults={"id_dim": 16, "attr_channels": 4, "width": 16, "T": 100})


@hookimpl
def gradkit_register_trainers(register):
    register("idanon", "gradkit_idanon.anonymizer:IdentityDecoupledAnonymizer",
             summary="VAE + CLUB/HSIC + gradient independence term, manifold rejection sampler, conditional diffusion generator, multi-oracle privacy hinge",
             paper=PAPER, tags=["privacy", "anonymization"])


@hookimpl
def gradkit_register_metrics(register):
    register("idanon-reid", "gradkit_idanon.metrics:reidentification_rate",
             summary="top-1 re-identification rate by an oracle against a gallery (lower is more private)",
             paper=PAPER, tags=["privacy"])
    register("idanon-kernel-distance", "gradkit_idanon.metrics:kernel_distance",
             summary="unbiased Gaussian-kernel MMD^2 between feature sets (realism; lower is better)",
             paper=PAPER, tags=["realism"])


@hookimpl
def gradkit_register_reproductions(register):
    register("idanon", "gradkit_idanon.reproduce:run",
             summary="anonymization vs blur/pixelation/mask/random swap, hinge and MI ablations, held-out oracle",
             paper=PAPER)
