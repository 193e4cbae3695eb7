"""Unlearning metrics of the SalUn paper (Sec. 5, "Evaluation metrics").

* UA  = 1 - Acc(D_f)          unlearning accuracy
* RA  = Acc(D_r)              remaining accuracy
* TA  = Acc(D_test)           testing accuracy
* MIA-Efficacy: an SVC (RBF, C=3, gamma="auto", as the official ``SVC_MIA``) is fit
  on the model's confidence in the true label, members = retain examples,
  non-members = test examples (equal counts); MIA-Efficacy is the share of D_f
  it predicts to be non-members (higher = more forgotten).
* RTE: wall-clock seconds of an unlearning run.
* Avg.Gap: mean over metrics of ``|metric - Retrain's metric|``.

Data arguments are iterables of ``(x, y)`` batches or ``(x, y)`` tensor pairs.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from gradkit_support.models import logits_of

from .unlearn import check_batch, check_data

METRIC_KEYS = ("UA", "RA", "TA", "MIA")


def _tensors(data: Any, role: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return check_batch(data, role)
    data = check_data(data, role)
    xs, ys = [], []
    for batch in data:
        x, y = check_batch(batch, role)
        xs.append(x)
        ys.append(y)
    if not xs or sum(len(y) for y in ys) == 0:
        raise ValueError(f"the {role} set is empty; the metric is undefined")
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def _probs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([F.softmax(logits_of(model(x[i : i + batch_size])).float(), -1) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def _acc(model: torch.nn.Module, data: Any, role: str) -> float:
    x, y = _tensors(data, role)
    if len(y) == 0:
        raise ValueError(f"the {role} set is empty; accuracy is undefined")
    return float((_probs(model, x).argmax(-1) == y).float().mean())


def unlearning_accuracy(model: torch.nn.Module, forget: Any) -> float:
    """UA = 1 - accuracy on the forget set (in [0, 1]; the target is Retrain's UA)."""
    return 1.0 - _acc(model, forget, "forget")


def retain_accuracy(model: torch.nn.Module, retain: Any) -> float:
    """RA = accuracy on the retain set (higher is better)."""
    return _acc(model, retain, "retain")


def test_accuracy(model: torch.nn.Module, test: Any) -> float:
    """TA = accuracy on the test set (higher is better)."""
    return _acc(model, test, "test")


test_accuracy.__test__ = False  # not a pytest test


def confidence(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's softmax probability of the true label (the MIA feature)."""
    return _probs(model, x).gather(1, y[:, None]).squeeze(1)


def mia_efficacy(model: torch.nn.Module, forget: Any, retain: Any, test: Any, *, seed: int = 0,
                 feature: str = "confidence") -> float:
    """Share of D_f that an SVC trained on retain (member) vs test (non-member) calls non-member.

    Higher means the forget set looks less like training data.  ``feature`` is
    ``"confidence"`` (true-label probability, the paper's reported variant) or
    ``"entropy"`` of the predicted distribution.  The retain set is subsampled to
    the size of the test set (seeded) as in the official code.
    """
    from sklearn.svm import SVC

    xf, yf = _tensors(forget, "forget")
    xr, yr = _tensors(retain, "retain")
    xt, yt = _tensors(test, "test")
    n = min(len(xr), len(xt))
    g = torch.Generator()
    g.manual_seed(seed)
    idx_r = torch.randperm(len(xr), generator=g)[:n]
    idx_t = torch.randperm(len(xt), generator=g)[:n]

    def feat(x, y):
        if feature == "confidence":
            return confidence(model, x, y).numpy()[:, None]
        if feature == "entropy":
            p = _probs(model, x).clamp_min(1e-30)
            return (-(p * p.log()).sum(-1)).numpy()[:, None]
        raise ValueError(f"feature must be 'confidence' or 'entropy', got {feature!r}")

    X = np.concatenate([feat(xr[idx_r], yr[idx_r]), feat(xt[idx_t], yt[idx_t])])
    Y = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(X, Y)
    return float(1.0 - clf.predict(feat(xf, yf)).mean())


def unlearning_metrics(model: torch.nn.Module, forget: Any, retain: Any, test: Any, *, seed: int = 0) -> Dict[str, float]:
    """``{"UA", "RA", "TA", "MIA"}`` for one model (fractions in [0, 1])."""
    return {
        "UA": unlearning_accuracy(model, forget),
        "RA": retain_accuracy(model, retain),
        "TA": test_accuracy(model, test),
        "MIA": mia_efficacy(model, forget, retain, test, seed=seed),
    }


def avg_gap(metrics: Dict[str, float], reference: Dict[str, float], keys: Sequence[str] = METRIC_KEYS) -> float:
    """Avg.Gap = mean_k |metrics[k] - reference[k]| (reference = Retrain; lower is better)."""
    missing = [k for k in keys if k not in metrics or k not in reference]
    if missing:
        raise ValueError(f"avg_gap needs the keys {list(keys)} in both dicts; missing {missing}")
    return float(np.mean([abs(float(metrics[k]) - float(reference[k])) for k in keys]))


def run_time(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """RTE: wall-clock seconds of ``fn(*args, **kwargs)`` (lower is better)."""
    if not callable(fn):
        raise TypeError(f"run_time needs a callable, got {type(fn).__name__}")
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
