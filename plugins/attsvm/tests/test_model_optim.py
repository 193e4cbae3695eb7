"""Model equations, gradient vs finite differences and the paper's closed form, NormalizedGD steps, helpers."""

import math

import numpy as np
import pytest
import torch

from gradkit_core.testing.optimizers import OptimizerConformance
from gradkit_attsvm.model import AttentionModel, corr, global_tokens, logistic_loss, make_data, optimal_tokens
from gradkit_attsvm.optim import EPS64, NormalizedGD
from gradkit_attsvm.svm import solve_att_svm

D = torch.float64


class TestNormalizedGDConformance(OptimizerConformance):
    component = "normalized-gd"
    component_kwargs = {"lr": 0.1}


class TestNormalizedGDLoopConformance(OptimizerConformance):
    component = "normalized-gd"
    component_kwargs = {"lr": 0.1, "foreach": False}


@pytest.mark.parametrize("foreach", [False, True])
def test_hand_computed_step_is_per_tensor(foreach):
    a = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    b = torch.tensor([[0.5, -1.0], [0.0, 3.0]], dtype=D, requires_grad=True)
    opt = NormalizedGD([a, b], lr=0.1, eps=0.0, foreach=foreach)
    a.grad = torch.tensor([3.0, 4.0], dtype=D)          # ||g|| = 5
    b.grad = torch.tensor([[0.0, -2.0], [0.0, 0.0]], dtype=D)  # ||g|| = 2, normalized separately
    opt.step()
    assert torch.allclose(a.detach(), torch.tensor([1.0 - 0.06, 2.0 - 0.08], dtype=D), atol=1e-15)
    assert torch.allclose(b.detach(), torch.tensor([[0.5, -0.9], [0.0, 3.0]], dtype=D), atol=1e-15)
    assert opt.state[a]["step"] == 1 and opt.state[b]["step"] == 1


def test_step_length_is_lr_whatever_the_gradient_scale_and_eps_is_added():
    p = torch.zeros(3, dtype=D, requires_grad=True)
    opt = NormalizedGD([p], lr=0.25, eps=1e-3)
    p.grad = torch.tensor([0.0, 0.0, 2e-3], dtype=D)
    opt.step()
    assert float(p.detach()[2]) == pytest.approx(-0.25 * 2e-3 / (2e-3 + 1e-3), rel=1e-14)
    for scale in (1e-4, 1.0, 1e8):
        q = torch.ones(4, dtype=D, requires_grad=True)
        o = NormalizedGD([q], lr=0.3)
        q.grad = scale * torch.tensor([1.0, -2.0, 2.0, 4.0], dtype=D)
        o.step()
        assert float((q.detach() - 1).norm()) == pytest.approx(0.3, rel=1e-12)


def test_foreach_and_loop_are_bit_identical():
    torch.manual_seed(0)
    ps = [torch.randn(3, 4, dtype=D, requires_grad=True) for _ in range(5)]
    qs = [p.detach().clone().requires_grad_(True) for p in ps]
    o1, o2 = NormalizedGD(ps, foreach=True), NormalizedGD(qs, foreach=False)
    for _ in range(3):
        gs = [torch.randn(3, 4, dtype=D) for _ in ps]
        for p, q, g in zip(ps, qs, gs):
            p.grad, q.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)


def test_zero_gradient_is_a_zero_step_even_with_eps_zero():
    p = torch.ones(2, dtype=D, requires_grad=True)
    p.grad = torch.zeros(2, dtype=D)
    NormalizedGD([p], eps=0.0).step()
    assert torch.equal(p.detach(), torch.ones(2, dtype=D))


@pytest.mark.parametrize("kw, match", [(dict(lr=-1.0), "lr"), (dict(eps=-1.0), "eps"), (dict(foreach="yes"), "foreach"),
                                       (dict(lr=float("nan")), "lr"), (dict(lr=float("inf")), "lr"),
                                       (dict(eps=float("nan")), "eps"), (dict(eps=float("inf")), "eps")])
def test_optimizer_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        NormalizedGD([torch.zeros(1, requires_grad=True)], **kw)
    opt = NormalizedGD([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match=match):                      # same rule for a later param group
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], **kw})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_in_a_later_group_raises_before_any_group_steps(foreach, bad):
    a = torch.ones(3, dtype=D, requires_grad=True)
    a2 = torch.ones(2, dtype=D, requires_grad=True)
    b = torch.ones(2, dtype=D, requires_grad=True)
    opt = NormalizedGD([{"params": [a, a2]}, {"params": [b], "lr": 0.5}], lr=0.1, foreach=foreach)
    a.grad, a2.grad = torch.ones(3, dtype=D), torch.ones(2, dtype=D)
    b.grad = torch.tensor([1.0, bad], dtype=D)
    with pytest.raises(ValueError, match="non-finite gradient.*group 1"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3, dtype=D)) and torch.equal(b.detach(), torch.ones(2, dtype=D))
    assert len(opt.state) == 0, "no state may be created by a failed step"
    b.grad = torch.tensor([3.0, 4.0], dtype=D)                        # the caller fixes the batch: the step works
    opt.step()
    assert torch.allclose(b.detach(), torch.tensor([1 - 0.5 * 0.6, 1 - 0.5 * 0.8], dtype=D))
    assert opt.state[a]["step"] == 1


