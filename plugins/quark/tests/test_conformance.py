"""The core's reward conformance suite for every Quark reward aggregator."""

import torch

from gradkit_core.testing.rewards import RewardConformance

OBJ = ["correct", "safety", "format"]


def _batches():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 50.0, 0.2], dtype=torch.float64)
    return [torch.randn(8, 3, generator=g, dtype=torch.float64) * scale for _ in range(3)]


class _Quark(RewardConformance):
    component_kwargs = {"objectives": OBJ}

    def example_batches(self):
        return _batches()

    def prepare(self, reward):
        if getattr(reward, "needs_reference", False):
            reward.fit_reference(_batches()[0] * 0.5 + 1.0)


class TestRFN(_Quark):
    component = "rfn"


class TestTriFactor(_Quark):
    component = "tri-factor"
    component_kwargs = {"objectives": OBJ, "safety": ["safety"]}


class TestRawSum(_Quark):
    component = "raw-sum"


class TestGroupNorm(_Quark):
    component = "group-norm"
    component_kwargs = {"objectives": OBJ, "group_size": 4}


class TestBatchZScore(_Quark):
    component = "batch-zscore"


class TestPopArt(_Quark):
    component = "popart"


class TestFixedWeights(_Quark):
    component = "fixed-weights"
    component_kwargs = {"objectives": OBJ, "weights": [1.0, 0.5, 2.0]}


class TestTriFactorViolationRate(_Quark):
    component = "tri-factor"
    component_kwargs = {"objectives": OBJ, "safety": ["safety"], "risk": "violation-rate"}


class TestTriFactorSafetyGate(_Quark):
    component = "tri-factor"
    component_kwargs = {"objectives": OBJ, "safety": ["safety"], "safety_gate": True}
