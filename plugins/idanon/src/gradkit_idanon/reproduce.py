"""Reproduction on synthetic faces: identity-decoupled anonymization vs blur, pixelation, masking and a
random identity swap without the rejection sampler, with ablations without the hinge and without the
MI term, over seeds.

Protocol (every run, per seed):

* faces: ``n_ids`` identities x ``per_id`` images (:mod:`.faces`). Identities are split 50 / 20 / 30 %:
  *train* (oracles, attribute regressor and anonymizer are trained on them), *threshold* (tau_m at
  FAR ``far`` on impostor pairs), *eval* (unseen identities: for each, the first image is the
  gallery, the others are anonymized probes; chance re-ID = 1 / n_eval_ids).
* oracles: three CosFace embedders (widths 8/16/24, own seeds) in the hinge ensemble; a fourth
  (width 12, another seed) is **held out**: never used in training, only to evaluate.
* metrics per method: re-ID by the ensemble (max over the three oracles' top-1 rates) and by the
  held-out oracle; share of probes below every threshold; attribute MAE of a CNN regressor
  (trained on original train images) against the true labels, averaged over the continuous
  attributes (in units of each attribute's range); realism = kernel distance (MMD^2) between the
  held-out oracle's features of the outputs and of real eval faces.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_core.results import Result, run_many

from .anonymizer import IdentityDecoupledAnonymizer
from .faces import ATTRIBUTES, make_faces
from .metrics import kernel_distance, reidentification_rate
from .oracles import FaceEmbedder, OracleEnsemble, far_threshold, train_oracle
from .vae import DisentangledFaceVAE

CONFIGS = {
    "quick": dict(n_ids=100, per_id=12, far=1e-3, oracle_epochs=10, vae_epochs=12, hinge_steps=120, diff_steps=1500,
                  seeds=2),
    "default": dict(n_ids=200, per_id=16, far=1e-3, oracle_epochs=10, vae_epochs=15, hinge_steps=200, diff_steps=3000,
                    seeds=3),
    "full": dict(n_ids=300, per_id=20, far=1e-3, oracle_epochs=12, vae_epochs=20, hinge_steps=300, diff_steps=5000,
                 seeds=3),
}
ORACLE_WIDTHS = (8, 16, 24)
HELDOUT_WIDTH = 12
CONTINUOUS = [i for i, a in enumerate(ATTRIBUTES) if a != "glasses"]
#: anonymizer settings of the reproduction (hand-set, not tuned on a grid)
ANON_KW = dict(lam_mi=100.0, beta_attr=0.05)
METHODS = ["original", "blur2", "blur4", "pixelate", "mask", "swap-no-sampler", "ours-vae-decoder", "ours-no-hinge",
           "ours-no-mi", "ours"]


def _regressor(x, y, seed, epochs=30):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(32 * 64, 128), nn.ReLU(), nn.Linear(128, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 16):
            b = perm[i:i + 16]
            loss = F.mse_loss(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _blur(x, sigma):
    from scipy.ndimage import gaussian_filter

    return torch.as_tensor(gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma)))


def _pixelate(x, block=8):
    return F.interpolate(F.avg_pool2d(x, block), scale_factor=block, mode="nearest")


def _mask(x):
    y = x.clone()
    y[:, :, 6:28, 6:26] = 0.0
    return y


def run_one(*, seed: int, setting: str) -> Dict[str, Any]:
    cfg = CONFIGS[setting]
    cpu0 = time.process_time()
    torch.manual_seed(seed)
    data = make_faces(cfg["n_ids"], cfg["per_id"], seed=seed)
    x, ids = torch.as_tensor(data.images), torch.as_tensor(data.ids)
    attrs = torch.as_tensor(data.attributes)
    n = cfg["n_ids"]
    tr, th = ids < int(0.5 * n), (ids >= int(0.5 * n)) & (ids < int(0.7 * n))
    ev = ids >= int(0.7 * n)
    oracles = [train_oracle(x[tr], ids[tr], width=w, epochs=cfg["oracle_epochs"], seed=seed * 100 + k)
               for k, w in enumerate(ORACLE_WIDTHS)]
    heldout = train_oracle(x[tr], ids[tr], width=HELDOUT_WIDTH, epochs=cfg["oracle_epochs"], seed=seed * 100 + 99)
    taus = [far_threshold(o, x[th], ids[th], cfg["far"]) for o in oracles]
    tau_h = far_threshold(heldout, x[th], ids[th], cfg["far"])
    ens = OracleEnsemble(oracles, taus)
    lo, hi = attrs[tr].min(0).values, attrs[tr].max(0).values
    norm = lambda a: (a - lo) / (hi - lo)  # noqa: E731
    reg = _regressor(x[tr], norm(attrs[tr]), seed)
    # eval split: gallery = first image of each eval identity, probes = the rest
    xe, ie, ae = x[ev], ids[ev], attrs[ev]
    first = torch.ones(len(ie), dtype=torch.bool)
    first[1:] = ie[1:] != ie[:-1]
    gal, gid, pr, pid, pa = xe[first], ie[first], xe[~first], ie[~first], ae[~first]
    train_x = x[tr | th]

    def make(lam_mi, generator="diffusion"):
        torch.manual_seed(seed)
        model = DisentangledFaceVAE()
        kw = {**ANON_KW, "lam_mi": ANON_KW["lam_mi"] if lam_mi else 0.0}
        return IdentityDecoupledAnonymizer(model, oracles=ens, **kw, epochs=cfg["vae_epochs"], generator=generator,
                                           hinge_steps=cfg["hinge_steps"], diff_steps=cfg["diff_steps"], seed=seed)

    outs = {"original": pr, "blur2": _blur(pr, 2), "blur4": _blur(pr, 4), "pixelate": _pixelate(pr), "mask": _mask(pr)}
    train_ids = ids[tr | th]
    full = make(True).fit(train_x, train_ids)
    outs["ours-no-hinge"] = full.anonymize(pr, generator=seed, hinge=False)
    outs["ours"] = full.anonymize(pr, generator=seed)
    outs["swap-no-sampler"] = full.anonymize(pr, generator=seed, use_sampler=False)
    with torch.no_grad():
        (zi, _), (za, _) = full.model.encode(pr)
    recon_full = full.diffusion.sample(zi, za, steps=full.sample_steps, generator=seed)
    # the VAE decoder as generator (named option), on the same trained VAE, hinge fine-tuned
    dec = copy.deepcopy(full)
    dec.generator, dec.diffusion = "vae-decoder", None
    dec._hinge_finetune(train_x, torch.Generator().manual_seed(seed + 1))
    outs["ours-vae-decoder"] = dec.anonymize(pr, generator=seed)
    nomi = make(False).fit(train_x, train_ids)
    outs["ours-no-mi"] = nomi.anonymize(pr, generator=seed)

    with torch.no_grad():
        real_feat = heldout(pr)
        rows = {}
        for name, xa in outs.items():
            xa = xa.clamp(0, 1)
            sim = ens.similarity(xa, pr)
            pred = reg(xa)
            rows[name] = dict(
                reid_ensemble=max(reidentification_rate(o, xa, pid, gal, gid) for o in oracles),
                reid_heldout=reidentification_rate(heldout, xa, pid, gal, gid),
                below_tau=float((sim < ens.thresholds[:, None]).all(0).float().mean()),
                above_hinge=float(full.above_threshold(xa, pr).float().mean()),
                heldout_below_tau=float(((heldout(xa) * real_feat).sum(1) < tau_h).float().mean()),
                attr_mae=float((pred - norm(pa)).abs()[:, CONTINUOUS].mean()),
                realism_mmd=kernel_distance(heldout(xa), heldout(gal)),
            )
        rows["ours"]["recon_attr_mae"] = float((reg(recon_full) - norm(pa)).abs()[:, CONTINUOUS].mean())
    return {"rows": rows, "chance": 1.0 / len(gid), "taus": taus, "tau_heldout": tau_h,
            "sampler_tries": full.sampler.last_tries,
            "diffusion_loss": float(np.mean(full.diffusion.history[-100:])), "cpu_s": time.process_time() - cpu0}


def _ms(v):
    m = statistics.mean(v)
    se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else float("inf")
    return m, se


def run(*, quick: bool = False, full: bool = False, seed: int = 0, out=None, progress: bool = True, jobs: int = 1,
        resume: bool = False) -> Result:
    if quick and full:
        raise ValueError("choose at most one of quick and full")
    setting = "quick" if quick else "full" if full else "default"
    cfg = CONFIGS[setting]
    seeds = [seed + k for k in range(cfg["seeds"])]
    runs = run_many(run_one, [dict(seed=s, setting=setting) for s in seeds], jobs=jobs,
                    cache_dir=(out / "runs") if out is not None else None, resume=resume, progress_bar=progress,
                    desc="idanon")
    res = Result("idanon", title=f"Identity-decoupled anonymization on synthetic faces ({setting}, seeds {seeds})")
    chance = runs[0]["chance"]
    keys = ["reid_ensemble", "reid_heldout", "below_tau", "above_hinge", "heldout_below_tau", "attr_mae", "realism_mmd"]
    stat = {}
    for mth in METHODS:
        row = {"method": mth}
        for k in keys:
            v = [r["rows"][mth][k] for r in runs]
            stat[(mth, k)] = v
            m, se = _ms(v)
            row[k] = round(m, 4)
            row[k + "_se"] = round(se, 4)
        res.add_row(**row)
    rec = _ms([r["rows"]["ours"]["recon_attr_mae"] for r in runs])[0]
    K = 2.0

    def diff(a, b, k):  # mean(a - b), se of the paired difference
        d = [x - y for x, y in zip(stat[(a, k)], stat[(b, k)])]
        return _ms(d)

    m, se = _ms(stat[("ours", "reid_ensemble")])
    res.add_claim("ours: ensemble re-ID within 2 SE + 0.05 of chance", m <= chance + 0.05 + K * se,
                  f"re-ID {m:.3f} ± {se:.3f}, chance {chance:.3f}")
    m, se = _ms(stat[("ours", "reid_heldout")])
    res.add_claim("ours: held-out-oracle re-ID within 2 SE + 0.05 of chance", m <= chance + 0.05 + K * se,
                  f"re-ID {m:.3f} ± {se:.3f}, chance {chance:.3f}")
    for base in ("blur2", "pixelate"):
        d, se = diff(base, "ours", "reid_heldout")
        res.add_claim(f"held-out re-ID: {base} leaves more identity than ours (diff > 2 SE)", d > K * se and d > 0,
                      f"diff {d:.3f} ± {se:.3f}")
    for base in ("blur4", "pixelate", "mask", "ours-vae-decoder"):
        d, se = diff(base, "ours", "attr_mae")
        res.add_claim(f"attributes: ours preserves them better than {base} (MAE diff > 2 SE)", d > K * se and d > 0,
                      f"MAE diff {d:.3f} ± {se:.3f}")
    # the guidance drives each sample's similarity below the hinge threshold, so the share above it falling is the
    # mechanism working (a check of it), not a claim; the claim is the held-out oracle's re-ID below
    d, se = diff("ours-no-hinge", "ours", "above_hinge")
    res.add_note(f"hinge mechanism: share of samples above the hinge threshold without the hinge "
                 f"{_ms(stat[('ours-no-hinge', 'above_hinge')])[0]:.3f}, with it {_ms(stat[('ours', 'above_hinge')])[0]:.3f} "
                 f"(diff {d:.3f} ± {se:.3f}; the guidance targets this quantity, so it is not counted as a claim)")
    d, se = diff("ours-no-hinge", "ours", "reid_heldout")
    res.add_claim("hinge ablation: without the hinge held-out re-ID is higher (> 2 SE)", d > K * se and d > 0,
                  f"diff {d:.3f} ± {se:.3f}")
    d, se = diff("ours-no-mi", "ours", "reid_heldout")
    res.add_claim("MI ablation: without the MI term held-out re-ID is higher (> 2 SE)", d > K * se and d > 0,
                  f"diff {d:.3f} ± {se:.3f}")
    d, se = diff("swap-no-sampler", "ours", "reid_heldout")
    res.add_claim("sampler: random swap without the rejection sampler re-identifies more (> 2 SE)", d > K * se and d > 0,
                  f"diff {d:.3f} ± {se:.3f}")
    res.add_note(f"chance re-ID = {chance:.3f}; attribute MAE of diffusion reconstructions (own z_id) = {rec:.3f} "
                 "(in units of each attribute's range; glasses excluded)")
    res.add_note("generator: a small pixel-space conditional DDPM (T=100) sampled with 10 deterministic DDIM steps "
                 "stands in for the paper's latent diffusion distilled to an LCM; the hinge acts as guidance with "
                 "thresholds tau_m - 0.25 (hinge_margin); every loss form and weight is a reconstruction")
    res.add_note("above_hinge = share of samples with some ensemble oracle at or above its hinge threshold "
                 "(tau_m - hinge_margin): the samples where the hinge is active")
    res.meta.update(setting=setting, seeds=seeds, config=cfg, taus=[r["taus"] for r in runs])
    return res
