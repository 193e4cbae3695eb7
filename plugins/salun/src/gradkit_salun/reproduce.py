"""SalUn vs Retrain / FT / GA / RL / ℓ1-sparse / SalUn-soft on scikit-learn digits.

CPU-scale version of the paper's Table 3 (random 10 % forgetting) and class-wise
forgetting.  The paper's original models memorise their training set (train
accuracy 100 %, a clear train/test gap), which makes Retrain's forget set look like
unseen data (CIFAR-10 random 10 %: Retrain UA 5.2 %, MIA-Efficacy 12.9 %).  The
proxy keeps that property: an MLP 64-128-128-10 is trained without augmentation for
100 epochs on a fixed 600-image subset of the digits training split (train 100 %,
test ≈ 96 %); each unlearner starts from the same original model; Retrain trains a
fresh model on D_r with the original recipe.  Per seed the original model, the
forget set and every method's randomness change.

Hyperparameters: every method gets the same budget, one learning-rate grid
(:data:`LR_GRID`; GA: :data:`GA_LR_GRID`, 5 epochs as in the official code) scored by
the mean Avg.Gap over the held-out tuning seeds (:data:`TUNE_SEEDS`, never
reported), separately per scenario.  :func:`tune` reruns that search
(``run(full=True)`` does it before the report); :data:`TUNED` holds its result.

Metrics (paper): UA, RA, TA, MIA-Efficacy, RTE, Avg.Gap to Retrain.  Class-wise
forgetting removes digit 0; its TA and MIA non-members use the test digits 1-9.
"""

from __future__ import annotations

import copy
import json
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from gradkit_core.results import Result, progress

CLASSES = {"FT": "FineTune", "GA": "GradientAscent", "RL": "RandomLabel", "l1-sparse": "L1Sparse",
           "SalUn": "SalUn", "SalUn-soft": "SalUnSoft"}
FIXED = {"FT": {}, "GA": {"epochs": 5}, "RL": {}, "l1-sparse": {"alpha": 5e-4}, "SalUn": {"ratio": 0.5},
         "SalUn-soft": {"ratio": 0.5}}
LR_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
GA_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
TUNE_SEEDS = (0, 50)  # offsets from run()'s seed; the reported seeds are seed+1 ... seed+n_seeds
# result of tune() (mean Avg.Gap over TUNE_SEEDS, lowest wins, ties -> smaller lr); see README
TUNED_LR = {
    "random": {"FT": 0.001, "GA": 1e-4, "RL": 0.002, "l1-sparse": 0.1, "SalUn": 0.002, "SalUn-soft": 0.002},
    "class": {"FT": 0.2, "GA": 0.03, "RL": 0.01, "l1-sparse": 0.2, "SalUn": 0.05, "SalUn-soft": 0.01},
}


def _methods(lrs: Dict[str, float]) -> Dict[str, Tuple[str, dict]]:
    return {n: (CLASSES[n], {"lr": lrs[n], **FIXED[n]}) for n in CLASSES}


TUNED = {sc: _methods(v) for sc, v in TUNED_LR.items()}
METHODS = TUNED["random"]  # the benchmark's settings
TRAIN_EPOCHS = 100
TRAIN_LR = 0.05
N_TRAIN = 600


def _data():
    """digits split (test 396), training side reduced to a fixed N_TRAIN-image subset."""
    from gradkit_support.data import digits

    xtr, ytr, xte, yte = digits(test_fraction=0.22, seed=0)
    g = torch.Generator()
    g.manual_seed(123)
    idx = torch.randperm(len(xtr), generator=g)[:N_TRAIN]
    return xtr[idx], ytr[idx], xte, yte


def _model(seed: int):
    from gradkit_support.models import MLP

    torch.manual_seed(seed)
    return MLP([64, 128, 128, 10])


def _train(model, x, y, seed: int, epochs: Optional[int] = None):
    from gradkit_support.data import loader
    from gradkit_support.train import train_classifier

    epochs = TRAIN_EPOCHS if epochs is None else epochs
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=0.9, weight_decay=5e-4)
    train_classifier(model, loader(x, y, 64, seed=seed), opt, epochs=epochs)
    return model.eval()


def _split(scenario: str, x, y, seed: int):
    if scenario == "random":
        g = torch.Generator()
        g.manual_seed(1000 + seed)
        perm = torch.randperm(len(x), generator=g)
        n_f = int(round(0.1 * len(x)))
        fi, ri = perm[:n_f], perm[n_f:]
    elif scenario == "class":
        fi = torch.nonzero(y == 0).squeeze(1)
        ri = torch.nonzero(y != 0).squeeze(1)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return (x[fi], y[fi]), (x[ri], y[ri])


