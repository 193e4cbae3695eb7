"""CPU-scale reproduction of CodeEraser's claim (Chu et al., ICSE 2026).

1. A byte-level tiny GPT is trained on Python standard-library source in which
   synthetic secrets (AWS keys, emails, IPv4 addresses, 32-hex tokens) were injected
   into code windows that are oversampled (the "duplicated files"), together with
   memorized non-secret windows and ordinary stdlib text.
2. Secrets the model reproduces (MA >= 0.9) form the forget set; fresh secrets in
   held-out code set the unseen-data thresholds for MA and EL_3.
3. GA, CU, SSGA and CodeEraser unlearn with the same optimizer, step budget and
   early stop (forget MA and EL_3 at or below the unseen thresholds).
4. Reported: secret MA / EL_{3,5,10}; held-out perplexity; MA of the non-secret
   context inside the forgotten samples; MA on memorized non-secret samples; steps; time.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Optional

import torch

from gradkit_core.results import Result, progress as _progress

from .data import batches, plain_samples, secret_samples
from .metrics import extraction_likelihood, memorization_accuracy
from .unlearn import CodeEraser

CONFIGS = {
    "quick": dict(corpus=250_000, length=64, d_model=64, n_layer=2, n_head=4, n_secret=16, n_plain=16,
                  n_unseen=16, train_steps=350, batch=32, mem_frac=0.5, train_lr=3e-3, forget_k=8,
                  unlearn_lr=1e-4, max_steps=80, bs=4, eval_every=4),
    "default": dict(corpus=600_000, length=96, d_model=96, n_layer=2, n_head=4, n_secret=48, n_plain=32,
                    n_unseen=32, train_steps=1400, batch=32, mem_frac=0.5, train_lr=3e-3, forget_k=32,
                    unlearn_lr=1e-4, max_steps=200, bs=4, eval_every=2),
    "full": dict(corpus=1_500_000, length=128, d_model=128, n_layer=4, n_head=4, n_secret=200, n_plain=64,
                 n_unseen=200, train_steps=5000, batch=32, mem_frac=0.5, train_lr=2e-3, forget_k=32,
                 unlearn_lr=5e-5, max_steps=400, bs=4, eval_every=2),
}

METHODS = ("ga", "lm-cu", "ssga", "codeeraser")
#: registered name / settings; GA is CU with lam = 0 (no KL term, no retain step)
_KW = {"ga": {"mode": "cu", "lam": 0.0}, "lm-cu": {"mode": "cu"}, "ssga": {"mode": "ssga"},
       "codeeraser": {"mode": "codeeraser"}}


def _train(model, mem_ids, train_tokens, cfg, seed, show):
    from gradkit_support.data import lm_batch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["train_lr"], weight_decay=0.0, betas=(0.9, 0.98))
    steps, n_mem = cfg["train_steps"], int(cfg["batch"] * cfg["mem_frac"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    model.train()
    for _ in _progress(range(steps), desc="train tiny GPT", enabled=show):
        mi = torch.randint(len(mem_ids), (n_mem,), generator=g)
        xg, _ = lm_batch(train_tokens, cfg["length"], cfg["batch"] - n_mem, g)
        x = torch.cat([mem_ids[mi], xg])
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _evaluate(model, forget, plain, val_tokens, cfg):
    from gradkit_support.train import lm_eval

    ids, sec = forget["input_ids"], forget["secret_mask"]
    out = {
        "secret_MA": _nanmean(memorization_accuracy(model, ids, sec)),
        "EL3": _nanmean(extraction_likelihood(model, ids, sec, n=3)),
        "EL5": _nanmean(extraction_likelihood(model, ids, sec, n=5)),
        "EL10": _nanmean(extraction_likelihood(model, ids, sec, n=10)),
        "context_MA": _nanmean(memorization_accuracy(model, ids, ~sec)),
        "retain_MA": _nanmean(memorization_accuracy(model, plain, torch.ones_like(plain, dtype=torch.bool))),
        "heldout_ppl": math.exp(lm_eval(model, val_tokens, cfg["length"], batch_size=16, n_batches=8)),
    }
    return out


def run(*, quick: bool = False, full: bool = False, out: Optional[str] = None, seed: int = 0,
        progress: bool = True) -> Result:
    from gradkit_support.data import set_seed, split_corpus, stdlib_corpus
    from gradkit_support.models import TinyGPT

    level = "full" if full else ("quick" if quick else "default")
    cfg = CONFIGS[level]
    t_all = time.perf_counter()
    set_seed(seed)
    threads = torch.get_num_threads()
    if quick:
        torch.set_num_threads(1)
    res = Result("codeeraser", title=f"CodeEraser vs GA / CU / SSGA on a tiny GPT with injected secrets ({level})")
    res.meta.update(config=cfg, seed=seed, level=level)

    corpus = stdlib_corpus(cfg["corpus"], seed=seed)
    n_val = len(corpus) // 10
    train_src, val_src = corpus[:-n_val], corpus[-n_val:]
    train_tokens, val_tokens = split_corpus(corpus, val_fraction=0.1)
    used: set = set()
    secrets = secret_samples(train_src, cfg["n_secret"], cfg["length"], seed=seed + 1, used=used)
    plain = plain_samples(train_src, cfg["n_plain"], cfg["length"], seed=seed + 2, used=used)
    unseen = secret_samples(val_src, cfg["n_unseen"], cfg["length"], seed=seed + 3)
    tm, dm = secrets["true_mask"], secrets["detected_mask"]
    coverage = float((tm & dm).sum()) / float(tm.sum())

    model = TinyGPT(block_size=cfg["length"], d_model=cfg["d_model"], n_layer=cfg["n_layer"], n_head=cfg["n_head"])
    mem = torch.cat([secrets["input_ids"], plain])
    t0 = time.perf_counter()
    final_loss = _train(model, mem, train_tokens, cfg, seed, progress)
    train_s = time.perf_counter() - t0

    # --- memorization of the original model and the unseen-secret thresholds
    ma_all = memorization_accuracy(model, secrets["input_ids"], secrets["secret_mask"])
    thr_ma = _nanmean(memorization_accuracy(model, unseen["input_ids"], unseen["secret_mask"]))
    thr_el = _nanmean(extraction_likelihood(model, unseen["input_ids"], unseen["secret_mask"], n=3))
    order = torch.argsort(ma_all, descending=True)
    chosen = order[ma_all[order] >= 0.9][: cfg["forget_k"]]
    if len(chosen) < cfg["forget_k"]:
        res.add_note(f"only {len(chosen)} secrets reached MA >= 0.9; the forget set is filled up with the next "
                     f"most memorized ({cfg['forget_k']} in total)")
        chosen = order[: cfg["forget_k"]]
    forget = {k: v[chosen] for k, v in secrets.items()}
    res.meta.update(train_seconds=train_s, final_train_loss=final_loss, detection_coverage=coverage,
                    threshold_MA=thr_ma, threshold_EL3=thr_el, n_params=model.num_params(),
                    secrets_MA_ge_0_9=int((ma_all >= 0.9).sum()), n_secrets=len(ma_all))

    base = _evaluate(model, forget, plain, val_tokens, cfg)
    res.add_row(method="original", steps=0, seconds=0.0, **base)
    res.add_row(method="unseen-threshold", secret_MA=thr_ma, EL3=thr_el)

    forget_batches = batches(forget, cfg["bs"])
    retain_batches = batches(plain, cfg["bs"])
    results = {}
    for name in _progress(METHODS, desc="unlearn", enabled=progress):
        torch.manual_seed(seed)
        m = copy.deepcopy(model)
        ul = CodeEraser(m, ref_model=copy.deepcopy(model), lr=cfg["unlearn_lr"], **_KW[name])
        curve = []

        def stop(mm, _curve=curve, _ul=ul):
            ma = _nanmean(memorization_accuracy(mm, forget["input_ids"], forget["secret_mask"]))
            el = _nanmean(extraction_likelihood(mm, forget["input_ids"], forget["secret_mask"], n=3))
            _curve.append((_ul.steps_taken, ma))
            return ma <= thr_ma and el <= thr_el

        t0 = time.perf_counter()
        ul.unlearn(forget_batches, retain_batches, max_steps=cfg["max_steps"], stop_fn=stop,
                   eval_every=cfg["eval_every"])
        secs = time.perf_counter() - t0
        r = _evaluate(m, forget, plain, val_tokens, cfg)
        r["below_threshold"] = r["secret_MA"] <= thr_ma and r["EL3"] <= thr_el
        results[name] = r
        res.add_row(method=name, steps=ul.steps_taken, seconds=secs, **r)
        res.add_curve("forget-set secret MA", name, [c[0] for c in curve], [c[1] for c in curve])

    # --- claims (paper's directions)
    res.add_claim("the tiny GPT memorizes the injected secrets (forget-set MA well above the unseen-secret MA)",
                  base["secret_MA"] >= thr_ma + 0.3,
                  f"MA {base['secret_MA']:.3f} vs unseen {thr_ma:.3f}; {int((ma_all >= 0.9).sum())}/{len(ma_all)} "
                  "secrets at MA >= 0.9")
    for name in ("ga", "lm-cu", "codeeraser"):
        r = results[name]
        res.add_claim(f"{name} brings secret MA and EL3 to the unseen-secret thresholds",
                      r["below_threshold"], f"MA {r['secret_MA']:.3f} (thr {thr_ma:.3f}), EL3 {r['EL3']:.3f} "
                      f"(thr {thr_el:.3f})")
    others = ("ga", "lm-cu")
    ce = results["codeeraser"]
    d_ppl = {k: abs(results[k]["heldout_ppl"] - base["heldout_ppl"]) for k in results}
    d_ctx = {k: abs(results[k]["context_MA"] - base["context_MA"]) for k in results}
    res.add_claim("CodeEraser keeps held-out perplexity closer to the original than GA and CU",
                  all(d_ppl["codeeraser"] <= d_ppl[k] for k in others),
                  ", ".join(f"{k} {results[k]['heldout_ppl']:.3f}" for k in results) + f"; original {base['heldout_ppl']:.3f}")
    res.add_claim("CodeEraser keeps the non-secret context MA of the forgotten samples closer to the original than GA and CU",
                  all(d_ctx["codeeraser"] <= d_ctx[k] for k in others),
                  ", ".join(f"{k} {results[k]['context_MA']:.3f}" for k in results) + f"; original {base['context_MA']:.3f}")
    res.add_note(f"secret detection (regex + detect-secrets) covered {coverage:.1%} of the injected secret bytes")
    res.add_note("duplication of secret-bearing files is modelled by oversampling them in every batch "
                 f"({cfg['mem_frac']:.0%} of each batch comes from the {len(mem)} memorized windows)")
    res.add_note("EL_n is exact-match greedy decoding of n bytes from every secret prefix position; early stop uses MA and EL3")
    res.meta["total_seconds"] = time.perf_counter() - t_all
    torch.set_num_threads(threads)
    return res