def test_lr_set_to_nan_after_construction_is_rejected_at_step():
    p = torch.ones(2, dtype=D, requires_grad=True)
    opt = NormalizedGD([p])
    opt.param_groups[0]["lr"] = float("nan")
    p.grad = torch.ones(2, dtype=D)
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(2, dtype=D))


# ---------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def data():
    return make_data(4, 5, 3, seed=1)


def test_make_data_matches_the_notebooks_recipe(data):
    X, y, Z, v = data
    assert X.dtype == D and X.shape == (4, 5, 3) and Z.shape == (4, 3)
    assert torch.allclose(X.norm(dim=-1), torch.ones(4, 5, dtype=D))
    assert torch.allclose(Z.norm(dim=-1), torch.ones(4, dtype=D))
    assert float(v.norm()) == pytest.approx(1.0) and set(y.tolist()) <= {-1.0, 1.0}
    X2, y2, Z2, v2 = make_data(4, 5, 3, seed=1)
    assert torch.equal(X, X2) and torch.equal(Z, Z2)


def test_forward_is_the_papers_equation(data):
    X, y, Z, v = data
    m = AttentionModel(3, "W", v=v, seed=3)
    out = m(X, Z).detach()
    for i in range(4):
        s = torch.softmax(X[i] @ m.W @ Z[i], dim=0)      # softmax(X W z)
        assert float(out[i]) == pytest.approx(float(v @ X[i].T @ s), abs=1e-14)   # vᵀ Xᵀ s
    kq = AttentionModel(3, "KQ", m=2, v=v, seed=3)
    assert torch.allclose(kq.W, kq.K.detach() @ kq.Q.detach().T)
    s = torch.softmax(X[0] @ kq.K.detach() @ kq.Q.detach().T @ Z[0], dim=0)
    assert torch.allclose(kq.attention(X, Z)[0], s)
    loss = logistic_loss(out, y)
    assert float(loss) == pytest.approx(float(torch.log1p(torch.exp(-y * out)).mean()), rel=1e-13)


def test_self_attention_uses_the_query_token(data):
    X, y, Z, v = data
    sa = AttentionModel(3, "W", cross=False, attn_idx=2, v=v, seed=0)
    ca = AttentionModel(3, "W", cross=True, v=v, seed=0)
    assert torch.allclose(sa(X), ca(X, X[:, 2]))


def _paper_gradient(X, y, Z, v, W):
    """∇L(W) = (1/n) Σ_i ℓ'(y_i f_i) y_i X_iᵀ (diag(s_i) − s_i s_iᵀ) X_i v z_iᵀ,  ℓ'(u) = −1/(1 + e^u)."""
    n = X.shape[0]
    G = torch.zeros_like(W)
    for i in range(n):
        s = torch.softmax(X[i] @ W @ Z[i], dim=0)
        f = v @ X[i].T @ s
        lp = -1.0 / (1.0 + torch.exp(y[i] * f))
        G += lp * y[i] * torch.outer(X[i].T @ (torch.diag(s) - torch.outer(s, s)) @ X[i] @ v, Z[i])
    return G / n


def test_gradient_matches_closed_form_and_finite_differences(data):
    X, y, Z, v = data
    m = AttentionModel(3, "W", v=v, seed=5, init_scale=3.0)
    m.loss(X, y, Z).backward()
    assert torch.allclose(m.W_.grad, _paper_gradient(X, y, Z, v, m.W), atol=1e-13)
    W0 = m.W.clone()
    h = 1e-6
    fd = torch.zeros_like(W0)
    for j in range(3):
        for k in range(3):
            E = torch.zeros_like(W0)
            E[j, k] = h
            with torch.no_grad():
                m.W_.copy_(W0 + E)
                lp = float(m.loss(X, y, Z))
                m.W_.copy_(W0 - E)
                lm = float(m.loss(X, y, Z))
            fd[j, k] = (lp - lm) / (2 * h)
    assert torch.allclose(m.W_.grad, fd, atol=1e-9)