def _mean_std(v: List[float]):
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _evaluate(seeds: Sequence[int], configs: Dict[str, Dict[str, Tuple[str, dict]]], data, bar=None):
    """Per scenario and config name: one metrics dict per seed (Retrain under "Retrain").

    ``configs[scenario][name] = (unlearner class name, kwargs)``; every config of a seed
    starts from the same original model and is compared with the same Retrain model.
    """
    from gradkit_support.data import loader, set_seed

    from . import unlearn as U
    from .metrics import avg_gap, timed, unlearning_metrics

    xtr, ytr, xte, yte = data
    per: Dict[str, Dict[str, List[Dict[str, float]]]] = {sc: {} for sc in configs}
    for s in seeds:
        set_seed(s)
        original = _train(_model(s), xtr, ytr, seed=s)
        for sc, methods in configs.items():
            (xf, yf), (xr, yr) = _split(sc, xtr, ytr, s)
            xt, yt = (xte, yte) if sc == "random" else (xte[yte != 0], yte[yte != 0])
            # fresh loaders for every run: a shared shuffling generator would give each method a
            # different batch order depending on how many runs came before it
            fresh = lambda: (loader(xf, yf, 64, seed=s), loader(xr, yr, 64, seed=s))  # noqa: E731
            set_seed(s)
            retrained, t_re = timed(U.Retrain(_model(s + 10_000), lr=TRAIN_LR, epochs=TRAIN_EPOCHS, seed=s).unlearn,
                                    *fresh())
            ref = unlearning_metrics(retrained, (xf, yf), (xr, yr), (xt, yt), seed=s)
            ref.update(RTE=t_re, gap=0.0)
            per[sc].setdefault("Retrain", []).append(ref)
            if bar is not None:
                bar.update(1)
            for name, (cls, kw) in methods.items():
                set_seed(s)
                m = copy.deepcopy(original)
                model, t = timed(getattr(U, cls)(m, seed=s, **kw).unlearn, *fresh())
                met = unlearning_metrics(model, (xf, yf), (xr, yr), (xt, yt), seed=s)
                met.update(RTE=t, gap=avg_gap(met, ref))
                per[sc].setdefault(name, []).append(met)
                if bar is not None:
                    bar.update(1)
    return per


def tune(*, seed: int = 0, scenarios: Sequence[str] = ("random", "class"), progress: bool = True,
         data=None) -> Dict[str, Dict[str, float]]:
    """The learning-rate search behind :data:`TUNED_LR`: the same grid for every method
    (GA: its own 6-point grid), scored by the mean Avg.Gap over the tuning seeds
    ``seed + TUNE_SEEDS`` (never reported), per scenario; ties go to the smaller lr.
    Returns ``{scenario: {method: lr}}`` (``tune.last_scores`` keeps every score)."""
    torch.set_num_threads(1)
    data = data if data is not None else _data()
    configs = {sc: {f"{n}@{lr:g}": (CLASSES[n], {"lr": lr, **FIXED[n]})
                    for n in CLASSES for lr in (GA_LR_GRID if n == "GA" else LR_GRID)} for sc in scenarios}
    seeds = [seed + t for t in TUNE_SEEDS]
    bar = _progress_bar(len(seeds) * sum(len(c) + 1 for c in configs.values()), progress)
    per = _evaluate(seeds, configs, data, bar)
    bar.close()
    best: Dict[str, Dict[str, float]] = {}
    scores: Dict[str, Dict[str, float]] = {}
    for sc in scenarios:
        scores[sc] = {k: statistics.fmean(100 * r["gap"] for r in v) for k, v in per[sc].items() if k != "Retrain"}
        best[sc] = {}
        for n in CLASSES:
            grid = GA_LR_GRID if n == "GA" else LR_GRID
            best[sc][n] = min(grid, key=lambda lr: (round(scores[sc][f"{n}@{lr:g}"], 9), lr))
    tune.last_scores = scores  # type: ignore[attr-defined]
    return best


