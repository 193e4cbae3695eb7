"""GGPO LoRA layer: perturbation scale per row, eval behaviour, merged weight, gradients, frozen base."""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_loraggpo.lora import (GGPOLoRALinear, lora_layers, lora_parameters, merge_lora, set_progress,
                                   update_norms, wrap_lora)

torch.set_num_threads(1)


def layer(mode="ggpo", dtype=torch.float32, seed=0, out=6, inp=5, **kw):
    torch.manual_seed(seed)
    base = nn.Linear(inp, out).to(dtype)
    lyr = GGPOLoRALinear(base, r=2, alpha=3.0, mode=mode, generator=torch.Generator().manual_seed(seed), **kw)
    with torch.no_grad():
        lyr.lora_B.normal_(0, 0.5)  # non-zero B so that B A and both LoRA gradients matter
    return lyr


def backward_once(lyr, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, lyr.in_features, generator=g, dtype=lyr.base.weight.dtype)
    y = torch.randn(7, lyr.out_features, generator=g, dtype=lyr.base.weight.dtype)
    lyr.zero_grad()
    F.mse_loss(lyr(x), y).backward()
    lyr.update_norms()
    return x


def test_merged_weight_is_w_plus_scaled_ba():
    lyr = layer()
    expected = lyr.base.weight + (3.0 / 2) * lyr.lora_B @ lyr.lora_A
    assert torch.allclose(lyr.merged_weight(), expected)
    x = torch.randn(4, 5)
    lyr.eval()
    assert torch.allclose(lyr(x), F.linear(x, expected, lyr.base.bias), atol=1e-6)
    merged = merge_lora(nn.Sequential(copy.deepcopy(lyr)))
    assert isinstance(merged[0], nn.Linear) and torch.allclose(merged(x), lyr(x), atol=1e-6)


def test_new_layer_starts_equal_to_base():
    torch.manual_seed(0)
    base = nn.Linear(5, 4)
    lyr = GGPOLoRALinear(copy.deepcopy(base), r=3)
    x = torch.randn(2, 5)
    assert torch.equal(lyr.eval()(x), base(x))  # B = 0


@pytest.mark.parametrize("norm,power", [("fan_out", 2.0), ("fan_in", 2.0), ("fan_out", 1.0)])
def test_ggpo_row_scale_matches_formula(norm, power):
    lyr = layer(norm=norm, grad_norm_power=power, sigma=0.1, beta=0.5)
    lyr.train()
    backward_once(lyr)
    s = lyr.scale
    W = lyr.base.weight + s * lyr.lora_B @ lyr.lora_A
    G = s * (lyr.lora_B @ lyr.lora_A.grad + lyr.lora_B.grad @ lyr.lora_A)
    fan = 6 if norm == "fan_out" else 5
    expected = (0.1 * W.norm(dim=1) + 0.5 * G.norm(dim=1) ** power) / math.sqrt(fan)
    assert torch.allclose(lyr.row_std(), expected.detach(), rtol=1e-6)
    # the drawn matrix is exactly a standard normal draw scaled row-wise by that std
    lyr.generator.manual_seed(123)
    eps = lyr.perturbation()
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(123))
    assert torch.allclose(eps, z * expected.detach()[:, None], rtol=1e-6)


