"""Benchmark: GBNN fit/predict time next to what a user would otherwise pick, in one process.

Fit: gradkit's GBNN, the authors' ``gbnn`` package (PyPI 0.0.2, if installed; same stage
learner, same defaults), scikit-learn ``MLPClassifier`` of the same size (lbfgs and adam) and
``HistGradientBoostingClassifier``.  Predict: GBNN through the assembled network (one matrix
product per layer), through the staged sum (T small networks), through the exported torch module,
the authors' staged prediction, and the MLP.  Everything is reported as a ratio (fit: to the
lbfgs MLP; predict: to GBNN's assembled network), each time the median of ``reps`` runs.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable, Dict

import numpy as np

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar


def _peer():
    """The authors' classifier, or None.  Its class lists ``ClassifierMixin`` after ``BaseEstimator``,
    which scikit-learn >= 1.6 no longer reads as a classifier (``is_classifier`` is False and ``fit``
    takes its regression branch), so the classifier tag is set here; nothing else changes."""
    try:
        import gbnn  # type: ignore  # the authors' package
        from sklearn.utils import ClassifierTags
    except Exception:  # noqa: BLE001 - optional reference
        return None

    class AuthorsGBNN(gbnn.GNEGNEClassifier):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
            return tags

    return AuthorsGBNN


def _median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(*, quick: bool = False, out=None, seed: int = 0, progress: bool = True) -> Result:
    import torch
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    from .boosting import GBNNClassifier

    units = 20 if quick else 100
    fit_reps, pred_reps = (1, 5) if quick else (2, 20)
    datasets = {"breast_cancer": load_breast_cancer} if quick else {"breast_cancer": load_breast_cancer,
                                                                    "digits": load_digits}
    Peer = _peer()
    res = Result("gbnn", title=f"GBNN fit/predict time ({units} hidden units), ratios in one process")
    res.meta.update(dict(quick=quick, seed=seed, units=units, fit_reps=fit_reps, pred_reps=pred_reps,
                         torch_threads=torch.get_num_threads(), peer_installed=Peer is not None))
    if Peer is None:
        res.add_note("the authors' package is not installed (pip install --no-deps gbnn==0.0.2): its rows are skipped")
    for name, loader in progress_bar(datasets.items(), desc="gbnn bench", enabled=progress):
        X, y = loader(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
        sc = StandardScaler().fit(Xtr)
        Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
        makers: Dict[str, Callable[[], object]] = {
            "gbnn (gradkit)": lambda: GBNNClassifier(total_units=units, random_state=seed),
            f"mlp-lbfgs ({units} units)": lambda: MLPClassifier((units,), activation="logistic", solver="lbfgs",
                                                                random_state=seed),
            f"mlp-adam ({units} units)": lambda: MLPClassifier((units,), activation="logistic", solver="adam",
                                                               random_state=seed),
            "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(random_state=seed),
        }
        if Peer is not None:
            makers["gbnn (authors' package)"] = lambda: Peer(total_nn=units, random_state=seed)
        fitted, fit_s, acc = {}, {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            for label, make in makers.items():
                def _fit(make=make, label=label):
                    model = make()
                    model.fit(Xtr, ytr)  # (the authors' fit returns None)
                    fitted[label] = model
                fit_s[label] = _median_time(_fit, fit_reps)
                acc[label] = float(np.mean(fitted[label].predict(Xte) == yte))
        ref = fit_s[f"mlp-lbfgs ({units} units)"]
        for label in makers:
            res.add_row(dataset=name, phase="fit", method=label, seconds=round(fit_s[label], 4),
                        ratio_to="mlp-lbfgs", ratio=round(fit_s[label] / ref, 2), test_accuracy=round(acc[label], 4))

        gb = fitted["gbnn (gradkit)"]
        net = gb.to_torch()
        Xte_t = torch.as_tensor(Xte, dtype=torch.float32)

        def _torch_predict():
            with torch.no_grad():
                return net(Xte_t)

        def _staged():
            for F in gb.staged_decision_function(Xte):
                pass
            return F

        preds: Dict[str, Callable[[], object]] = {
            "gbnn assembled network (numpy)": lambda: gb.predict_proba(Xte),
            "gbnn staged sum (T small networks)": _staged,
            "gbnn exported torch module": _torch_predict,
            f"mlp-lbfgs ({units} units)": lambda: fitted[f"mlp-lbfgs ({units} units)"].predict_proba(Xte),
        }
        if Peer is not None:
            preds["gbnn (authors' package, staged)"] = lambda: fitted["gbnn (authors' package)"].predict_proba(Xte)
        pred_s = {label: _median_time(fn, pred_reps) for label, fn in preds.items()}
        base = pred_s["gbnn assembled network (numpy)"]
        for label, s in pred_s.items():
            res.add_row(dataset=name, phase="predict", method=label, seconds=round(s, 6), ratio_to="gbnn assembled",
                        ratio=round(s / base, 2), test_accuracy=None)
    res.add_note("the machine was a shared 2-core CPU under load: read the ratios, not the seconds")
    return res
