import math

import pytest
import torch
from torch.nn import functional as F

from gradkit_recoding.model import (EnsembleVariance, FixedStep, LearnedStep, MCDropoutVariance, MLPStep,
                                    RecodingLSTM, SurprisalSignal, recode)

V, E, H = 11, 5, 4


def _pair(alpha=0.0, layers=2, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    rec = RecodingLSTM(V, E, H, layers, alpha=alpha, **kw).to(dtype)
    base = RecodingLSTM(V, E, H, layers, recoding=False).to(dtype)
    base.load_state_dict({k: v for k, v in rec.state_dict().items() if not k.startswith(("signal", "steps"))})
    return rec, base


def _ids(b=3, t=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, t), generator=g), torch.randint(0, V, (b, t), generator=g)


def test_plain_lstm_matches_torch_lstm():
    _, base = _pair()
    ref = torch.nn.LSTM(E, H, 2, batch_first=True).double()
    with torch.no_grad():
        for l, cell in enumerate(base.cells):
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{n}_l{l}").copy_(getattr(cell, n))
    x, _ = _ids()
    out, _ = ref(base.embedding(x))
    torch.testing.assert_close(base(x).logits, base.decoder(out), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("signal", ["surprisal-code", "surprisal-nll", "mc-dropout", "ensemble"])
def test_alpha_zero_is_exactly_the_baseline(signal):
    rec, base = _pair(alpha=0.0, signal=signal)
    x, y = _ids()
    o_r, o_b = rec(x, targets=y), base(x, targets=y)
    assert torch.equal(o_r.logits, o_b.logits)
    for (hr, cr), (hb, cb) in zip(o_r.hidden, o_b.hidden):
        assert torch.equal(hr, hb) and torch.equal(cr, cb)
    assert (o_r.grad_norms > 0).any()  # the signal and its gradient were computed, the step was zero
    F.cross_entropy(o_r.logits.reshape(-1, V), y.reshape(-1)).backward()
    F.cross_entropy(o_b.logits.reshape(-1, V), y.reshape(-1)).backward()
    for (n, pr), pb in zip(rec.named_parameters(), base.parameters()):
        assert torch.equal(pr.grad, pb.grad), n


def test_one_layer_step_by_hand():
    """1 layer, nll surprisal: g_h = Wᵀ(softmax(o) − e_y), g_c = g_h ⊙ σ(o_gate) ⊙ (1 − tanh²c)."""
    alpha = 0.3
    rec, base = _pair(alpha=alpha, layers=1, signal="surprisal-nll")
    x, y = _ids(t=1)
    h, c = base(x).hidden[0]
    logits = base.decoder(h)
    g_h = (F.softmax(logits, -1) - F.one_hot(y[:, 0], V).double()) @ base.decoder.weight
    cell = base.cells[0]
    gates = F.linear(base.embedding(x[:, 0]), cell.weight_ih, cell.bias_ih) + cell.bias_hh
    o_gate = torch.sigmoid(gates.chunk(4, -1)[3])
    g_c = g_h * o_gate * (1 - torch.tanh(c) ** 2)
    out = rec(x, targets=y)
    h_r, c_r = out.hidden[0]
    torch.testing.assert_close(h_r, h - alpha * g_h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_r, c - alpha * g_c, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.logits[:, 0], rec.decoder(h - alpha * g_h), rtol=1e-10, atol=1e-12)


def test_code_form_surprisal_by_hand():
    """code form δ = 2^{−log₂ σ(z_y)} = 1/σ(z_y); ∂δ/∂h = −(1 − σ)/σ · W[y]."""
    alpha = 0.2
    rec, base = _pair(alpha=alpha, layers=1, signal="surprisal-code", states=("h",))
    x, y = _ids(t=1)
    h, c = base(x).hidden[0]
    z = base.decoder(h).gather(-1, y[:, :1])
    s = torch.sigmoid(z)
    g_h = -((1 - s) / s) * base.decoder.weight[y[:, 0]]
    out = rec(x, targets=y)
    torch.testing.assert_close(out.deltas[:, 0], (1 / s).squeeze(-1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.hidden[0][0], h - alpha * g_h, rtol=1e-10, atol=1e-12)
    assert torch.equal(out.hidden[0][1], c)  # c not selected: untouched


def _ref_delta(model, x_t, y_t, pert, seed):
    """δ at one step from zero states, with additive perturbations of every layer's (h, c) (float64)."""
    inp = model.embedding(x_t)
    h = None
    for l, cell in enumerate(model.cells):
        z = inp.new_zeros(inp.shape[0], H)
        gates = F.linear(inp, cell.weight_ih, cell.bias_ih) + F.linear(z, cell.weight_hh, cell.bias_hh)
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(i) * torch.tanh(g) + pert[l][1]
        h = torch.sigmoid(o) * torch.tanh(c) + pert[l][0]
        inp = h
    torch.manual_seed(seed)
    return model.signal(model.decoder(h), y_t, hidden_top=h, decoder=model.decoder)


@pytest.mark.parametrize("signal", ["surprisal-code", "surprisal-nll", "mc-dropout", "mc-dropout-logits",
                                    "ensemble"])
def test_recoding_gradient_matches_finite_differences(signal):
    alpha = 0.5
    rec, base = _pair(alpha=alpha, layers=2, signal=signal)
    x, y = _ids(b=2, t=1)
    torch.manual_seed(7)
    out = rec(x, targets=y)
    ref = base(x).hidden
    eps = 1e-6
    for l in range(2):
        for k in range(2):  # h, c
            g_model = (ref[l][k] - out.hidden[l][k]) / alpha
            g_fd = torch.zeros_like(g_model)
            for j in range(H):
                pert = [[torch.zeros(2, H, dtype=torch.float64) for _ in range(2)] for _ in range(2)]
                pert[l][k][:, j] = eps
                up = _ref_delta(rec, x[:, 0], y[:, 0], pert, 7)
                pert[l][k][:, j] = -eps
                dn = _ref_delta(rec, x[:, 0], y[:, 0], pert, 7)
                g_fd[:, j] = (up - dn) / (2 * eps)
            assert g_fd.abs().max() > 1e-6
            torch.testing.assert_close(g_model, g_fd, rtol=1e-5, atol=1e-8)


def test_recoding_lowers_the_signal_it_descends():
    rec, base = _pair(alpha=0.05, layers=2, signal="surprisal-nll", seed=3)
    x, y = _ids(b=8, t=5)
    out = rec(x, targets=y)
    after = -F.log_softmax(out.logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    # at every step the re-decoded gold surprisal is below the pre-recoding one (first-order descent)
    assert (after < out.deltas).all()


def _cross_step_grad(detach):
    torch.manual_seed(0)
    m = RecodingLSTM(V, E, H, 2, alpha=0.3, detach=detach).double()
    x, y = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[2, 5], [4, 6]])
    emb = m.embedding
    out = m(x, targets=y)
    g = torch.autograd.grad(out.logits[:, 1].sum(), emb.weight, allow_unused=True)[0]
    return g[x[:, 0]] if g is not None else None, x


def test_detach_state_cuts_gradients_across_steps():
    g, x = _cross_step_grad("state")
    assert x[0, 0] not in x[:, 1] and x[1, 0] not in x[:, 1]
    assert g is None or torch.count_nonzero(g) == 0
    g, _ = _cross_step_grad("grad")
    assert g is not None and g.abs().max() > 1e-8


def test_detach_none_adds_second_order_term_and_grad_mode_does_not():
    x, y = _ids()
    grads = {}
    for mode in ("grad", "none"):
        torch.manual_seed(0)
        m = RecodingLSTM(V, E, H, 2, alpha=0.3, detach=mode, signal="surprisal-nll").double()
        out = m(x, targets=y)
        F.cross_entropy(out.logits.reshape(-1, V), y.reshape(-1)).backward()
        grads[mode] = (out.logits.detach(), m.decoder.weight.grad.clone(), m.cells[0].weight_ih.grad.clone())
    assert torch.equal(grads["grad"][0], grads["none"][0])  # same forward
    assert not torch.allclose(grads["grad"][2], grads["none"][2])  # second-order path reaches the weights


def test_grad_mode_treats_recoding_gradient_as_constant():
    """detach='grad': ∂h̃/∂h = I, so dL/dh through the recoding step equals dL/dh̃."""
    s = torch.randn(3, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(H, dtype=torch.float64)
    delta = (s.tanh() @ w) ** 2
    (rec,), (g,) = recode([s], delta, [0.7])
    gl = torch.autograd.grad(rec.sum(), s)[0]
    torch.testing.assert_close(gl, torch.ones_like(s))
    torch.testing.assert_close(rec, (s - 0.7 * torch.autograd.grad(delta.sum(), s)[0]).detach())


def test_recode_replaces_nonfinite_gradients_by_zero():
    s = torch.tensor([[0.0, 1.0]], requires_grad=True)
    delta = torch.sqrt(s).sum(-1)  # ∂/∂s at 0 is inf
    (rec,), (g,) = recode([s], delta, [1.0])
    assert torch.isfinite(rec).all() and g[0, 0] == 0 and g[0, 1] == pytest.approx(0.5)


@pytest.mark.parametrize("step", ["learned", "mlp"])
def test_learned_step_sizes_receive_lm_gradient(step):
    torch.manual_seed(0)
    m = RecodingLSTM(V, E, H, 2, alpha=0.2, step=step, step_kwargs={"window": 3} if step == "mlp" else None)
    if step == "mlp":  # make the ReLU output active
        for pl in m.steps:
            for p in pl:
                torch.nn.init.constant_(p.net[-2].bias, 0.1)
    x, y = _ids()
    out = m(x, targets=y)
    F.cross_entropy(out.logits.reshape(-1, V), y.reshape(-1)).backward()
    grads = [p.grad for p in m.steps.parameters()]
    assert all(g is not None for g in grads) and max(float(g.abs().max()) for g in grads) > 0
    assert (out.steps >= 0).all() and (out.steps > 0).float().mean() > 0.5


def test_step_predictors_values():
    st = torch.randn(2, H)
    assert float(FixedStep(0.25)(st, [], None, None)) == 0.25
    ls = LearnedStep(init=-1.0 + 1.0, eps=1e-5)
    assert float(ls(st, [], None, None).detach()) == pytest.approx(1e-5)
    mlp = MLPStep(H, window=3, layers=(6,))
    a = mlp(st, [torch.randn(2, H)], None, None)
    assert a.shape == (2, 1) and (a >= 0).all()


def test_mc_dropout_variance_by_hand_and_prior_term():
    sig = MCDropoutVariance(num_samples=4, p=0.5, on="logits", prior_scale=2.0, weight_decay=0.5, data_length=8)
    logits = torch.randn(3, V)
    torch.manual_seed(5)
    d = sig(logits)
    torch.manual_seed(5)
    samples = F.dropout(logits.unsqueeze(0).expand(4, 3, V), 0.5, training=True)
    ref = F.softmax(samples, -1).var(0).sum(-1) + 2 * 0.5 * 4.0 / (2 * 8 * 0.5)
    torch.testing.assert_close(d, ref)
    assert sig.prior_term == pytest.approx(0.5)


def test_ensemble_anchored_loss_trains_heads():
    torch.manual_seed(0)
    ens = EnsembleVariance(H, V, num_members=3)
    h, y = torch.randn(16, H), torch.randint(0, V, (16,))
    opt = torch.optim.SGD(ens.parameters(), lr=0.5)
    first = float(ens.anchored_loss(h, y).detach())
    for _ in range(20):
        opt.zero_grad()
        ens.anchored_loss(h, y).backward()
        opt.step()
    assert float(ens.anchored_loss(h, y).detach()) < first - 0.1


def test_eval_under_no_grad_still_recodes():
    rec, base = _pair(alpha=0.5, signal="mc-dropout")
    x, _ = _ids()
    rec.eval()
    with torch.no_grad():
        out = rec(x)
    assert not out.logits.requires_grad
    assert (out.grad_norms > 0).all() and not torch.allclose(out.logits, base(x).logits)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw, err", [
    (dict(signal="entropy"), ValueError), (dict(step="adam"), ValueError), (dict(detach="yes"), ValueError),
    (dict(alpha=-0.1), ValueError), (dict(alpha=float("nan")), ValueError), (dict(alpha=float("inf")), ValueError),
    (dict(states=("h", "x")), ValueError), (dict(states=()), ValueError), (dict(num_layers=0), ValueError),
    (dict(dropout=1.0), ValueError), (dict(hidden_size=2.5), TypeError),
    (dict(signal="mc-dropout", signal_kwargs={"num_samples": 1}), ValueError),
    (dict(signal="mc-dropout", signal_kwargs={"p": float("nan")}), ValueError),
])
def test_bad_construction(kw, err):
    args = dict(vocab_size=V, emb_size=E, hidden_size=H)
    args.update(kw)
    with pytest.raises(err):
        RecodingLSTM(**args)


def test_bad_forward_inputs():
    m = RecodingLSTM(V, E, H, 2)
    x, y = _ids()
    with pytest.raises(ValueError, match="shape"):
        m(x[0])
    with pytest.raises(ValueError, match="shape"):
        m(x[:, :0])
    with pytest.raises(TypeError, match="integer"):
        m(x.float())
    with pytest.raises(ValueError, match="token ids"):
        m(x + V)
    with pytest.raises(ValueError, match="targets"):
        m(x, targets=y[:, :2])
    hid = m.init_hidden(3)
    with pytest.raises(ValueError, match="shape"):
        m(x, hidden=[(h[:2], c) for h, c in hid])
    bad = [(h.clone(), c.clone()) for h, c in hid]
    bad[1][0][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(x, hidden=bad)
    with pytest.raises(ValueError, match="one"):
        m(x, hidden=hid[:1])
    strict = RecodingLSTM(V, E, H, 1, signal=SurprisalSignal("nll", missing="error"))
    with pytest.raises(ValueError, match="targets"):
        strict(x)
