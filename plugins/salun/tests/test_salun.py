"""SalUn's weight saliency, masked update, soft variant and the baselines' defining properties."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_salun import unlearn as U


def _linear(seed=0, d=5, c=3):
    torch.manual_seed(seed)
    return nn.Linear(d, c)


def _batches(seed=0, n=12, d=5, c=3, bs=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)], x, y


# ---------------------------------------------------------------------- saliency
def test_saliency_gradient_is_abs_of_summed_negative_ce_gradient_by_hand():
    """g = |Σ_b ∇(-CE_b)|; for a linear layer ∇_W CE_b = (softmax - onehot)ᵀ x / B."""
    model = _linear()
    batches, _, _ = _batches()
    W, b = model.weight.detach(), model.bias.detach()
    gW, gb = torch.zeros_like(W), torch.zeros_like(b)
    for x, y in batches:
        p = torch.softmax(x @ W.T + b, -1)
        r = (p - F.one_hot(y, 3).float()) / len(x)
        gW -= r.T @ x
        gb -= r.sum(0)
    sal = U.saliency_gradients(model, batches)
    torch.testing.assert_close(sal["weight"], gW.abs())
    torch.testing.assert_close(sal["bias"], gb.abs())
    assert model.weight.grad is None and model.bias.grad is None, "saliency must not leave .grad behind"


def test_saliency_uses_eval_mode_and_restores_training_flag():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.9), nn.Linear(8, 3))
    model.train()
    batches, _, _ = _batches()
    a = U.saliency_gradients(model, batches)
    b = U.saliency_gradients(model, batches)
    for k in a:  # dropout off (eval mode) -> identical gradients
        torch.testing.assert_close(a[k], b[k])
    assert model.training


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_mask_is_global_top_ratio(ratio):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(3)]
    sal = U.saliency_gradients(model, batches)
    mask = U.saliency_mask(model, batches, ratio=ratio)
    flat_s = torch.cat([sal[k].flatten() for k in sal])
    flat_m = torch.cat([mask[k].flatten() for k in sal])
    assert set(flat_m.unique().tolist()) <= {0.0, 1.0}
    assert int(flat_m.sum()) == int(ratio * flat_s.numel())
    # one global threshold: every selected saliency >= every unselected one
    assert flat_s[flat_m == 1].min() >= flat_s[flat_m == 0].max()
    assert U.mask_density(mask) == pytest.approx(int(ratio * flat_s.numel()) / flat_s.numel())


def test_global_mask_differs_from_per_layer_when_layers_differ_in_scale():
    """A layer with 100x larger gradients takes all of a global mask, half of a per-layer one."""
    grads = {"a": torch.full((10,), 100.0) + torch.arange(10.0), "b": torch.arange(10.0)}
    model = nn.Module()
    m_global = U.saliency_mask(model, None, ratio=0.5, gradients=grads)
    m_layer = U.saliency_mask(model, None, ratio=0.5, scope="per_layer", gradients=grads)
    assert m_global["a"].sum() == 10 and m_global["b"].sum() == 0
    assert m_layer["a"].sum() == 5 and m_layer["b"].sum() == 5
    assert torch.equal(m_layer["b"], (torch.arange(10.0) >= 5).float())


def test_mask_bad_arguments():
    model = _linear()
    batches, _, _ = _batches()
    with pytest.raises(ValueError, match="ratio"):
        U.saliency_mask(model, batches, ratio=1.5)
    with pytest.raises(ValueError, match="scope"):
        U.saliency_mask(model, batches, scope="layerwise")
    with pytest.raises(ValueError, match="forget"):
        U.saliency_gradients(model, [(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))])


# ---------------------------------------------------------------------- masked update
def test_masked_out_weights_unchanged_after_unlearning(make_mlp, f_loader, r_loader):
    model = make_mlp()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    un = U.SalUn(model, ratio=0.3, lr=0.05, weight_decay=5e-3)  # strong momentum + weight decay
    un.unlearn(f_loader, r_loader, epochs=2)
    n_in = n_moved = 0
    for k, p in model.named_parameters():
        m = un.mask[k].bool()
        assert torch.equal(p.detach()[~m], before[k][~m]), f"masked-out weights of {k} moved"
        n_in += int(m.sum())
        n_moved += int((p.detach()[m] != before[k][m]).sum())
    assert n_in > 0 and n_moved > 0.9 * n_in, "salient weights should be updated"


def test_restore_masked_zeroes_momentum_on_masked_coordinates():
    p = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    model = nn.Module()
    model.p = p
    theta0 = {"p": p.detach().clone()}
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    mask = {"p": torch.tensor([1.0, 0.0, 1.0])}
    p.grad = torch.tensor([1.0, 1.0, 1.0])
    U.apply_mask_to_grads(model, mask)
    assert torch.equal(p.grad, torch.tensor([1.0, 0.0, 1.0]))
    opt.step()  # weight decay moves coordinate 1 despite its zero gradient
    assert p.detach()[1] != 2.0
    U.restore_masked(model, mask, theta0, opt)
    assert p.detach()[1] == 2.0
    buf = opt.state[p]["momentum_buffer"]
    assert buf[1] == 0.0 and buf[0] != 0.0


def test_given_mask_is_used_and_checked(make_mlp, f_loader, r_loader):
    model = make_mlp()
    mask = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    before = copy.deepcopy(model.state_dict())
    U.SalUn(model, mask=mask).unlearn(f_loader, r_loader, epochs=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "an all-zero mask must freeze the model"
    with pytest.raises(ValueError, match="not a parameter"):
        U.SalUn(model, mask={"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        U.SalUn(model, mask={"net.0.weight": torch.zeros(3)})


def test_random_labels_are_wrong_and_cover_other_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (20000,), generator=g)
    yp = U.random_wrong_labels(y, 10, g)
    assert (yp != y).all()
    counts = torch.bincount((yp - y) % 10, minlength=10)
    assert counts[0] == 0
    assert (counts[1:].float() / counts[1:].sum() - 1 / 9).abs().max() < 0.01


def test_salun_ratio_one_equals_random_label(make_mlp, f_loader, r_loader):
    """With every weight salient (ratio 1) SalUn is exactly random labeling (eq. 6 with m = 1)."""
    forget, retain = list(f_loader), list(r_loader)  # fixed batch order (the mask pass iterates forget once more)
    a = U.SalUn(make_mlp(), ratio=1.0, seed=3).unlearn(forget, retain, epochs=2)
    b = U.RandomLabel(make_mlp(), seed=3).unlearn(forget, retain, epochs=2)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=k)


# ---------------------------------------------------------------------- soft variant
def test_salun_soft_proximal_step_soft_thresholds_the_weight_change():
    """θ ← θ_o + sign(d) max(|d| - τ, 0), τ = k-th smallest |d|, k = ratio (1 - t/T) N."""
    model = _linear()
    un = U.SalUnSoft(model, ratio=0.5)
    un._params = list(model.named_parameters())
    un._theta0 = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    un._total, un._t = 4, 0
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    d = torch.cat([p.detach().flatten() for p in model.parameters()]) - un._theta0
    un._after_step(None)
    n = d.numel()
    k = int(0.5 * (4 - 1) / 4 * n)
    tau = d.abs().sort().values[k - 1]
    expect = un._theta0 + torch.sign(d) * (d.abs() - tau).clamp_min(0)
    got = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(got, expect)
    assert int((got == un._theta0).sum()) >= k


# ---------------------------------------------------------------------- baselines
def test_retrain_ignores_the_original_weights(make_mlp, f_loader, r_loader):
    a = U.Retrain(make_mlp(0), epochs=1, seed=7).unlearn(copy.deepcopy(f_loader), copy.deepcopy(r_loader))
    b = U.Retrain(make_mlp(123), epochs=1, seed=7).unlearn(copy.deepcopy(f_loader), copy.deepcopy(r_loader))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_fine_tune_never_sees_the_forget_labels(make_mlp, f_loader, r_loader):
    """FT depends on D_r only: a forget set with different labels gives the same model."""
    x, y = next(iter(f_loader))
    other = [(x, (y + 1) % 10)]
    a = U.FineTune(make_mlp()).unlearn([(x, y)], copy.deepcopy(r_loader), epochs=1)
    b = U.FineTune(make_mlp()).unlearn(other, copy.deepcopy(r_loader), epochs=1)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_gradient_ascent_raises_forget_loss(make_mlp, small_sets):
    (xf, yf), _ = small_sets
    model = make_mlp()
    before = float(F.cross_entropy(model(xf), yf).detach())
    U.GradientAscent(model, lr=0.5, momentum=0.0, weight_decay=0.0).unlearn([(xf, yf)], [(xf, yf)], epochs=5)
    assert float(F.cross_entropy(model(xf), yf).detach()) > before + 0.1


def test_l1_sparse_shrinks_the_l1_norm(make_mlp, f_loader, r_loader):
    a = U.L1Sparse(make_mlp(), alpha=0.0, weight_decay=0.0).unlearn(copy.deepcopy(f_loader), copy.deepcopy(r_loader), epochs=2)
    b = U.L1Sparse(make_mlp(), alpha=5e-3, weight_decay=0.0).unlearn(copy.deepcopy(f_loader), copy.deepcopy(r_loader), epochs=2)
    l1 = lambda m: float(sum(p.detach().abs().sum() for p in m.parameters()))  # noqa: E731
    assert l1(b) < l1(a) - 1.0


def test_bad_hyperparameters_and_model_are_clear_errors(make_mlp):
    with pytest.raises(TypeError, match="nn.Module"):
        U.SalUn("not a model")
    with pytest.raises(ValueError, match="lr"):
        U.FineTune(make_mlp(), lr=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        U.FineTune(make_mlp(), epochs=0)
    with pytest.raises(ValueError, match="schedule"):
        U.RandomLabel(make_mlp(), schedule="mixed")
    with pytest.raises(ValueError, match="ratio"):
        U.SalUn(make_mlp(), ratio=2)


def test_model_without_class_logits_is_a_clear_error(f_loader, r_loader):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.Flatten(0))
    with pytest.raises(ValueError, match="logits"):
        U.SalUn(model).unlearn(f_loader, r_loader, epochs=1)


def test_float_labels_are_a_clear_error(make_mlp, r_loader):
    with pytest.raises(TypeError, match="integer class"):
        U.SalUn(make_mlp()).unlearn([(torch.zeros(4, 64), torch.zeros(4))], r_loader, epochs=1)


def test_classwise_forgetting_direction(digit_data):
    """Tiny seeded class-wise run: SalUn forgets digit 0 (UA ≈ Retrain's 100 %) and keeps the rest."""
    from gradkit_support.data import loader
    from gradkit_support.models import MLP
    from gradkit_support.train import train_classifier
    from gradkit_salun.metrics import retain_accuracy, unlearning_accuracy

    xtr, ytr, xte, yte = digit_data
    torch.manual_seed(0)
    model = MLP([64, 64, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_classifier(model, loader(xtr, ytr, 64, seed=0), opt, epochs=12)
    f, r = ytr == 0, ytr != 0
    assert unlearning_accuracy(model, (xtr[f], ytr[f])) < 0.05
    U.SalUn(model, ratio=0.5).unlearn(loader(xtr[f], ytr[f], 64), loader(xtr[r], ytr[r], 64), epochs=3)
    assert unlearning_accuracy(model, (xtr[f], ytr[f])) > 0.9
    assert retain_accuracy(model, (xtr[r], ytr[r])) > 0.9
    keep = yte != 0
    assert retain_accuracy(model, (xte[keep], yte[keep])) > 0.85
