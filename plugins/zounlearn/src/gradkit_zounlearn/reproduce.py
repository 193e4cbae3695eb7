"""CPU-scale reproduction of Downgrade to Upgrade (Lang et al., 2025).

1. A byte-level tiny GPT memorizes a generated corpus of fictional facts (3 per entity).  By default
   the released ("original") model is its round-to-nearest int4 version (``on_grid``): its weights
   lie on the int4 grid, the setting in which Zhang et al. (2024)'s failure mode is exact -- an
   unlearning update smaller than half a quantization bin is rounded back to the original codes.
2. For each seed, the facts of 15 % of the entities (a different random forget set per seed) are
   unlearned with NPO and GradDiff (NPO only when quick) using AdamW (first order), signSGD,
   signAdam, ZO-Adam and the hybrid FO-ZO optimizer.  Every run stops as soon as the forget-set
   KnowMem reaches the same target (checked every ``eval_every`` steps): matched pre-attack
   forgetting, same stopping rule for every optimizer.
3. Two attacks on every unlearned model: round-to-nearest int4 weight quantization (group 32, the
   same grid) and relearning (a few Adam steps on a fifth of the forget facts).  Reported: forget
   KnowMem before / after each attack (recovery = after - before; relearning recovery is measured on
   the forget facts that were *not* relearned), retain KnowMem, steps; mean and std over seeds.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Optional

import torch

from gradkit_core.results import Result, progress as _progress

from .attacks import quantize_rtn_, relearn_attack
from .facts import answer_mask, fact_corpus, knowmem, subset
from .objectives import LMUnlearner

CONFIGS = {
    "quick": dict(n_entities=60, length=32, d_model=64, n_layer=2, n_head=4, train_steps=700, batch=64,
                  train_lr=3e-3, forget_frac=0.15, objectives=("npo",), max_steps=200, eval_every=1,
                  target=0.5, relearn_steps=50, relearn_lr=1e-4, q=4, seeds=1, retrain_per_seed=False,
                  on_grid=True, bits=4, group_size=32),
    "default": dict(n_entities=90, length=32, d_model=64, n_layer=2, n_head=4, train_steps=1000, batch=64,
                    train_lr=3e-3, forget_frac=0.15, objectives=("npo", "graddiff"), max_steps=300, eval_every=1,
                    target=0.5, relearn_steps=50, relearn_lr=1e-4, q=4, seeds=3, retrain_per_seed=False,
                    on_grid=True, bits=4, group_size=32),
    "full": dict(n_entities=90, length=32, d_model=64, n_layer=2, n_head=4, train_steps=1000, batch=64,
                 train_lr=3e-3, forget_frac=0.15, objectives=("npo", "graddiff"), max_steps=400, eval_every=1,
                 target=0.5, relearn_steps=50, relearn_lr=1e-4, q=4, seeds=5, retrain_per_seed=True,
                 on_grid=True, bits=4, group_size=32),
}

#: optimizer -> (learning rate, extra kwargs); small steps, many of them (the paper's fragile regime)
OPTIMIZERS = {
    "adamw": (3e-5, {}),
    "sign-sgd": (3e-5, {}),
    "sign-adam": (3e-5, {}),
    "zo": (3e-4, {"num_queries": 4, "mu": 1e-3, "base": "adam"}),
    "hybrid-fo-zo": (3e-5, {"num_queries": 4, "mu": 1e-3, "base": "adam", "schedule": "alternate", "period": 1,
                            "zo_lr_scale": 10.0}),
}
METRICS = ("steps", "forget_KM", "retain_KM", "forget_KM_int4", "quant_recovery", "relearn_recovery",
           "forget_KM_relearn")


def _train(model, data, cfg, seed, show):
    g = torch.Generator().manual_seed(seed)
    ids, lm = data["input_ids"], data["loss_mask"]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["train_lr"], weight_decay=0.0)
    steps = cfg["train_steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["train_lr"], total_steps=steps, pct_start=0.1)
    model.train()
    for _ in _progress(range(steps), desc="train tiny GPT on facts", enabled=show):
        i = torch.randint(len(ids), (cfg["batch"],), generator=g)
        x, m = ids[i], lm[i]
        logits = model(x)[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                reduction="none").view(x.shape[0], -1)
        mm = m[:, 1:].float()
        loss = (nll * mm).sum() / mm.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def _split(data, cfg, seed):
    """Forget / retain facts (by entity), and the relearn / held-out halves of the forget facts."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(cfg["n_entities"], generator=g)
    n_f = max(2, int(round(cfg["forget_frac"] * cfg["n_entities"])))
    is_f = torch.isin(data["entity"], perm[:n_f])
    forget, retain = subset(data, is_f.nonzero().flatten()), subset(data, (~is_f).nonzero().flatten())
    n_rel = max(1, len(forget["input_ids"]) // 5)
    rel_idx = torch.randperm(len(forget["input_ids"]), generator=g)
    return forget, retain, subset(forget, rel_idx[:n_rel]), subset(forget, rel_idx[n_rel:])


def _mean_std(xs):
    xs = [float(x) for x in xs]
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run(*, quick: bool = False, full: bool = False, out: Optional[str] = None, seed: int = 0,
        progress: bool = True) -> Result:
    from gradkit_support.data import set_seed
    from gradkit_support.models import TinyGPT

    level = "full" if full else ("quick" if quick else "default")
    cfg = CONFIGS[level]
    t_all = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; the machine is shared
    set_seed(seed)
    res = Result("zounlearn", title=f"Optimizer grade vs unlearning robustness on a tiny GPT with fictional facts ({level})")
    res.meta.update(config={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, seed=seed,
                    level=level, optimizers={k: {"lr": v[0], **v[1]} for k, v in OPTIMIZERS.items()})
    bits, gs, target = cfg["bits"], cfg["group_size"], cfg["target"]

    data = fact_corpus(cfg["n_entities"], cfg["length"], seed=seed)
    unseen = fact_corpus(40, cfg["length"], seed=seed + 10_000)
    seeds = [seed + k for k in range(cfg["seeds"])]
    results = {}  # (obj, optimizer) -> list of per-seed rows
    originals = []
    model = None
    for k, s in enumerate(seeds):
        forget, retain, relearn_set, heldout_f = _split(data, cfg, s)
        if model is None or cfg["retrain_per_seed"]:
            set_seed(s)
            model = TinyGPT(block_size=cfg["length"], d_model=cfg["d_model"], n_layer=cfg["n_layer"],
                            n_head=cfg["n_head"])
            t0 = time.perf_counter()
            _train(model, data, cfg, s, progress)
            res.meta.setdefault("train_seconds", []).append(time.perf_counter() - t0)
            model_fp32 = copy.deepcopy(model)
            if cfg["on_grid"]:  # the released model is the int4 RTN model (weights on the int4 grid)
                quantize_rtn_(model, bits, gs)
        fp32 = dict(forget_KM_fp32=knowmem(model_fp32, forget), retain_KM_fp32=knowmem(model_fp32, retain),
                    unseen_KM=knowmem(model, unseen))
        q_orig = quantize_rtn_(copy.deepcopy(model), bits, gs)
        orig = dict(objective="-", optimizer="original", seed=s, steps=0, forget_KM=knowmem(model, forget),
                    retain_KM=knowmem(model, retain), forget_KM_int4=knowmem(q_orig, forget),
                    retain_KM_int4=knowmem(q_orig, retain), **fp32)
        originals.append(orig)
        res.add_row(**orig)
        res.meta.update(n_params=model.num_params(), forget_facts=len(forget["input_ids"]),
                        retain_facts=len(retain["input_ids"]), relearn_facts=len(relearn_set["input_ids"]))

        # forget objective on the answer (the attribute value and the rest of the sentence), TOFU style
        fb = [{"input_ids": forget["input_ids"], "forget_mask": answer_mask(forget)}]
        rb = [{"input_ids": retain["input_ids"][i : i + 32], "loss_mask": retain["loss_mask"][i : i + 32]}
              for i in range(0, len(retain["input_ids"]), 32)]
        rel_b = [{"input_ids": relearn_set["input_ids"], "loss_mask": relearn_set["loss_mask"]}]
        runs = [(o, n) for o in cfg["objectives"] for n in OPTIMIZERS]
        for obj, name in _progress(runs, desc=f"seed {s}: unlearn + attack", enabled=progress):
            lr, kw = OPTIMIZERS[name]
            if name in ("zo", "hybrid-fo-zo"):
                kw = {**kw, "num_queries": cfg["q"], "seed": s}
            torch.manual_seed(s)
            m = copy.deepcopy(model)
            ul = LMUnlearner(m, objective=obj, optimizer=name, lr=lr, optimizer_kwargs=kw,
                             ref_model=copy.deepcopy(model))
            curve = []

            def stop(mm, _c=curve, _ul=ul):
                km = knowmem(mm, forget)
                _c.append((_ul.steps_taken, km))
                return km <= target

            t0 = time.perf_counter()
            ul.unlearn(fb, rb, max_steps=cfg["max_steps"], seed=s, stop_fn=stop, eval_every=cfg["eval_every"])
            secs = time.perf_counter() - t0
            f_km, r_km = knowmem(m, forget), knowmem(m, retain)
            q = quantize_rtn_(copy.deepcopy(m), bits, gs)
            fq, rq = knowmem(q, forget), knowmem(q, retain)
            re = relearn_attack(m, rel_b, steps=cfg["relearn_steps"], lr=cfg["relearn_lr"], seed=s)
            h_before, h_after = knowmem(m, heldout_f), knowmem(re, heldout_f)
            max_dw = max(float((p.detach() - p0.detach()).abs().max()) for p, p0 in zip(m.parameters(), model.parameters()))
            r = dict(objective=obj, optimizer=name, seed=s, steps=ul.steps_taken, seconds=secs, forget_KM=f_km,
                     retain_KM=r_km, forget_KM_int4=fq, retain_KM_int4=rq, quant_recovery=fq - f_km,
                     heldout_forget_KM=h_before, heldout_KM_relearn=h_after, relearn_recovery=h_after - h_before,
                     forget_KM_relearn=knowmem(re, forget), max_abs_dw=max_dw, reached_target=f_km <= target)
            results.setdefault((obj, name), []).append(r)
            res.add_row(**r)
            if k == 0:
                res.add_curve(f"{obj}: forget KnowMem (seed {s})", name, [c[0] for c in curve], [c[1] for c in curve])

    # --- mean +- std over seeds
    summary = {}
    for (obj, name), rows in results.items():
        srow = dict(objective=obj, optimizer=name, seed="mean", n_seeds=len(rows),
                    reached_target=all(r["reached_target"] for r in rows))
        for key in METRICS:
            mu, sd = _mean_std(r[key] for r in rows)
            srow[key], srow[key + "_std"] = mu, sd
        summary[(obj, name)] = srow
        res.add_row(**srow)

    # --- claims: the paper's direction (each downgraded optimizer recovers less than AdamW), on seed means
    ns = len(seeds)
    for obj in cfg["objectives"]:
        a = summary[(obj, "adamw")]
        res.add_claim(f"{obj}: AdamW is vulnerable -- int{bits} quantization restores forgotten facts "
                      f"(mean recovery > 0 over {ns} seed(s))", a["quant_recovery"] > 0,
                      f"{a['quant_recovery']:+.3f} +- {a['quant_recovery_std']:.3f}")
        res.add_claim(f"{obj}: AdamW is vulnerable -- relearning on a fifth of the forget facts restores held-out "
                      f"forgotten facts (mean recovery > 0)", a["relearn_recovery"] > 0,
                      f"{a['relearn_recovery']:+.3f} +- {a['relearn_recovery_std']:.3f}")
        for name in ("sign-sgd", "sign-adam", "zo", "hybrid-fo-zo"):
            r = summary[(obj, name)]
            matched = r["reached_target"] and a["reached_target"]
            tail = "" if matched else " (pre-attack forgetting not matched: a run missed the target)"
            for key, what in (("quant_recovery", f"int{bits} RTN quantization"), ("relearn_recovery", "relearning")):
                wins = sum(x[key] < y[key] for x, y in zip(results[(obj, name)], results[(obj, "adamw")]))
                res.add_claim(f"{obj}: {name} recovers less than AdamW under {what} (mean over {ns} seed(s))",
                              matched and r[key] < a[key],
                              f"{r[key]:+.3f} +- {r[key + '_std']:.3f} vs AdamW {a[key]:+.3f} +- {a[key + '_std']:.3f}"
                              + f"; lower in {wins}/{ns} seeds" + tail)
    o = originals[0]
    res.add_note(f"KnowMem = top-1 accuracy on the first byte of each attribute value (unseen-entity level "
                 f"{o['unseen_KM']:.3f}); every run stops once forget KnowMem <= {target} (checked every "
                 f"{cfg['eval_every']} step(s)) or after {cfg['max_steps']} steps")
    if cfg["on_grid"]:
        res.add_note(f"the original model is the int{bits} RTN (group {gs}) version of the trained fp32 model "
                     f"(fp32 forget/retain KnowMem {o['forget_KM_fp32']:.3f}/{o['retain_KM_fp32']:.3f}): its weights "
                     "lie on the quantization grid, so an unlearning update below half a bin rounds back to it")
    res.add_note(f"relearning: {cfg['relearn_steps']} Adam steps at lr {cfg['relearn_lr']} on one fifth of the forget "
                 "facts; relearn_recovery is measured on the other four fifths (forget_KM_relearn: whole forget set)")
    res.add_note(f"seeds {seeds}: each seed draws its own forget set and optimizer randomness"
                 + ("; the model is retrained per seed" if cfg["retrain_per_seed"] else "; one trained model"))
    res.add_note("unlearning objectives act on the answer bytes of the forget facts (from the attribute value on); "
                 "the retain term uses whole retain sentences")
    res.add_note("hybrid-fo-zo uses schedule='alternate' (period 1): a reconstruction, the paper's exact schedule is unverified")
    res.meta["total_seconds"] = time.perf_counter() - t_all
    torch.set_num_threads(threads)
    return res
