"""CPU-scale reproduction of Downgrade to Upgrade (Lang et al., 2025).

1. A byte-level tiny GPT memorizes a generated corpus of fictional facts (3 per entity).
2. The facts of 15 % of the entities are unlearned with NPO (and GradDiff unless quick) using
   AdamW (first order), signSGD, signAdam, ZO-Adam and the hybrid FO-ZO optimizer.  Each run stops
   as soon as the forget-set KnowMem reaches the same target (matched pre-attack forgetting) or at
   the step cap.
3. Two attacks on every unlearned model: round-to-nearest int4 weight quantization (group 32) and
   relearning (a few Adam steps on a fifth of the forget facts).  Reported: forget KnowMem before /
   after each attack (recovery = after - before; relearning recovery is measured on the forget facts
   that were *not* relearned), retain KnowMem, steps.
"""

from __future__ import annotations

import copy
import time
from typing import Optional

import torch

from gradkit_core.results import Result, progress as _progress

from .attacks import quantize_rtn_, relearn_attack
from .facts import answer_mask, fact_corpus, knowmem, subset
from .objectives import LMUnlearner

CONFIGS = {
    "quick": dict(n_entities=60, length=32, d_model=64, n_layer=2, n_head=4, train_steps=700, batch=64,
                  train_lr=3e-3, forget_frac=0.15, objectives=("npo",), max_steps=200, eval_every=5,
                  target=0.5, relearn_steps=30, relearn_lr=3e-4, q=4),
    "default": dict(n_entities=90, length=32, d_model=64, n_layer=2, n_head=4, train_steps=1000, batch=64,
                    train_lr=3e-3, forget_frac=0.15, objectives=("npo", "graddiff"), max_steps=300, eval_every=5,
                    target=0.5, relearn_steps=30, relearn_lr=3e-4, q=4),
    "full": dict(n_entities=300, length=32, d_model=96, n_layer=3, n_head=4, train_steps=4000, batch=64,
                 train_lr=2e-3, forget_frac=0.15, objectives=("npo", "graddiff"), max_steps=1000, eval_every=5,
                 target=0.5, relearn_steps=40, relearn_lr=3e-4, q=8),
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


def run(*, quick: bool = False, full: bool = False, out: Optional[str] = None, seed: int = 0,
        progress: bool = True) -> Result:
    from gradkit_support.data import set_seed
    from gradkit_support.models import TinyGPT

    level = "full" if full else ("quick" if quick else "default")
    cfg = CONFIGS[level]
    t_all = time.perf_counter()
    threads = torch.get_num_threads()
    if quick:
        torch.set_num_threads(1)
    set_seed(seed)
    res = Result("zounlearn", title=f"Optimizer grade vs unlearning robustness on a tiny GPT with fictional facts ({level})")
    res.meta.update(config={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, seed=seed,
                    level=level, optimizers={k: {"lr": v[0], **v[1]} for k, v in OPTIMIZERS.items()})

    data = fact_corpus(cfg["n_entities"], cfg["length"], seed=seed)
    unseen = fact_corpus(40, cfg["length"], seed=seed + 10_000)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(cfg["n_entities"], generator=g)
    n_f = max(2, int(round(cfg["forget_frac"] * cfg["n_entities"])))
    f_ent = perm[:n_f]
    is_f = torch.isin(data["entity"], f_ent)
    forget, retain = subset(data, is_f.nonzero().flatten()), subset(data, (~is_f).nonzero().flatten())
    n_rel = max(1, len(forget["input_ids"]) // 5)
    rel_idx = torch.randperm(len(forget["input_ids"]), generator=g)
    relearn_set, heldout_f = subset(forget, rel_idx[:n_rel]), subset(forget, rel_idx[n_rel:])

    model = TinyGPT(block_size=cfg["length"], d_model=cfg["d_model"], n_layer=cfg["n_layer"], n_head=cfg["n_head"])
    t0 = time.perf_counter()
    _train(model, data, cfg, seed, progress)
    res.meta["train_seconds"] = time.perf_counter() - t0
    base_f, base_r, chance = knowmem(model, forget), knowmem(model, retain), knowmem(model, unseen)
    q_orig = quantize_rtn_(copy.deepcopy(model))
    res.meta.update(n_params=model.num_params(), forget_facts=len(forget["input_ids"]),
                    retain_facts=len(retain["input_ids"]), relearn_facts=n_rel, unseen_knowmem=chance)
    res.add_row(objective="-", optimizer="original", steps=0, forget_KM=base_f, retain_KM=base_r,
                forget_KM_int4=knowmem(q_orig, forget), retain_KM_int4=knowmem(q_orig, retain))

    # forget objective on the answer (the attribute value and the rest of the sentence), TOFU style
    fb = [{"input_ids": forget["input_ids"], "loss_mask": answer_mask(forget)}]
    rb = [{"input_ids": retain["input_ids"][i : i + 32], "loss_mask": retain["loss_mask"][i : i + 32]}
          for i in range(0, len(retain["input_ids"]), 32)]
    rel_b = [{"input_ids": relearn_set["input_ids"], "loss_mask": relearn_set["loss_mask"]}]
    target = cfg["target"]
    results = {}
    runs = [(o, n) for o in cfg["objectives"] for n in OPTIMIZERS]
    for obj, name in _progress(runs, desc="unlearn + attack", enabled=progress):
        lr, kw = OPTIMIZERS[name]
        if name in ("zo", "hybrid-fo-zo"):
            kw = {**kw, "num_queries": cfg["q"], "seed": seed}
        torch.manual_seed(seed)
        m = copy.deepcopy(model)
        ul = LMUnlearner(m, objective=obj, optimizer=name, lr=lr, optimizer_kwargs=kw, ref_model=copy.deepcopy(model))
        curve = []

        def stop(mm, _c=curve, _ul=ul):
            km = knowmem(mm, forget)
            _c.append((_ul.steps_taken, km))
            return km <= target

        t0 = time.perf_counter()
        ul.unlearn(fb, rb, steps=cfg["max_steps"], stop_fn=stop, eval_every=cfg["eval_every"])
        secs = time.perf_counter() - t0
        f_km, r_km = knowmem(m, forget), knowmem(m, retain)
        q = quantize_rtn_(copy.deepcopy(m))
        fq, rq = knowmem(q, forget), knowmem(q, retain)
        re = relearn_attack(m, rel_b, steps=cfg["relearn_steps"], lr=cfg["relearn_lr"], seed=seed)
        h_before, h_after = knowmem(m, heldout_f), knowmem(re, heldout_f)
        f_relearn = knowmem(re, forget)
        r = dict(objective=obj, optimizer=name, steps=ul.steps_taken, seconds=secs, forget_KM=f_km, retain_KM=r_km,
                 forget_KM_int4=fq, retain_KM_int4=rq, quant_recovery=fq - f_km, heldout_forget_KM=h_before,
                 heldout_KM_relearn=h_after, relearn_recovery=h_after - h_before, forget_KM_relearn=f_relearn,
                 reached_target=f_km <= target)
        results[(obj, name)] = r
        res.add_row(**r)
        res.add_curve(f"{obj}: forget KnowMem", name, [c[0] for c in curve], [c[1] for c in curve])

    # --- claims
    for obj in cfg["objectives"]:
        a = results[(obj, "adamw")]
        for name in ("sign-sgd", "sign-adam", "zo", "hybrid-fo-zo"):
            r = results[(obj, name)]
            matched = r["reached_target"] and a["reached_target"]
            res.add_claim(f"{obj}: {name} recovers less than AdamW under int4 RTN quantization",
                          matched and r["quant_recovery"] < a["quant_recovery"],
                          f"{r['quant_recovery']:+.3f} vs AdamW {a['quant_recovery']:+.3f}"
                          + ("" if matched else " (pre-attack forgetting not matched: a run missed the target)"))
            res.add_claim(f"{obj}: {name} recovers less than AdamW under relearning",
                          matched and r["relearn_recovery"] < a["relearn_recovery"],
                          f"{r['relearn_recovery']:+.3f} vs AdamW {a['relearn_recovery']:+.3f}"
                          + ("" if matched else " (pre-attack forgetting not matched: a run missed the target)"))
    res.add_note(f"KnowMem = top-1 accuracy on the first byte of each attribute value (unseen-entity level "
                 f"{chance:.3f}); every run stops once forget KnowMem <= {target} (checked every "
                 f"{cfg['eval_every']} steps) or after {cfg['max_steps']} steps")
    res.add_note("relearning: Adam on one fifth of the forget facts; relearn_recovery is measured on the other four "
                 "fifths (forget_KM_relearn: on the whole forget set)")
    res.add_note("unlearning objectives act on the answer bytes of the forget facts (from the attribute value on); "
                 "the retain term uses whole retain sentences")
    res.add_note("hybrid-fo-zo uses schedule='alternate' (period 1): a reconstruction, the paper's exact schedule is unverified")
    res.meta["total_seconds"] = time.perf_counter() - t_all
    torch.set_num_threads(threads)
    if out is not None:
        res.save(out)
    return res
