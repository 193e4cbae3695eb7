"""Reproduction: GBNN vs neural networks trained end to end, at CPU scale.

Paper claims (Emami & Martinez-Munoz, Sec. 5): (1) GBNN generalises about as well as a
one-hidden-layer MLP of the same size trained by Adam, L-BFGS or SGD, on classification and
regression; (2) because the hidden units are trained one after another, the last-trained units
can be removed at test time at little cost (speed/accuracy trade-off on the fly), unlike a
network trained in one shot; (3) the same boosting can train the last layers of a deep model.
The paper gives no single number to match; the brief asks for "within 1-2 % accuracy /
comparable RMSE", "graceful degradation vs a sharp drop".

Setting (all data ship with scikit-learn, nothing is downloaded):

* datasets: breast_cancer, wine, digits (accuracy); diabetes, make_friedman1 (RMSE, original
  units); stratified (classification) / plain K-fold CV, inputs standardised on each training
  fold, regression targets standardised on the training fold for every method;
* GBNN: ``total_units = 200, units_per_step = 1`` (paper defaults: eta 1, subsample 0.5, L-BFGS
  200 iterations per stage, logistic units);
* baselines: scikit-learn ``MLPClassifier/MLPRegressor(hidden_layer_sizes=(200,),
  activation="logistic")`` with adam / lbfgs / sgd at ``max_iter`` 200 and 500; the same 200-unit
  logistic network in torch trained end to end by Adam (minibatch 64); tree boosting
  ``HistGradientBoosting*`` as a reference;
* truncation: on the first fold of digits, accuracy when only the first ``k`` hidden units are
  kept, GBNN vs the adam MLP with the same units (by index) removed;
* deep variant: SmallCNN (gradkit_support) trained on digits; GBNN head trained on its frozen
  penultimate (pooled) features vs the CNN's own end-to-end head.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np

from gradkit_core.results import Result, run_many

CLASSIFICATION = ("breast_cancer", "wine", "digits")
REGRESSION = ("diabetes", "friedman1")
TRUNC_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def load(name: str, seed: int = 0):
    """``(X, y, task)`` of a scikit-learn dataset (no download)."""
    from sklearn import datasets

    if name == "breast_cancer":
        return (*datasets.load_breast_cancer(return_X_y=True), "classification")
    if name == "wine":
        return (*datasets.load_wine(return_X_y=True), "classification")
    if name == "digits":
        return (*datasets.load_digits(return_X_y=True), "classification")
    if name == "diabetes":
        return (*datasets.load_diabetes(return_X_y=True), "regression")
    if name == "friedman1":
        X, y = datasets.make_friedman1(n_samples=500, n_features=10, noise=1.0, random_state=seed)
        return X, y, "regression"
    raise ValueError(f"unknown dataset {name!r}; expected one of {CLASSIFICATION + REGRESSION}")


# ----------------------------------------------------------------------------- baselines
def torch_mlp(X, y, task: str, n_out: int, hidden: int = 200, epochs: int = 150, lr: float = 3e-3,
              batch_size: int = 64, seed: int = 0):
    """The GBNN architecture (one logistic hidden layer of ``hidden`` units) trained end to end by Adam."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.Sigmoid(), nn.Linear(hidden, n_out)).double()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.int64 if task == "classification" else torch.float64)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(Xt), generator=g)
        for i in range(0, len(Xt), batch_size):
            idx = perm[i:i + batch_size]
            out = net(Xt[idx])
            if task == "classification":
                loss = nn.functional.cross_entropy(out, yt[idx])
            else:
                loss = nn.functional.mse_loss(out[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def _torch_predict(net, X, task):
    import torch

    with torch.no_grad():
        out = net(torch.as_tensor(X, dtype=torch.float64)).numpy()
    return out.argmax(1) if task == "classification" else out[:, 0]


def mlp_truncated_accuracy(mlp, X, y, k: int) -> float:
    """Accuracy of a fitted sklearn MLPClassifier keeping only hidden units ``0..k-1``."""
    import copy

    m = copy.deepcopy(mlp)
    m.coefs_[1][k:] = 0.0
    return float(np.mean(m.predict(X) == y))


def gbnn_variants(task: str, quick: bool = False) -> Dict[str, Dict]:
    """GBNN settings compared: the paper's defaults (eta 1, Newton step), the same with a backtracking
    safeguard, shrinkage eta 0.1, and (regression) the authors' fixed step 1 for the squared loss.
    ``quick``: the defaults and eta 0.1 only."""
    if quick:
        return {"gbnn": {}, "gbnn-eta0.1": {"eta": 0.1}}
    v = {"gbnn": {}, "gbnn-backtracking": {"line_search": "backtracking"}, "gbnn-eta0.1": {"eta": 0.1}}
    if task == "regression":
        v["gbnn-official-step"] = {"line_search": "official"}
    return v


# ----------------------------------------------------------------------------- one CV fold
def cv_fold(dataset: str, fold: int, n_folds: int, repeat: int, total_units: int, mlp_iters: List[int],
            torch_epochs: int, seed: int, truncation: bool, quick: bool = False) -> Dict:
    """Every method on one fold; returns ``{"scores": {method: metric}, "fit_s": {...}, ...}``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import LabelEncoder, StandardScaler

    from .boosting import GBNNClassifier, GBNNRegressor

    X, y, task = load(dataset, seed=seed)
    cls = task == "classification"
    rs = seed + 1000 * repeat
    split = (StratifiedKFold if cls else KFold)(n_splits=n_folds, shuffle=True, random_state=rs)
    tr, te = list(split.split(X, y))[fold]
    sc = StandardScaler().fit(X[tr])
    Xtr, Xte = sc.transform(X[tr]), sc.transform(X[te])
    if cls:
        y = LabelEncoder().fit_transform(y)
        ytr, yte, y_scale = y[tr], y[te], 1.0
    else:
        mu, sd = y[tr].mean(), y[tr].std()
        ytr, yte, y_scale = (y[tr] - mu) / sd, (y[te] - mu) / sd, sd

    def metric(pred):
        if cls:
            return float(np.mean(pred == yte))
        return float(np.sqrt(np.mean((pred - yte) ** 2)) * y_scale)  # RMSE in the original units

    scores, fit_s, extra = {}, {}, {}

    def record(name, make, predict=None):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = make()
        fit_s[name] = time.perf_counter() - t0
        scores[name] = metric(predict(model) if predict else model.predict(Xte))
        return model

    G = GBNNClassifier if cls else GBNNRegressor
    gbs = {}
    for label, kw in gbnn_variants(task, quick=quick).items():
        gbs[label] = record(label, lambda: G(total_units=total_units, random_state=rs, **kw).fit(Xtr, ytr))
    gb = gbs["gbnn"]
    M = MLPClassifier if cls else MLPRegressor
    mlps = {}
    for solver in ("adam", "lbfgs", "sgd"):
        for it in mlp_iters:
            mlps[(solver, it)] = record(
                f"mlp-{solver}-{it}",
                lambda: M(hidden_layer_sizes=(total_units,), activation="logistic", solver=solver, max_iter=it,
                          random_state=rs).fit(Xtr, ytr))
    n_out = len(np.unique(ytr)) if cls else 1
    record("torch-mlp-adam", lambda: torch_mlp(Xtr, ytr, task, n_out, hidden=total_units, epochs=torch_epochs, seed=rs),
           lambda net: _torch_predict(net, Xte, task))
    H = HistGradientBoostingClassifier if cls else HistGradientBoostingRegressor
    record("hist-gradient-boosting", lambda: H(random_state=rs).fit(Xtr, ytr))
    if not cls:
        extra["gbnn_train_loss"] = [float(v) for v in gb.train_loss_]
    if truncation and cls:
        ks = sorted({max(1, int(round(f * total_units))) for f in TRUNC_FRACTIONS})
        mlp = mlps[("adam", mlp_iters[0])]
        extra["truncation"] = {"units": ks, **{
            label: [float(m.truncate(k).score(Xte, yte)) for k in ks] for label, m in gbs.items()},
            f"mlp-adam-{mlp_iters[0]}": [mlp_truncated_accuracy(mlp, Xte, yte, k) for k in ks]}
    return {"scores": scores, "fit_s": fit_s, "task": task, **extra}


# ----------------------------------------------------------------------------- deep variant
def deep_variant(epochs: int, total_units: int, seed: int) -> Dict:
    """SmallCNN on digits end to end vs a GBNN head boosted on its frozen pooled features."""
    import torch

    from gradkit_support.data import digits, loader, set_seed
    from gradkit_support.models import SmallCNN
    from gradkit_support.train import accuracy, train_classifier

    from .head import GBHeadTrainer, PooledFeatures

    set_seed(seed)
    xtr, ytr, xte, yte = digits(seed=seed)
    cnn = SmallCNN(width=16)
    opt = torch.optim.AdamW(cnn.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    train_classifier(cnn, loader(xtr, ytr, batch_size=64, seed=seed), opt, epochs=epochs)
    cnn_s = time.perf_counter() - t0
    end_to_end = accuracy(cnn, xte, yte)
    t0 = time.perf_counter()
    boosted = GBHeadTrainer(PooledFeatures(cnn), total_units=total_units, random_state=seed).fit((xtr, ytr))
    head_s = time.perf_counter() - t0
    gb_head = accuracy(boosted, xte, yte)
    return {"cnn_end_to_end": end_to_end, "cnn_gbnn_head": gb_head, "cnn_fit_s": cnn_s, "head_fit_s": head_s,
            "head_units": total_units}


# ----------------------------------------------------------------------------- driver
def run(*, quick: bool = False, full: bool = False, out=None, seed: int = 0, progress: bool = True,
        jobs: int = 1, resume: bool = False) -> Result:
    """``quick``: 2 datasets, 3 folds, 40 units; default: 5 datasets, 3-fold CV, 100 units;
    ``full``: the brief's setting, 5-fold CV and 200 units (GBNN and every MLP).  ``jobs``/``resume``: folds in worker processes, finished
    folds stored under ``out/runs``."""
    if quick:
        datasets, n_folds, repeats, units, mlp_iters, torch_epochs, cnn_epochs = (
            ("breast_cancer", "diabetes"), 3, 1, 40, [200], 40, 4)
        trunc_ds = "breast_cancer"
    elif not full:
        datasets, n_folds, repeats, units, mlp_iters, torch_epochs, cnn_epochs = (
            CLASSIFICATION + REGRESSION, 3, 1, 100, [200, 500], 60, 8)
        trunc_ds = "digits"
    else:
        datasets, n_folds, repeats, units, mlp_iters, torch_epochs, cnn_epochs = (
            CLASSIFICATION + REGRESSION, 5, 1, 200, [200, 500], 150, 8)
        trunc_ds = "digits"
    tasks = [dict(dataset=d, fold=f, n_folds=n_folds, repeat=r, total_units=units, mlp_iters=mlp_iters,
                  torch_epochs=torch_epochs, seed=seed, truncation=(d == trunc_ds and f == 0 and r == 0), quick=quick)
             for d in datasets for r in range(repeats) for f in range(n_folds)]
    t_start = time.perf_counter()
    cache = Path(out) / "runs" if out is not None else None
    folds = run_many(cv_fold, tasks, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress,
                     desc="gbnn cv folds")
    deep = deep_variant(epochs=cnn_epochs, total_units=units // 2 if quick else 100, seed=seed)

    res = Result("gbnn", title=f"GBNN vs end-to-end MLPs ({n_folds}-fold CV x {repeats}, {units} hidden units)")
    res.meta.update(dict(quick=quick, full=full, seed=seed, n_folds=n_folds, repeats=repeats, units=units,
                         mlp_iters=mlp_iters, torch_epochs=torch_epochs, cnn_epochs=cnn_epochs))
    best_gap: Dict[str, Dict] = {}
    for d in datasets:
        fs = [f for t, f in zip(tasks, folds) if t["dataset"] == d]
        task = fs[0]["task"]
        methods = list(fs[0]["scores"])
        metric = "accuracy" if task == "classification" else "rmse"
        for m in methods:
            vals = np.array([f["scores"][m] for f in fs])
            res.add_row(dataset=d, method=m, metric=metric, mean=round(float(vals.mean()), 4),
                        std=round(float(vals.std()), 4),
                        fit_s=round(float(np.mean([f["fit_s"][m] for f in fs])), 3))
        mean = {m: float(np.mean([f["scores"][m] for f in fs])) for m in methods}
        nn = [m for m in methods if m.startswith("mlp-")]
        better = max if task == "classification" else min
        best = better(nn, key=lambda m: mean[m])
        best_gap[d] = dict(task=task, best=best, best_value=mean[best],
                           **{m: mean[m] for m in methods if m.startswith("gbnn")},
                           torch=mean["torch-mlp-adam"], hgb=mean["hist-gradient-boosting"])
        if task == "regression" and "gbnn_train_loss" in fs[0]:
            tl = fs[0]["gbnn_train_loss"]
            res.add_curve(f"{d}: GBNN train loss (fold 0)", "gbnn", range(1, len(tl) + 1), tl)

    cls_ds = [d for d in datasets if best_gap[d]["task"] == "classification"]
    reg_ds = [d for d in datasets if best_gap[d]["task"] == "regression"]
    for variant in gbnn_variants("classification", quick=quick):
        if cls_ds:
            res.add_claim(f"classification: {variant} CV accuracy within 2 points of the best sklearn MLP "
                          f"(adam/lbfgs/sgd) on every dataset",
                          all(best_gap[d][variant] - best_gap[d]["best_value"] >= -0.02 for d in cls_ds),
                          "; ".join(f"{d}: {best_gap[d][variant]:.4f} vs {best_gap[d]['best']} "
                                    f"{best_gap[d]['best_value']:.4f}" for d in cls_ds))
            res.add_claim(f"classification: {variant} CV accuracy within 2 points of the same network trained end "
                          f"to end in torch (Adam)",
                          all(best_gap[d][variant] - best_gap[d]["torch"] >= -0.02 for d in cls_ds),
                          "; ".join(f"{d}: {best_gap[d][variant]:.4f} vs {best_gap[d]['torch']:.4f}" for d in cls_ds))
        if reg_ds:
            ratios = {d: best_gap[d][variant] / best_gap[d]["best_value"] for d in reg_ds}
            res.add_claim(f"regression: {variant} CV RMSE within 10 % of the best sklearn MLP on every dataset",
                          all(r <= 1.10 for r in ratios.values()),
                          "; ".join(f"{d}: {best_gap[d][variant]:.3f} vs {best_gap[d]['best']} "
                                    f"{best_gap[d]['best_value']:.3f} (x{ratios[d]:.2f})" for d in reg_ds))

    trunc = next((f["truncation"] for t, f in zip(tasks, folds) if t["truncation"] and "truncation" in f), None)
    if trunc is not None:
        ks = trunc["units"]
        mlp_key = [k for k in trunc if k.startswith("mlp")][0]
        labels = [k for k in trunc if k.startswith("gbnn")]
        for i, k in enumerate(ks):
            res.add_row(dataset=f"{trunc_ds} (fold 0)", method=f"truncated to {k} units", metric="accuracy",
                        mean=None, std=None, fit_s=None, **{lab: round(trunc[lab][i], 4) for lab in labels + [mlp_key]})
        panel = f"{trunc_ds}: accuracy vs hidden units kept"
        for lab in labels:
            res.add_curve(panel, lab, ks, trunc[lab])
        res.add_curve(panel, mlp_key + " (units removed by index)", ks, trunc[mlp_key])
        i = ks.index(max(1, int(round(0.25 * units))))
        j = ks.index(max(1, int(round(0.5 * units))))
        m_drop = trunc[mlp_key][-1] - trunc[mlp_key][i]
        for lab in labels:
            g_drop = trunc[lab][-1] - trunc[lab][i]
            res.add_claim(f"truncation: keeping the first 25 % of hidden units costs {lab} less accuracy than the "
                          "one-shot MLP with the same units removed", g_drop < m_drop,
                          f"{ks[i]} of {units} units: {lab} drop {g_drop:.4f}, {mlp_key} drop {m_drop:.4f}")
            res.add_claim(f"truncation: {lab} with half of its units is within 2 points of its full model",
                          trunc[lab][-1] - trunc[lab][j] <= 0.02,
                          f"{ks[j]} units {trunc[lab][j]:.4f} vs {units} units {trunc[lab][-1]:.4f}")

    res.add_row(dataset="digits (CNN, 25 % test)", method="small-cnn end to end", metric="accuracy",
                mean=round(deep["cnn_end_to_end"], 4), std=None, fit_s=round(deep["cnn_fit_s"], 3))
    res.add_row(dataset="digits (CNN, 25 % test)", method=f"frozen features + gbnn head ({deep['head_units']} units)",
                metric="accuracy", mean=round(deep["cnn_gbnn_head"], 4), std=None, fit_s=round(deep["head_fit_s"], 3))
    res.add_claim("deep variant: a GBNN head on frozen CNN features is within 2 points of the CNN trained end to end",
                  deep["cnn_gbnn_head"] >= deep["cnn_end_to_end"] - 0.02,
                  f"{deep['cnn_gbnn_head']:.4f} vs {deep['cnn_end_to_end']:.4f}")
    res.meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    res.add_note("fit_s is the mean wall time of one fit on a shared, loaded 2-core CPU; compare within a row block")
    return res
