"""SalUn vs Retrain / FT / GA / RL / ℓ1-sparse / SalUn-soft on scikit-learn digits.

CPU-scale version of the paper's Table 3 (random 10 % forgetting) and Table A
(class-wise forgetting): an MLP 64-128-128-10 is trained on 1401 digits (SGD,
momentum 0.9, 40 epochs), then each unlearner runs from the same original model;
Retrain trains a fresh model on D_r with the original recipe.  Per seed the
original model, the forget set and every method's randomness change.

Metrics (paper): UA, RA, TA, MIA-Efficacy, RTE, Avg.Gap to Retrain.  Class-wise
forgetting removes digit 0; its TA and MIA non-members use the test digits 1-9.
"""

from __future__ import annotations

import copy
import statistics
from typing import Dict, List, Optional

import torch

from gradkit_core.results import Result, progress

METHODS = {
    # name: (class, kwargs); each learning rate is the one of a grid (FT/RL/l1/SalUn: 0.003, 0.01(3), 0.03,
    # 0.1; GA: 1e-4 ... 3e-2) with the lowest Avg.Gap summed over both scenarios on tuning seed 0, which
    # the reported seeds (1, 2, ...) exclude
    "FT": ("FineTune", {"lr": 0.1}),
    "GA": ("GradientAscent", {"lr": 1e-2, "epochs": 5}),
    "RL": ("RandomLabel", {"lr": 0.003}),
    "l1-sparse": ("L1Sparse", {"lr": 0.1, "alpha": 5e-4}),
    "SalUn": ("SalUn", {"lr": 0.013, "ratio": 0.5}),
    "SalUn-soft": ("SalUnSoft", {"lr": 0.013, "ratio": 0.5}),
}
TRAIN_EPOCHS = 40
TRAIN_LR = 0.05


def _model(seed: int):
    from gradkit_support.models import MLP

    torch.manual_seed(seed)
    return MLP([64, 128, 128, 10])


def _train(model, x, y, seed: int, epochs: int = TRAIN_EPOCHS):
    from gradkit_support.data import loader
    from gradkit_support.train import train_classifier

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


def run(*, quick: bool = False, full: bool = False, out: Optional[str] = None, seed: int = 0,
        progress: bool = True) -> Result:  # noqa: A002 - contract name
    from gradkit_support.data import digits, loader, set_seed

    from . import unlearn as U
    from .metrics import avg_gap, timed, unlearning_metrics

    torch.set_num_threads(1)
    n_seeds = 2 if quick else (10 if full else 5)
    seeds = [seed + 1 + i for i in range(n_seeds)]  # seed itself was the tuning seed
    scenarios = ["random", "class"]
    xtr, ytr, xte, yte = digits(test_fraction=0.22, seed=0)

    res = Result("salun", title=f"SalUn vs baselines on digits (MLP), {n_seeds} seeds, random 10% and class-wise")
    res.meta.update(seeds=seeds, train_epochs=TRAIN_EPOCHS, unlearn_epochs=10, model="MLP 64-128-128-10",
                    n_train=len(xtr), n_test=len(xte), schedule="alternate (forget pass with y'≠y, then retain pass)")
    per: Dict[str, Dict[str, List[Dict[str, float]]]] = {s: {} for s in scenarios}
    total = len(seeds) * len(scenarios) * (len(METHODS) + 1)
    bar = _progress_bar(total, progress)
    for s in seeds:
        set_seed(s)
        original = _train(_model(s), xtr, ytr, seed=s)
        for sc in scenarios:
            (xf, yf), (xr, yr) = _split(sc, xtr, ytr, s)
            xt, yt = (xte, yte) if sc == "random" else (xte[yte != 0], yte[yte != 0])
            F_ = loader(xf, yf, 64, seed=s)
            R_ = loader(xr, yr, 64, seed=s)
            set_seed(s)
            retrained, t_re = timed(U.Retrain(_model(s + 10_000), lr=TRAIN_LR, epochs=TRAIN_EPOCHS, seed=s).unlearn, F_, R_)
            ref = unlearning_metrics(retrained, (xf, yf), (xr, yr), (xt, yt), seed=s)
            ref.update(RTE=t_re, gap=0.0)
            per[sc].setdefault("Retrain", []).append(ref)
            bar.update(1)
            for name, (cls, kw) in METHODS.items():
                set_seed(s)
                m = copy.deepcopy(original)
                model, t = timed(getattr(U, cls)(m, seed=s, **kw).unlearn, F_, R_)
                met = unlearning_metrics(model, (xf, yf), (xr, yr), (xt, yt), seed=s)
                met.update(RTE=t, gap=avg_gap(met, ref))
                per[sc].setdefault(name, []).append(met)
                bar.update(1)
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
        _ratio_sweep(res, xtr, ytr, xte, yte, seed + 1, progress)
    res.add_note("numbers are percentages; Avg.Gap = mean |UA, RA, TA, MIA - Retrain's| per seed, then mean/std over seeds")
    res.add_note("learning rates were tuned once per method on seed 0 (both scenarios); reported seeds start at 1")
    if out:
        res.save(out)
    return res


def _ratio_sweep(res: Result, xtr, ytr, xte, yte, seed: int, progress: bool) -> None:
    """SalUn's Avg.Gap as a function of the mask ratio (random 10 %, one seed)."""
    from gradkit_support.data import loader, set_seed

    from . import unlearn as U
    from .metrics import avg_gap, unlearning_metrics

    set_seed(seed)
    original = _train(_model(seed), xtr, ytr, seed=seed)
    (xf, yf), (xr, yr) = _split("random", xtr, ytr, seed)
    F_, R_ = loader(xf, yf, 64, seed=seed), loader(xr, yr, 64, seed=seed)
    set_seed(seed)
    ref = unlearning_metrics(U.Retrain(_model(seed + 10_000), lr=TRAIN_LR, epochs=TRAIN_EPOCHS, seed=seed)
                             .unlearn(F_, R_), (xf, yf), (xr, yr), (xte, yte), seed=seed)
    ratios = [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    gaps = []
    for r in ratios:
        set_seed(seed)
        m = U.SalUn(copy.deepcopy(original), ratio=r, lr=METHODS["SalUn"][1]["lr"], seed=seed).unlearn(F_, R_)
        gaps.append(100 * avg_gap(unlearning_metrics(m, (xf, yf), (xr, yr), (xte, yte), seed=seed), ref))
    res.add_curve("SalUn Avg.Gap vs mask ratio (random, 1 seed)", "SalUn", ratios, gaps)
    res.meta["ratio_sweep"] = dict(zip(map(str, ratios), [round(g, 3) for g in gaps]))


def _progress_bar(total: int, enabled: bool):
    return progress(total=total, desc="salun", enabled=enabled)
