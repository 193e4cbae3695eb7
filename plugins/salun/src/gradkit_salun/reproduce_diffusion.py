"""SalUn for generation, CPU scale: forget digit 0 in a tiny class-conditional DDPM.

A small MLP ε-model (T = 200, classifier-free guidance p_drop = 0.1, w = 2) is trained on
scikit-learn digits scaled to [-1, 1]; a digits MLP classifier (trained on the real
images) judges generated samples.  SalUn (mask ratio 0.5), the same objective without a
mask (random-label baseline, "RL") and gradient ascent (GA) each run 500 iterations
(Adam 1e-4, gradient clip 1, batch 64 forget / 128 retain).

Metrics: UA = share of the finite class-0 samples the classifier does NOT call 0 (higher =
forgotten; NaN when no class-0 sample is finite); retain accuracy = classifier accuracy on samples
of classes 1-9 (a non-finite sample counts as wrong); nonfinite = share of NaN/inf samples; MMD (RBF kernel)
between generated and real images of classes 1-9 (lower = closer to the data).
Run: ``from gradkit_salun.reproduce_diffusion import run; print(run().report())``
(also ``gradkit reproduce salun-diffusion``).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Optional

import torch

from gradkit_core.results import Result
from gradkit_core.results import progress as _progress


def _mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared MMD with an RBF kernel (median bandwidth); inf when samples are not finite (a collapsed model)."""
    if not torch.isfinite(a).all():
        return float("inf")
    x = torch.cat([a, b])
    d = torch.cdist(x, x) ** 2
    sigma2 = d[d > 0].median()
    k = torch.exp(-d / sigma2)
    n = len(a)
    val = float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())
    return val if math.isfinite(val) else float("inf")


def run(*, quick: bool = False, full: bool = False, out: Optional[str] = None, seed: int = 0,
        progress: bool = True) -> Result:  # noqa: A002 - contract name
    from sklearn.datasets import load_digits

    from gradkit_support.data import loader, set_seed
    from gradkit_support.models import MLP

    from .diffusion import SalUnDiffusion, Schedule, TinyCondEps, sample, train_ddpm

    torch.set_num_threads(1)
    set_seed(seed)
    d = load_digits()
    x = torch.tensor(d.data / 8.0 - 1.0, dtype=torch.float32)
    c = torch.tensor(d.target)
    steps = 1500 if quick else (6000 if full else 3000)
    iters = 200 if quick else 500
    n_per = 20 if quick else 50
    sched = Schedule(200)
    bar = _progress(total=5, desc="salun-diffusion", enabled=progress)

    torch.manual_seed(seed)
    ddpm = train_ddpm(TinyCondEps(), sched, x, c, steps=steps, seed=seed)
    bar.update(1)
    torch.manual_seed(seed)
    clf = MLP([64, 128, 10])
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(400):
        idx = torch.randint(0, len(x), (128,), generator=g)
        xx = x[idx] + 0.1 * torch.randn(128, 64, generator=g)
        loss = torch.nn.functional.cross_entropy(clf(xx), c[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    bar.update(1)

    forget_mask = c == 0
    fresh = lambda: (loader(x[forget_mask], c[forget_mask], 64, seed=seed),  # noqa: E731
                     loader(x[~forget_mask], c[~forget_mask], 128, seed=seed))
    real_rest = x[~forget_mask]

    def evaluate(model):
        c0 = torch.zeros(n_per * 2, dtype=torch.long)
        crest = torch.arange(1, 10).repeat_interleave(n_per)
        with torch.no_grad():
            s0 = sample(model, sched, c0, (64,), seed=seed + 1)
            sr = sample(model, sched, crest, (64,), seed=seed + 2)
            # a non-finite sample is no image: the judge's argmax of NaN would call it class 0, so such
            # samples are counted apart (UA over the finite class-0 samples, NaN when there are none;
            # a non-finite class 1-9 sample counts as not recognised)
            ok0, okr = torch.isfinite(s0).all(1), torch.isfinite(sr).all(1)
            ua = float((clf(s0[ok0]).argmax(1) != 0).float().mean()) if bool(ok0.any()) else float("nan")
            ra = float(((clf(sr.nan_to_num()).argmax(1) == crest) & okr).float().mean())
        return dict(UA=ua, retain_acc=ra, nonfinite=float(1 - torch.cat([ok0, okr]).float().mean()),
                    MMD_retain=_mmd(sr, real_rest[torch.randperm(len(real_rest), generator=g)[: len(sr)]]))

    res = Result("salun-diffusion", title="Forget digit 0 in a tiny class-conditional DDPM: SalUn vs RL vs GA")
    base = evaluate(ddpm)
    res.add_row(method="original", **{k: round(v, 4) for k, v in base.items()}, seconds=0.0)
    out_m = {}
    for name, kw in [("SalUn", dict(ratio=0.5)), ("RL (no mask)", dict(ratio=1.0)),
                     ("GA", dict(ratio=1.0, objective="ga"))]:
        m = copy.deepcopy(ddpm)
        t = time.perf_counter()
        SalUnDiffusion(m, schedule=sched, seed=seed, **kw).unlearn(*fresh(), max_steps=iters)
        secs = time.perf_counter() - t
        out_m[name] = evaluate(m)
        res.add_row(method=name, **{k: round(v, 4) for k, v in out_m[name].items()}, seconds=round(secs, 2))
        bar.update(1)
    bar.close()
    s = out_m["SalUn"]
    res.add_claim("SalUn forgets digit 0 (UA >= 0.9) while class 1-9 samples stay recognisable "
                  "(retain accuracy within 0.1 of the original model, every sample finite)",
                  s["UA"] >= 0.9 and s["retain_acc"] >= base["retain_acc"] - 0.1 and s["nonfinite"] == 0,
                  f"UA {s['UA']:.2f}, retain acc {s['retain_acc']:.2f} vs original {base['retain_acc']:.2f}")
    ga = out_m["GA"]
    res.add_claim("GA damages generation of the other classes more than SalUn (lower retain accuracy or higher MMD)",
                  ga["retain_acc"] < s["retain_acc"] or ga["MMD_retain"] > s["MMD_retain"],
                  f"GA retain acc {ga['retain_acc']:.2f} / MMD {ga['MMD_retain']:.4f} vs SalUn "
                  f"{s['retain_acc']:.2f} / {s['MMD_retain']:.4f}")
    res.meta.update(ddpm_steps=steps, unlearn_iterations=iters, samples_per_class=n_per, T=sched.T, guidance=2.0)
    return res
