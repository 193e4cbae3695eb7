import copy

import pytest
import torch

import gradkit_core as gk
from gradkit_core.testing.optimizers import OptimizerConformance

from gradkit_zounlearn.optim import HybridFOZO, SignAdam, ZOOptimizer

A = torch.tensor([[3.0, 0.5, 0.0, 0.2], [0.5, 2.0, 0.1, 0.0], [0.0, 0.1, 1.0, 0.3], [0.2, 0.0, 0.3, 0.5]])
B = torch.tensor([1.0, -2.0, 0.5, 0.0])


def _quad(theta):
    return 0.5 * theta @ A @ theta + B @ theta


@pytest.mark.parametrize("estimator,direction", [("central", "gaussian"), ("forward", "gaussian"),
                                                 ("central", "rademacher"), ("central", "sphere")])
def test_zo_estimate_is_unbiased_on_a_quadratic(estimator, direction):
    """E[g_hat] = grad f for a quadratic (central differences are exact; E[u u^T] = I; odd moments vanish).
    Statistical test with a fixed seed: every coordinate of the mean of N estimates is within 4.5 standard
    errors of the true gradient, and the estimate is far from it for a single draw (it is random)."""
    theta0 = torch.tensor([0.3, -0.7, 1.1, 0.4])
    true = A @ theta0 + B
    n = 1000
    est = torch.empty(n, 4)
    p = torch.nn.Parameter(theta0.clone())
    for i in range(n):
        with torch.no_grad():
            p.copy_(theta0)
        opt = ZOOptimizer([p], lr=1.0, base="sgd", mu=1e-2, estimator=estimator, direction=direction, seed=i)
        opt.step(lambda: _quad(p))
        est[i] = theta0 - p.detach()  # lr = 1: the update is -g_hat
    mean, se = est.mean(0), est.std(0) / n**0.5
    assert ((mean - true).abs() <= 4.5 * se + 1e-3).all(), (mean, true, se)
    assert (est[0] - true).norm() > 0.1


def test_zo_directions_regenerate_exactly_and_params_are_restored():
    torch.manual_seed(0)
    m = torch.nn.Linear(5, 3)
    w0 = [p.detach().clone() for p in m.parameters()]
    x = torch.randn(8, 5)
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in m.parameters()])
        return m(x).pow(2).mean()

    opt = ZOOptimizer(m.parameters(), lr=0.0, mu=1e-2, num_queries=2, estimator="central", seed=3)
    opt.step(closure)
    assert len(seen) == 1 + 2 * 2  # theta, then theta +- mu u_i for two queries
    for a, b in zip(seen[0], w0):
        assert torch.equal(a, b)
    # +mu u and -mu u are mirror images around theta: the same u was regenerated
    for a, b, c in zip(seen[1], seen[2], w0):
        assert torch.allclose((a + b) / 2, c, atol=1e-6) and not torch.allclose(a, c)
    for p, c in zip(m.parameters(), w0):
        assert torch.allclose(p.detach(), c, atol=1e-6)  # lr = 0: restored (up to float rounding)
    seen.clear()
    ZOOptimizer(m.parameters(), lr=0.0, num_queries=3, estimator="forward").step(closure)
    assert len(seen) == 1 + 3


def test_zo_is_seeded_and_frozen_params_are_untouched():
    def run(seed):
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 2)
        m.bias.requires_grad_(False)
        b0 = m.bias.detach().clone()
        opt = ZOOptimizer(m.parameters(), lr=1e-2, seed=seed)
        x = torch.randn(6, 4)
        for _ in range(3):
            opt.step(lambda: m(x).pow(2).mean())
        assert torch.equal(m.bias.detach(), b0) and m.bias not in opt.state
        return m.weight.detach().clone()

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_zo_needs_closure_and_finite_loss():
    p = torch.nn.Parameter(torch.ones(3))
    opt = ZOOptimizer([p])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="non-finite"):
        opt.step(lambda: p.sum() * float("nan"))
    for bad in (dict(mu=0.0), dict(num_queries=0), dict(estimator="backward"), dict(direction="uniform"),
                dict(base="rmsprop"), dict(lr=-1.0)):
        with pytest.raises(ValueError):
            ZOOptimizer([p], **bad)


def test_sign_adam_hand_computed_steps():
    p = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    opt = SignAdam([p], lr=0.1, betas=(0.5, 0.9), eps=0.0)
    p.grad = torch.tensor([2.0, -1.0])
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([-0.1, 0.1]))
    p.grad = torch.tensor([-6.0, -1.0])
    opt.step()
    # m = (0.5*1 + 0.5*-6, ...) = (-2.0, -1.0) -> sign (-1, -1); step +0.1, +0.1
    assert torch.allclose(p.detach(), torch.tensor([0.0, 0.2]))
    # bits = 2 uses Adam's direction m_hat/sqrt(v_hat): a small component rounds to 0
    r = torch.nn.Parameter(torch.zeros(2))
    o2 = SignAdam([r], lr=1.0, betas=(0.0, 0.0), eps=0.0, bits=2)
    r.grad = torch.tensor([1.0, -1.0])
    o2.step()
    assert torch.equal(r.detach(), torch.tensor([-1.0, 1.0]))