def test_ggpo_noise_statistics_per_row():
    torch.manual_seed(0)
    base = nn.Linear(4000, 3)
    lyr = GGPOLoRALinear(base, r=1, sigma=0.2, beta=0.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base.weight[0].mul_(10.0)  # row 0 ten times larger -> ten times the noise
    lyr.update_norms()
    eps = lyr.perturbation()
    expected = 0.2 * base.weight.norm(dim=1) / math.sqrt(3)
    assert torch.allclose(eps.std(dim=1), expected, rtol=0.05)
    assert eps.std(dim=1)[0] / eps.std(dim=1)[1] == pytest.approx(float(expected[0] / expected[1]), rel=0.06)


def test_cached_norms_exclude_the_perturbation():
    lyr = layer(sigma=1.0, beta=1.0)
    lyr.train()
    backward_once(lyr)
    backward_once(lyr, seed=2)  # this forward was perturbed
    assert torch.allclose(lyr.weight_row_norms, lyr.merged_weight().norm(dim=1).detach())


def test_approx_full_grad_is_chain_rule_projection():
    # in eval (no noise): dA = s B^T G, dB = s G A^T with G = dL/dW', so s(B dA + dB A) = s^2 (B B^T G + G A^T A)
    lyr = layer(dtype=torch.float64).eval()
    x = torch.randn(7, 5, dtype=torch.float64)
    W = lyr.merged_weight().detach().requires_grad_(True)
    loss_w = (F.linear(x, W, lyr.base.bias) ** 2).sum()
    (G,) = torch.autograd.grad(loss_w, W)
    (lyr(x) ** 2).sum().backward()
    s, A, B = lyr.scale, lyr.lora_A.detach(), lyr.lora_B.detach()
    assert torch.allclose(lyr.lora_A.grad, s * B.T @ G)
    assert torch.allclose(lyr.approx_full_grad(), s * s * (B @ B.T @ G + G @ A.T @ A))


def test_perturbation_absent_in_eval_and_fresh_every_training_forward():
    lyr = layer(sigma=0.5, beta=0.1)
    backward_once(lyr)
    x = torch.randn(3, 5)
    lyr.eval()
    clean = F.linear(x, lyr.merged_weight(), lyr.base.bias)
    assert torch.equal(lyr(x), lyr(x))
    assert torch.allclose(lyr(x), clean, atol=1e-6)
    lyr.train()
    y1, y2 = lyr(x), lyr(x)
    assert not torch.allclose(y1, clean) and not torch.allclose(y1, y2)
    # the difference is exactly x @ eps^T for the regenerated draw
    lyr.generator.manual_seed(7)
    y3 = lyr(x)
    lyr.generator.manual_seed(7)
    eps = lyr.perturbation()
    assert torch.allclose(y3 - clean, x @ eps.T, atol=1e-6)


def test_flat_lora_schedule_and_fan_in():
    lyr = layer(mode="flat", sigma=0.2)
    lyr.update_norms()
    lyr.progress = 0.0
    assert torch.allclose(lyr.row_std(), torch.zeros(6))
    lyr.progress = 1.0
    full = 0.2 * lyr.merged_weight().norm(dim=1).detach() / math.sqrt(5)
    assert torch.allclose(lyr.row_std(), full)
    set_progress(nn.Sequential(lyr), 0.5)
    assert torch.allclose(lyr.row_std(), full * 0.5)


def test_plain_lora_has_no_perturbation():
    lyr = layer(mode="none")
    backward_once(lyr)
    x = torch.randn(3, 5)
    assert torch.equal(lyr.train()(x), lyr.eval()(x))


def test_mgpo_perturbation_follows_momentum_direction():
    lyr = layer(mode="mgpo", sigma=0.1, mgpo_momentum=0.0, mgpo_ema=0.0)
    backward_once(lyr)
    G = lyr.approx_full_grad()
    eps = lyr.perturbation()
    assert torch.allclose(eps, 0.1 * G / G.norm(), atol=1e-7)


def _fd_check(lyr, fix_noise: bool):
    lyr = lyr.double()
    x = torch.randn(4, lyr.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def loss():
        if fix_noise:
            lyr.generator.manual_seed(99)  # the same perturbation on every evaluation
        return (torch.tanh(lyr(x)) ** 2).sum()

    for p in (lyr.lora_A, lyr.lora_B):
        lyr.zero_grad()
        loss().backward()
        analytic = p.grad.clone()
        numeric = torch.zeros_like(p)
        h = 1e-6
        with torch.no_grad():
            for idx in range(p.numel()):
                flat = p.view(-1)
                old = flat[idx].item()
                flat[idx] = old + h
                lp = float(loss())
                flat[idx] = old - h
                lm = float(loss())
                flat[idx] = old
                numeric.view(-1)[idx] = (lp - lm) / (2 * h)
        assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_lora_gradients_match_finite_differences_eval():
    _fd_check(layer(dtype=torch.float64).eval(), fix_noise=False)


def test_lora_gradients_match_finite_differences_at_perturbed_weights():
    lyr = layer(dtype=torch.float64, sigma=0.5, beta=0.2)
    backward_once(lyr)
    _fd_check(lyr.train(), fix_noise=True)


def test_wrap_lora_freezes_base_and_trains_only_factors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    wrap_lora(model, r=2, sigma=0.1)
    assert len(lora_layers(model)) == 2
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert set(map(id, trainable)) == set(map(id, lora_parameters(model)))
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        update_norms(model)
        opt.step()
    for lyr, orig in zip(lora_layers(model), [ref[0], ref[2]]):
        assert torch.equal(lyr.base.weight, orig.weight) and torch.equal(lyr.base.bias, orig.bias)
        assert lyr.base.weight.grad is None
    assert not torch.equal(lora_layers(model)[1].lora_B, torch.zeros_like(lora_layers(model)[1].lora_B))
    # wrapping again does not wrap the LoRA layers' own base Linear
    with pytest.raises(ValueError, match="no Linear"):
        wrap_lora(model, r=2)


def test_wrap_lora_include_exclude():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    wrap_lora(model, r=1, exclude=["2"])
    assert isinstance(model[0], GGPOLoRALinear) and isinstance(model[2], nn.Linear)


def test_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        GGPOLoRALinear(nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="rank"):
        GGPOLoRALinear(nn.Linear(3, 3), r=0)
    with pytest.raises(ValueError, match="mode"):
        GGPOLoRALinear(nn.Linear(3, 3), mode="sam")
    with pytest.raises(ValueError, match="norm"):
        GGPOLoRALinear(nn.Linear(3, 3), norm="fan")
    with pytest.raises(ValueError, match="last dimension 3"):
        GGPOLoRALinear(nn.Linear(3, 3))(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no Linear"):
        wrap_lora(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("key,value", [("sigma", float("nan")), ("sigma", float("inf")), ("sigma", -0.1),
                                       ("beta", float("nan")), ("beta", float("inf")), ("alpha", 0.0),
                                       ("alpha", float("nan")), ("alpha", float("inf")),
                                       ("grad_norm_power", float("nan")), ("mgpo_momentum", 1.0),
                                       ("mgpo_ema", float("nan"))])
def test_nonfinite_or_out_of_range_hyperparameters_are_rejected(key, value):
    with pytest.raises(ValueError, match=key):
        GGPOLoRALinear(nn.Linear(3, 3), **{key: value})


@pytest.mark.parametrize("mode", ["ggpo", "mgpo", "flat"])
def test_state_dict_round_trip_keeps_the_perturbation_caches(mode):
    """GGPO's weight/gradient row norms, MGPO's momentum and norm EMA and Flat-LoRA's progress survive
    save/load: a reloaded layer draws exactly the perturbation the original would have drawn."""
    src = layer(mode)
    for s in (1, 2, 3):
        backward_once(src, seed=s)
    src.progress = 0.4
    sd = copy.deepcopy(src.state_dict())
    for name in ("weight_row_norms", "grad_row_norms", "mgpo_m"):
        if mode != "mgpo" and name == "mgpo_m":
            continue
        assert name in sd and sd[name].numel() > 0, name
    dst = layer(mode, seed=9)  # fresh layer: empty caches, other weights
    dst.load_state_dict(sd)
    for name in ("weight_row_norms", "grad_row_norms", "mgpo_m"):
        assert torch.equal(getattr(dst, name), getattr(src, name)), name
    assert dst.mgpo_norm_ema == src.mgpo_norm_ema and dst.progress == 0.4
    src.generator.manual_seed(5)
    dst.generator.manual_seed(5)
    e1, e2 = src.perturbation(), dst.perturbation()
    assert e1 is not None and torch.equal(e1, e2)


def test_state_dict_with_a_wrong_cache_shape_is_a_clear_error():
    lyr = layer("ggpo")
    backward_once(lyr)
    sd = lyr.state_dict()
    sd["weight_row_norms"] = torch.ones(4)
    with pytest.raises(RuntimeError, match=r"weight_row_norms: shape \(4,\), expected \(6,\)"):
        layer("ggpo").load_state_dict(sd)