def run(*, quick: bool = False, full: bool = False, out: Optional[str] = None, seed: int = 0,
        progress: bool = True) -> Result:  # noqa: A002 - contract name
    torch.set_num_threads(1)
    n_seeds = 2 if quick else (10 if full else 5)
    seeds = [seed + 1 + i for i in range(n_seeds)]  # seed + TUNE_SEEDS are the tuning seeds
    if set(seeds) & {seed + t for t in TUNE_SEEDS}:
        raise ValueError("reported seeds overlap the tuning seeds")
    scenarios = ["random", "class"]
    data = _data()
    xtr, ytr, xte, yte = data

    res = Result("salun", title=f"SalUn vs baselines on digits (MLP, {len(xtr)} train images), {n_seeds} seeds, "
                                "random 10% and class-wise")
    lrs = TUNED_LR
    if full:
        lrs = tune(seed=seed, progress=progress, data=data)
        res.meta["tuning_scores"] = {sc: {k: round(v, 3) for k, v in d.items()} for sc, d in tune.last_scores.items()}
    configs = {sc: _methods(lrs[sc]) for sc in scenarios}
    res.meta.update(seeds=seeds, tuning_seeds=[seed + t for t in TUNE_SEEDS], tuned_lr=json.loads(json.dumps(lrs)),
                    retuned=bool(full), train_epochs=TRAIN_EPOCHS, unlearn_epochs=10, model="MLP 64-128-128-10",
                    n_train=len(xtr), n_test=len(xte), lr_grid=list(LR_GRID), ga_lr_grid=list(GA_LR_GRID),
                    schedule="alternate (forget pass with y'≠y, then retain pass; official CIFAR-10 loop)")
    total = len(seeds) * len(scenarios) * (len(CLASSES) + 1)
    bar = _progress_bar(total, progress)
    per = _evaluate(seeds, configs, data, bar)
    bar.close()

    for sc in scenarios:
        for name, runs in per[sc].items():
            row = {"scenario": sc, "method": name}
            for k in ("UA", "RA", "TA", "MIA"):
                mu, sd = _mean_std([100 * r[k] for r in runs])
                row[k] = f"{mu:.2f}±{sd:.2f}"
            row["RTE_s"] = round(statistics.fmean(r["RTE"] for r in runs), 3)
            g_mu, g_sd = _mean_std([100 * r["gap"] for r in runs])
            row["avg_gap"] = round(g_mu, 3)
            row["gap_std"] = round(g_sd, 3)
            row["lr"] = configs[sc][name][1]["lr"] if name in configs[sc] else TRAIN_LR
            res.add_row(**row)
            res.add_curve(f"Avg.Gap per seed ({sc})", name, seeds, [100 * r["gap"] for r in runs])

    # claims ---------------------------------------------------------------
    for sc in scenarios:
        gaps = {n: [100 * r["gap"] for r in runs] for n, runs in per[sc].items() if n != "Retrain"}
        means = {n: statistics.fmean(v) for n, v in gaps.items()}
        best = min(means, key=means.get)
        sal = gaps["SalUn"]
        # "within noise": inside the best method's standard error plus SalUn's own
        se = lambda v: (statistics.stdev(v) / len(v) ** 0.5) if len(v) > 1 else 0.0  # noqa: E731
        tol = se(gaps[best]) + se(sal)
        res.add_claim(f"[{sc}] SalUn's Avg.Gap to Retrain is the smallest or within noise of it",
                      means["SalUn"] <= means[best] + tol,
                      f"SalUn {means['SalUn']:.2f} vs best {best} {means[best]:.2f} (noise ±{tol:.2f}); "
                      + ", ".join(f"{n} {v:.2f}" for n, v in sorted(means.items(), key=lambda kv: kv[1])))
        sd_s = statistics.stdev(sal) if len(sal) > 1 else 0.0
        sd_r = statistics.stdev(gaps["RL"]) if len(gaps["RL"]) > 1 else 0.0
        res.add_claim(f"[{sc}] SalUn's Avg.Gap varies less over seeds than random labeling alone (RL)",
                      sd_s < sd_r, f"std over {len(seeds)} seeds: SalUn {sd_s:.2f} vs RL {sd_r:.2f}")

    if not quick:
        _ratio_sweep(res, data, seed + 1, lrs["random"]["SalUn"], progress)
    res.add_note("numbers are percentages; Avg.Gap = mean |UA, RA, TA, MIA - Retrain's| per seed, then mean/std over seeds")
    res.add_note(f"learning rates: one grid for every method, per scenario, mean Avg.Gap over tuning seeds "
                 f"{[seed + t for t in TUNE_SEEDS]} (not reported); " + ("re-tuned in this run" if full else
                 "stored result of tune() (run with full=True to re-tune)"))
    return res


def _ratio_sweep(res: Result, data, seed: int, lr: float, progress: bool) -> None:
    """SalUn's Avg.Gap as a function of the mask ratio (random 10 %, one seed)."""
    from gradkit_support.data import loader, set_seed

    from . import unlearn as U
    from .metrics import avg_gap, unlearning_metrics

    xtr, ytr, xte, yte = data
    set_seed(seed)
    original = _train(_model(seed), xtr, ytr, seed=seed)
    (xf, yf), (xr, yr) = _split("random", xtr, ytr, seed)
    # fresh loaders for every run: one shared pair of shuffling loaders would give each ratio a
    # different batch order depending on how many runs came before it
    fresh = lambda: (loader(xf, yf, 64, seed=seed), loader(xr, yr, 64, seed=seed))  # noqa: E731
    set_seed(seed)
    ref = unlearning_metrics(U.Retrain(_model(seed + 10_000), lr=TRAIN_LR, epochs=TRAIN_EPOCHS, seed=seed)
                             .unlearn(*fresh()), (xf, yf), (xr, yr), (xte, yte), seed=seed)
    ratios = [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    gaps = []
    for r in ratios:
        set_seed(seed)
        m = U.SalUn(copy.deepcopy(original), ratio=r, lr=lr, seed=seed).unlearn(*fresh())
        gaps.append(100 * avg_gap(unlearning_metrics(m, (xf, yf), (xr, yr), (xte, yte), seed=seed), ref))
    res.add_curve("SalUn Avg.Gap vs mask ratio (random, 1 seed)", "SalUn", ratios, gaps)
    res.meta["ratio_sweep"] = dict(zip(map(str, ratios), [round(g, 3) for g in gaps]))


def _progress_bar(total: int, enabled: bool):
    return progress(total=total, desc="salun", enabled=enabled)
