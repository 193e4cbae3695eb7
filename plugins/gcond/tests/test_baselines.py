"""PCGrad / CAGrad / GradNorm / linear sum against hand computations on 2-D examples."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from gradkit_gcond.baselines import CAGrad, GradNorm, LinearSum, PCGrad, cagrad_weights, pcgrad_weights

torch.set_num_threads(1)


class Theta(nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.theta * x.mean()


def linear(vecs):
    return {k: (lambda o, y, v=torch.tensor(v, dtype=torch.float32): o @ v) for k, v in vecs.items()}


def ones():
    return torch.ones(2), None


def grad_of(cls, vecs, **kw):
    m = Theta(len(next(iter(vecs.values()))))
    agg = cls(m, linear(vecs), None, 2, **kw)
    agg.step(ones)
    return m.theta.grad.double().numpy(), agg


def test_linear_sum():
    g, _ = grad_of(LinearSum, {"a": (1.0, 2.0), "b": (-3.0, 0.5)})
    assert np.allclose(g, [-2.0, 2.5])


def test_pcgrad_hand_computed_2d():
    # g1=(1,0), g2=(-1,1): g1.g2=-1 < 0
    # g1' = g1 - (-1/2) g2 = (0.5, 0.5);  g2' = g2 - (-1/1) g1 = (0, 1);  sum = (0.5, 1.5)
    g, _ = grad_of(PCGrad, {"a": (1.0, 0.0), "b": (-1.0, 1.0)})
    assert np.allclose(g, [0.5, 1.5], atol=1e-6)
    # no conflict: plain sum
    g, _ = grad_of(PCGrad, {"a": (1.0, 0.0), "b": (1.0, 1.0)})
    assert np.allclose(g, [2.0, 1.0], atol=1e-6)


def test_pcgrad_matches_torchjd_when_installed():
    aggregation = pytest.importorskip("torchjd.aggregation")
    J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    ref = aggregation.PCGrad()(J).numpy()
    ours = pcgrad_weights((J @ J.T).numpy()) @ J.numpy()
    assert np.allclose(ours, ref, atol=1e-9)


def _cagrad_bruteforce(g1, g2, c):
    g1, g2 = np.asarray(g1, float), np.asarray(g2, float)
    g0 = (g1 + g2) / 2
    best = None
    for w in np.linspace(0, 1, 200001):
        gw = w * g1 + (1 - w) * g2
        f = gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw)
        if best is None or f < best[0]:
            best = (f, gw)
    gw = best[1]
    d = g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw
    return d / (1 + c ** 2)


@pytest.mark.parametrize("g1,g2", [((1.0, 0.0), (-1.0, 1.0)), ((2.0, 1.0), (-0.5, 1.5)), ((1.0, 0.2), (0.8, 0.6))])
def test_cagrad_matches_bruteforce_2d(g1, g2):
    g, _ = grad_of(CAGrad, {"a": g1, "b": g2}, c=0.5)
    assert np.allclose(g, _cagrad_bruteforce(g1, g2, 0.5), atol=1e-4)


def test_cagrad_properties():
    # c = 0: the mean gradient, no rescale effect
    d, _ = cagrad_weights(np.array([[1.0, -1.0], [-1.0, 2.0]]), c=0.0)
    assert np.allclose(d, [0.5, 0.5])
    # conflict-averse: with c=0.5 the update has a positive inner product with both conflicting gradients
    g, _ = grad_of(CAGrad, {"a": (1.0, 0.0), "b": (-1.0, 0.3)}, c=0.5)
    assert g @ np.array([1.0, 0.0]) > 0 and g @ np.array([-1.0, 0.3]) > 0


def test_gradnorm_weight_update_follows_equation():
    # shared layer = theta; task gradients a=(3,0), b=(0,1): a_i = 3, 1; L_i(0) = theta.v at theta=(1,1)
    vecs = {"a": (3.0, 0.0), "b": (0.0, 1.0)}
    m = Theta()
    with torch.no_grad():
        m.theta.fill_(1.0)
    agg = GradNorm(m, linear(vecs), None, 2, alpha=1.5, weight_lr=0.1)
    agg.step(ones)
    # the written gradient uses the current weights (1, 1)
    assert np.allclose(m.theta.grad.numpy(), [3.0, 1.0])
    # step 1: r = 1, G = (3, 1), target = mean G = 2: dL/dw = sign(G - 2) * a = (+3, -1)
    # first Adam step moves each weight by lr * sign(grad): w = (0.9, 1.1), renormalised to sum 2 (already)
    assert np.allclose(agg.weights.numpy(), [0.9, 1.1], atol=1e-6)
    # the equation itself on given numbers: losses (1.5, 0.5) with L0 (1, 1): ratio (1.5, .5), r = (1.5, .5)
    agg.weights = torch.tensor([1.0, 1.0], dtype=torch.float64)
    agg.initial_losses = torch.tensor([1.0, 1.0], dtype=torch.float64)
    a = torch.tensor([2.0, 2.0], dtype=torch.float64)
    grad = agg.weight_gradient(a, torch.tensor([1.5, 0.5], dtype=torch.float64))
    target = 2.0 * torch.tensor([1.5 ** 1.5, 0.5 ** 1.5], dtype=torch.float64)
    assert torch.allclose(grad, torch.sign(torch.tensor([2.0, 2.0], dtype=torch.float64) - target) * a)
    assert grad[0] < 0 < grad[1]  # the slower-training task (higher loss ratio) gets its weight raised


def test_gradnorm_weights_sum_to_k_and_state_round_trip():
    vecs = {"a": (3.0, 0.0), "b": (0.0, 1.0), "c": (1.0, 1.0)}
    m = Theta()
    agg = GradNorm(m, {k: (lambda o, y, v=torch.tensor(v): (o @ v) ** 2 + 1.0) for k, v in vecs.items()}, None, 2)
    for _ in range(3):
        agg.step(ones)
        assert float(agg.weights.sum()) == pytest.approx(3.0)
    sd = agg.state_dict()
    other = GradNorm(m, agg.loss_fns, None, 2)
    other.load_state_dict(sd)
    assert torch.equal(other.weights, agg.weights) and torch.equal(other.initial_losses, agg.initial_losses)


def test_gradnorm_bad_shared_param():
    with pytest.raises(ValueError, match="shared_param"):
        GradNorm(Theta(), linear({"a": (1, 0), "b": (0, 1)}), None, 2, shared_param="nope")
