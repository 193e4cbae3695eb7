"""LoRA-SAM optimizer (conformance + hand-computed step) and the fine-tuning trainer."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_core.testing.optimizers import OptimizerConformance
from gradkit_loraggpo.lora import GGPOLoRALinear, lora_layers
from gradkit_loraggpo.sam import SAM
from gradkit_loraggpo.trainer import LoRAFineTuner, trainable_parameter_count

torch.set_num_threads(1)


class TestSAMConformance(OptimizerConformance):
    component = "sam"
    component_kwargs = {"lr": 1e-2, "rho": 0.05}
    needs_closure = True


class TestSAMSGDConformance(OptimizerConformance):
    component = "sam"
    component_kwargs = {"lr": 1e-2, "rho": 0.05, "base": "sgd", "momentum": 0.0}
    needs_closure = True
    stateless = False


def test_sam_sgd_step_hand_computed():
    # L(w) = 0.5 * w^T diag(1, 4) w at w = (1, 1): g = (1, 4); e = rho g/|g|; w_new = w - lr * grad L(w + e)
    w = nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    H = torch.tensor([1.0, 4.0], dtype=torch.float64)
    opt = SAM([w], lr=0.1, rho=0.5, base="sgd", momentum=0.0)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (H * w * w).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    g = torch.tensor([1.0, 4.0], dtype=torch.float64)
    e = 0.5 * g / g.norm()
    expected = torch.tensor([1.0, 1.0], dtype=torch.float64) - 0.1 * H * (1 + e)
    assert float(loss.detach()) == pytest.approx(2.5)
    assert torch.allclose(w.detach(), expected)


def test_sam_nan_gradient_is_an_error():
    w = nn.Parameter(torch.ones(2))

    def closure():
        w.grad = torch.tensor([float("nan"), 1.0])
        return torch.tensor(0.0)

    with pytest.raises(FloatingPointError, match="not finite"):
        SAM([w]).step(closure)


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(120, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    y = (x @ w).argmax(1)
    return x, y


@pytest.mark.parametrize("name", ["lora-ggpo", "lora", "flat-lora", "lora-sam", "lora-mgpo"])
def test_trainer_fits_and_keeps_base_frozen(name):
    import gradkit_core as gk

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    base_w = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    x, y = _toy()
    data = [(x[i:i + 30], y[i:i + 30]) for i in range(0, 120, 30)]
    tuner = gk.create(name, model, kind="trainers", r=4, lr=2e-2)
    with torch.no_grad():
        before = float(F.cross_entropy(model.eval()(x), y))
    out = tuner.fit(data, epochs=15)
    assert out is model and not model.training
    with torch.no_grad():
        after = float(F.cross_entropy(model(x), y))
    assert after < 0.7 * before, (name, before, after)
    assert torch.equal(lora_layers(model)[0].base.weight, base_w[0])
    assert torch.equal(lora_layers(model)[1].base.weight, base_w[1])
    assert trainable_parameter_count(model) == 4 * (6 + 16) + 4 * (16 + 3)


def test_trainer_train_modules_and_full():
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    LoRAFineTuner(model, method="ggpo", r=2, include=["0"], train_modules=["2"])
    assert isinstance(model[0], GGPOLoRALinear) and isinstance(model[2], nn.Linear)
    assert model[2].weight.requires_grad and not model[0].base.weight.requires_grad
    m2 = nn.Sequential(nn.Linear(6, 3))
    LoRAFineTuner(m2, method="full")
    assert isinstance(m2[0], nn.Linear) and m2[0].weight.requires_grad


def test_trainer_bad_input():
    with pytest.raises(ValueError, match="method"):
        LoRAFineTuner(nn.Linear(2, 2), method="dora")
    with pytest.raises(TypeError, match="nn.Module"):
        LoRAFineTuner("model")
    with pytest.raises(ValueError, match="train_modules"):
        LoRAFineTuner(nn.Sequential(nn.Linear(2, 2)), train_modules=["head"])


def test_flat_schedule_follows_training_progress():
    model = nn.Sequential(nn.Linear(6, 3))
    tuner = LoRAFineTuner(model, method="flat", r=1)
    x, y = _toy()
    data = [(x[:60], y[:60]), (x[60:], y[60:])]
    tuner.fit(data, epochs=2)
    assert lora_layers(model)[0].progress == pytest.approx(3 / 4)  # set before the 4th (last) of 4 steps


def test_trainer_non_finite_loss_is_a_clear_error():
    model = nn.Sequential(nn.Linear(6, 3))
    tuner = LoRAFineTuner(model, method="ggpo", r=1, loss_fn=lambda out, y: out.sum() * float("nan"))
    x, y = _toy()
    with pytest.raises(FloatingPointError, match="lower beta"):
        tuner.train_step(x, y)


def test_sam_nan_gradient_at_the_perturbed_point_changes_nothing():
    """The gradient at w + e is non-finite in the LAST group: no parameter of any group and no state moves."""
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.full((2,), 2.0))
    opt = SAM([{"params": [a]}, {"params": [b]}], lr=0.1, rho=0.05)
    calls = [0]

    def closure(poison_second=False):
        def run():
            calls[0] += 1
            opt.zero_grad()
            loss = (a ** 2).sum() + (b ** 2).sum()
            loss.backward()
            if poison_second and calls[0] % 2 == 0:
                b.grad[0] = float("nan")
            return loss
        return run

    opt.step(closure())
    before = [a.detach().clone(), b.detach().clone()]
    state = copy.deepcopy(opt.state_dict())
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(closure(poison_second=True))
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    after = opt.state_dict()
    for k, st in state["state"].items():
        for key, v in st.items():
            assert (torch.equal(after["state"][k][key], v) if isinstance(v, torch.Tensor)
                    else after["state"][k][key] == v), key


@pytest.mark.parametrize("key,value", [("lr", float("nan")), ("lr", float("inf")), ("rho", float("nan")),
                                       ("weight_decay", float("inf")), ("weight_decay", -1.0),
                                       ("eps", float("nan")), ("momentum", float("nan"))])
def test_sam_rejects_nonfinite_hyperparameters(key, value):
    with pytest.raises(ValueError, match=key):
        SAM([nn.Parameter(torch.ones(2))], **{key: value})
    opt = SAM([nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=key):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], key: value})


@pytest.mark.parametrize("key,value", [("lr", float("nan")), ("lr", 0.0), ("weight_decay", float("inf")),
                                       ("rho", float("nan"))])
def test_trainer_rejects_nonfinite_hyperparameters(key, value):
    with pytest.raises(ValueError, match=key):
        LoRAFineTuner(nn.Sequential(nn.Linear(4, 3)), method="lora", **{key: value})