def test_kq_gradient_passes_gradcheck_and_chain_rule(data):
    X, y, Z, v = data
    m = AttentionModel(3, "KQ", m=2, v=v, seed=2)
    K, Q = m.K.detach().clone().requires_grad_(True), m.Q.detach().clone().requires_grad_(True)

    def f(K, Q):
        s = torch.softmax(torch.einsum("ntd,dk,ek,ne->nt", X, K, Q, Z), dim=-1)
        return logistic_loss(torch.einsum("nt,ntd,d->n", s, X, v), y)

    assert torch.autograd.gradcheck(f, (K, Q))
    m.loss(X, y, Z).backward()
    G = _paper_gradient(X, y, Z, v, m.W)              # dL/dW, then dW = dK Qᵀ + K dQᵀ
    assert torch.allclose(m.K.grad, G @ m.Q.detach(), atol=1e-13)
    assert torch.allclose(m.Q.grad, G.T @ m.K.detach(), atol=1e-13)


def test_zero_kq_is_a_stationary_point(data):
    X, y, Z, v = data
    m = AttentionModel(3, "KQ", v=v, init="zero")
    m.loss(X, y, Z).backward()
    assert not m.K.grad.any() and not m.Q.grad.any()


def test_softmax_saturates_on_the_selected_tokens_along_the_svm_direction():
    """Margins of W^mm are >= 1, so at W = R·W^mm: s_α >= 1/(1 + (T−1)e^{−R}) → 1."""
    X, y, Z, v = make_data(6, 8, 10, seed=0)
    ids = global_tokens(X, y, v)
    Wmm = torch.from_numpy(solve_att_svm(X, Z, ids, "fro"))
    m = AttentionModel(10, "W", v=v)
    last = 0.0
    for R in (1.0, 4.0, 16.0, 40.0):
        with torch.no_grad():
            m.W_.copy_(R * Wmm)
        s = m.attention(X, Z).detach()
        sel = s[torch.arange(6), ids]
        assert (sel >= 1 / (1 + 7 * math.exp(-R)) - 1e-9).all()
        assert torch.equal(optimal_tokens(m, X, Z), ids)
        assert float(sel.min()) >= last
        last = float(sel.min())
    assert last > 1 - 1e-12


def test_global_and_local_token_rules():
    X = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], dtype=D)
    v = torch.tensor([0.6, 0.8], dtype=D)
    assert global_tokens(X, torch.tensor([1.0]), v).tolist() == [1]    # scores 0.6, 0.8, −0.6
    assert global_tokens(X, torch.tensor([-1.0]), v).tolist() == [2]   # y = −1 flips them
    m = AttentionModel(2, "W", v=v)
    with torch.no_grad():
        m.W_.copy_(torch.tensor([[5.0, 0.0], [0.0, 0.0]], dtype=D))
    Z = torch.tensor([[1.0, 0.0]], dtype=D)                        # scores x_tᵀ W z = 5, 0, −5
    assert optimal_tokens(m, X, Z).tolist() == [0]
    assert optimal_tokens(m, X, Z, y=torch.tensor([1.0]), rule="global").tolist() == [1]
    with pytest.raises(ValueError, match="rule"):
        optimal_tokens(m, X, Z, rule="best")
    with pytest.raises(ValueError, match="labels"):
        optimal_tokens(m, X, Z, rule="global")


def test_corr():
    A = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=D)
    B = torch.tensor([[2.0, -1.0], [0.0, 0.0]], dtype=D)
    assert corr(A, 3 * A) == pytest.approx(1.0) and corr(A, -A) == pytest.approx(-1.0)
    assert corr(A, B) == pytest.approx(0.0, abs=1e-15)
    assert corr(np.eye(2), np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="zero matrix"):
        corr(A, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="same shape"):
        corr(A, torch.ones(3, 3))


def test_model_bad_input(data):
    X, y, Z, v = data
    with pytest.raises(ValueError, match="param"):
        AttentionModel(3, "QK")
    with pytest.raises(ValueError, match="init"):
        AttentionModel(3, init="ones")
    with pytest.raises(ValueError, match="v must have"):
        AttentionModel(3, v=torch.ones(4))
    m = AttentionModel(3, v=v)
    with pytest.raises(ValueError, match="needs the query tokens"):
        m(X)
    with pytest.raises(ValueError, match="Z must have shape"):
        m(X, Z[:, :2])
    with pytest.raises(ValueError, match="d = 3"):
        AttentionModel(3, v=v)(torch.ones(4, 5, 2, dtype=D), torch.ones(4, 2, dtype=D))
    with pytest.raises(ValueError, match="shape"):
        m(X[0], Z)
    with pytest.raises(ValueError, match="labels"):
        m.loss(X, torch.tensor([0.0, 1.0, 1.0, 1.0]), Z)
