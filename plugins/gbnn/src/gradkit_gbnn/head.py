"""GBNN's deep variant: gradient-boost the last hidden layer and the output of a torch model.

The feature extractor is frozen; its outputs on the training data are the inputs of a
:class:`~gradkit_gbnn.boosting.GBNNClassifier` (or regressor), and the assembled GBNN network is
appended to the extractor, so the result is one ``nn.Sequential`` that predicts from raw inputs.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from .boosting import GBNNClassifier, GBNNRegressor


class PooledFeatures(nn.Module):
    """Penultimate features of a ``gradkit_support.models.SmallCNN``: input normalisation, the conv
    stack and global average pooling (everything but ``head``)."""

    def __init__(self, cnn: nn.Module):
        super().__init__()
        for attr in ("features", "input_mean", "input_std"):
            if not hasattr(cnn, attr):
                raise TypeError(f"PooledFeatures expects a SmallCNN-like module with .{attr}; got {type(cnn).__name__}")
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.features((x - self.cnn.input_mean) / self.cnn.input_std).mean(dim=(2, 3))


def _as_arrays(data) -> Tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data):
        x, y = data
        return torch.as_tensor(x), torch.as_tensor(y)
    xs, ys = [], []
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError("data must be a pair (x, y) of tensors or an iterable of (x, y) batches")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("data holds no batches")
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Features of ``x`` under the frozen ``model`` (eval mode) as a float64 array ``(N, D)``."""
    model.eval()
    out = [model(x[i:i + batch_size]).flatten(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


def boost_head(model: nn.Module, x, y, task: str = "classification", **gbnn_params) -> nn.Sequential:
    """GB-train a one-hidden-layer head on ``model``'s frozen features; returns ``nn.Sequential(model, head)``.

    The head outputs logits (classification; binary: one logit) or predictions (regression); the
    fitted estimator is kept as ``result.estimator``.
    """
    trainer = GBHeadTrainer(model, task=task, **gbnn_params)
    return trainer.fit((x, y))


class GBHeadTrainer:
    """Trainer ``gb-nn``: ``GBHeadTrainer(feature_model, **gbnn_params).fit(data)``.

    ``data`` is a pair ``(x, y)`` of tensors or an iterable of ``(x, y)`` batches.  ``fit`` freezes
    ``feature_model`` (``requires_grad_(False)``), boosts a GBNN head on its outputs and returns
    ``nn.Sequential(feature_model, head)`` in eval mode (``.estimator`` holds the GBNN estimator).
    """

    def __init__(self, model: nn.Module, task: str = "classification", **gbnn_params):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (the frozen feature extractor), got {type(model).__name__}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.model, self.task = model, task
        est = GBNNClassifier if task == "classification" else GBNNRegressor
        self.estimator = est(**gbnn_params)

    def fit(self, data) -> nn.Sequential:
        x, y = _as_arrays(data)
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.model.requires_grad_(False)
        feats = extract(self.model, x)
        self.estimator.fit(feats, y.numpy())
        if self.task == "classification" and not np.array_equal(self.estimator.classes_, np.arange(len(self.estimator.classes_))):
            raise ValueError(f"classification labels must be 0..K-1 so that logit k is class k; got classes "
                             f"{self.estimator.classes_.tolist()}")
        dtype = next(self.model.parameters(), torch.empty(0)).dtype
        head = self.estimator.to_torch(dtype=dtype)
        net = nn.Sequential(self.model, head).eval()
        net.estimator = self.estimator
        return net