def test_hybrid_schedules():
    def make(**kw):
        torch.manual_seed(0)
        m = torch.nn.Linear(3, 1)
        x = torch.randn(5, 3)
        opt = HybridFOZO(m.parameters(), lr=1e-2, **kw)

        def closure():
            opt.zero_grad()
            loss = m(x).pow(2).mean()
            loss.backward()
            return loss

        return opt, closure

    opt, closure = make(period=2)
    kinds = []
    for _ in range(6):
        opt.step(closure)
        kinds.append(opt.last_step_kind)
    assert kinds == ["fo", "fo", "zo", "zo", "fo", "fo"]
    opt, closure = make(schedule="prob", p_zo=0.25, seed=1)
    kinds = []
    for _ in range(400):
        opt.step(closure)
        kinds.append(opt.last_step_kind)
    assert 0.18 < kinds.count("zo") / 400 < 0.32
    opt, closure = make(schedule="split_loss")
    with pytest.raises(RuntimeError, match="closure_zo"):
        opt.step(closure)
    opt.step(closure, closure_zo=closure)
    assert opt.last_step_kind == "split"
    with pytest.raises(RuntimeError, match="closure"):
        make()[0].step()


def test_hybrid_first_step_is_adam_on_the_true_gradient_and_zo_step_ignores_grad():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    ref = copy.deepcopy(m)
    x = torch.randn(5, 3)
    opt = HybridFOZO(m.parameters(), lr=1e-2, seed=4)
    adam = torch.optim.Adam(ref.parameters(), lr=1e-2, eps=1e-8)

    def closure(model, o):
        def c():
            o.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss
        return c

    opt.step(closure(m, opt))
    adam.step(closure(ref, adam))
    for a, b in zip(m.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    # the ZO step must give the same result whatever sits in .grad (it uses only loss values)
    m2 = copy.deepcopy(m)
    opt2 = HybridFOZO(m2.parameters(), lr=1e-2, seed=4)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))

    def loss_only(model):
        return lambda: model(x).pow(2).mean()

    for p in m.parameters():
        p.grad = torch.full_like(p, 123.0)
    opt.step(loss_only(m))
    opt2.step(loss_only(m2))
    assert opt.last_step_kind == "zo"
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_registered_defaults():
    p = [torch.nn.Parameter(torch.ones(2))]
    assert isinstance(gk.create("zo", p, kind="optimizers"), ZOOptimizer)
    assert gk.create("sign-sgd", p, kind="optimizers").defaults["bits"] == 1
    assert isinstance(gk.create("sign-adam", p, kind="optimizers"), SignAdam)
    h = gk.create("hybrid-fo-zo", p, kind="optimizers")
    assert h.defaults["schedule"] == "alternate" and h.defaults["period"] == 1


class TestSignAdamConformance(OptimizerConformance):
    component = "sign-adam"
    component_kwargs = {"lr": 1e-3}


class _ZOConformance(OptimizerConformance):
    needs_closure = True

    def test_param_without_grad_is_untouched(self):
        """Zeroth order never reads ``.grad``: its variables are the parameters with ``requires_grad``.
        The ZO analogue of the rule: a parameter with ``requires_grad=False`` is never perturbed,
        updated or given state."""
        m = self.model()
        frozen = torch.nn.Parameter(torch.randn(4, 4), requires_grad=False)
        ref = frozen.detach().clone()
        seen = []
        opt = self.make([{"params": list(m.parameters())}, {"params": [frozen]}])

        def closure():
            seen.append(frozen.detach().clone())
            opt.zero_grad()
            loss = self._loss(m)
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
        assert all(torch.equal(s, ref) for s in seen), "a frozen parameter must never be perturbed"
        assert torch.equal(frozen.detach(), ref) and frozen not in opt.state


class TestZOConformance(_ZOConformance):
    component = "zo"
    component_kwargs = {"lr": 1e-3, "num_queries": 2}


class TestZOSGDForwardConformance(_ZOConformance):
    component = "zo"
    component_kwargs = {"lr": 1e-3, "base": "sgd", "estimator": "forward", "direction": "rademacher"}
    stateless = False


class TestHybridConformance(_ZOConformance):
    component = "hybrid-fo-zo"
    component_kwargs = {"lr": 1e-3}
