import copy

import pytest
import torch

import gradkit_core as gk
from gradkit_core.testing.optimizers import OptimizerConformance

from gradkit_support.baselines import SignSGD
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
    opt.step(closure, closure_zo=lambda: torch.zeros(()))
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


class TestSignAdam2BitConformance(OptimizerConformance):
    component = "sign-adam"
    component_kwargs = {"lr": 1e-3, "bits": 2}


class _ZOConformance(OptimizerConformance):
    needs_closure = True
    #: the pure ZO optimizer evaluates loss-only closures without autograd
    loss_only = True

    def _closure(self, opt, loss_fn):
        if self.loss_only:
            return loss_fn

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        return closure

    def _step(self, opt, model, seed: int = 1):
        return opt.step(self._closure(opt, lambda: self._loss(model, seed)))

    def test_closure_loss_is_returned_and_evaluated_with_grad(self):
        """The ZO analogue: step(closure) returns the closure's loss at theta; a loss-only closure runs
        WITHOUT autograd (no graph: zeroth order's memory advantage)."""
        m = self.model()
        opt = self.make(m.parameters())
        seen = []

        def loss_only():
            seen.append(torch.is_grad_enabled())
            return self._loss(m)

        with torch.no_grad():
            expected = float(self._loss(m))
        if self.loss_only:
            out = opt.step(loss_only)
            assert seen and not any(seen), "zeroth-order losses must be evaluated without autograd"
        else:  # hybrid: FO closure with autograd, ZO closure without
            fo_seen = []

            def closure():
                fo_seen.append(torch.is_grad_enabled())
                opt.zero_grad()
                loss = self._loss(m)
                loss.backward()
                return loss

            out = opt.step(closure, closure_zo=loss_only)
            assert fo_seen and all(fo_seen)
        assert out is not None and abs(float(out.detach()) - expected) < 1e-6

    def test_param_groups_honour_their_own_lr(self):
        m1, m2 = self.model(0), self.model(0)
        opt = self.make([{"params": list(m1.parameters())}, {"params": list(m2.parameters()), "lr": 0.0}])
        before = self._params(m2)
        opt.step(self._closure(opt, lambda: self._loss(m1) + self._loss(m2)))
        for a, b in zip(before, self._params(m2)):
            assert torch.allclose(a, b, atol=1e-6), "a param group with lr=0 must not move"

    def test_param_without_grad_is_untouched(self):
        """Zeroth order never reads ``.grad``: its variables are the parameters with ``requires_grad``.
        The ZO analogue of the rule: a parameter with ``requires_grad=False`` is never perturbed,
        updated or given state."""
        m = self.model()
        frozen = torch.nn.Parameter(torch.randn(4, 4), requires_grad=False)
        ref = frozen.detach().clone()
        seen = []
        opt = self.make([{"params": list(m.parameters())}, {"params": [frozen]}])

        def loss_fn():
            seen.append(frozen.detach().clone())
            return self._loss(m)

        for _ in range(2):
            opt.step(self._closure(opt, loss_fn))
        assert all(torch.equal(s, ref) for s in seen), "a frozen parameter must never be perturbed"
        assert torch.equal(frozen.detach(), ref) and frozen not in opt.state


class TestZOConformance(_ZOConformance):
    component = "zo"
    component_kwargs = {"lr": 1e-3, "num_queries": 2}
    reads_gradients = False


class TestZOSGDForwardConformance(_ZOConformance):
    component = "zo"
    component_kwargs = {"lr": 1e-3, "base": "sgd", "estimator": "forward", "direction": "rademacher"}
    reads_gradients = False


class TestHybridConformance(_ZOConformance):
    """``period=2``: steps 0, 1 are first order, so the suite's NaN-gradient rule (one clean step, then a
    poisoned one) meets a first-order step, the only kind that reads ``.grad``."""

    component = "hybrid-fo-zo"
    component_kwargs = {"lr": 1e-3, "period": 2}
    loss_only = False


# ---------------------------------------------------------------------- issue 12 items
def test_one_bit_sign_adam_is_signum_and_keeps_one_buffer():
    """sign(m_hat / (sqrt(v_hat) + eps)) = sign(m): 1-bit SignAdam equals Signum (SignSGD with momentum
    beta1) step for step, and keeps only exp_avg (the second moment was dead state)."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    oa = SignAdam(a.parameters(), lr=1e-2, betas=(0.9, 0.999), bits=1)
    ob = SignSGD(b.parameters(), lr=1e-2, momentum=0.9)
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(5):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    for st in oa.state.values():
        assert set(st) == {"step", "exp_avg"}
    o2 = SignAdam(torch.nn.Linear(2, 2).parameters(), bits=2)
    for p in o2.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    o2.step()
    assert all("exp_avg_sq" in st for st in o2.state.values())


def test_sign_adam_nan_gradient_raises_and_changes_nothing():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = SignAdam([{"params": [p]}, {"params": [q]}], lr=0.1)
    p.grad, q.grad = torch.ones(3), torch.ones(2)
    opt.step()
    before = (p.detach().clone(), q.detach().clone(), copy.deepcopy(opt.state_dict()))
    p.grad, q.grad = torch.ones(3), torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-finite"):
        opt.step()
    assert torch.equal(p, before[0]) and torch.equal(q, before[1])
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], before[2]["state"][0]["exp_avg"])


@pytest.mark.parametrize("estimator", ["central", "forward"])
def test_zo_non_finite_loss_at_a_perturbed_point_restores_the_parameters(estimator):
    """The step used to raise with the parameters still shifted by mu*u."""
    p = torch.nn.Parameter(torch.tensor([0.5, -0.25, 1.0]))
    p0 = p.detach().clone()
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        return p.sum() * (float("nan") if calls["n"] == 2 else 1.0)  # finite at theta, NaN at theta + mu u

    opt = ZOOptimizer([p], lr=0.1, mu=0.1, estimator=estimator)
    with pytest.raises(ValueError, match="non-finite"):
        opt.step(closure)
    assert torch.allclose(p.detach(), p0, atol=1e-7) and len(opt.state) == 0
    calls["n"] = 0

    def late():
        calls["n"] += 1
        return p.sum() * (float("inf") if calls["n"] == 3 else 1.0)  # NaN at theta - mu u (central)

    if estimator == "central":
        with pytest.raises(ValueError, match="non-finite"):
            opt.step(late)
        assert torch.allclose(p.detach(), p0, atol=1e-7)


def test_zo_closure_runs_without_a_graph_and_backward_is_a_clear_error():
    m = torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    opt = ZOOptimizer(m.parameters(), lr=1e-3)
    flags = []

    def closure():
        out = m(x).pow(2).mean()
        flags.append(out.requires_grad)
        return out

    opt.step(closure)
    assert flags == [False, False, False]

    def with_backward():
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="backward"):
        opt.step(with_backward)


def test_split_loss_takes_fo_and_zo_at_the_same_point():
    """split_loss: theta' = theta - lr g_FO(theta) - lr g_ZO(theta) (SGD base); the ZO estimate used to be
    taken after the FO update had already moved theta."""
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3)
    theta0 = [p.detach().clone() for p in m.parameters()]
    f_fo = lambda: m(x).pow(2).mean()  # noqa: E731
    f_zo = lambda: (m(x) - 1.0).abs().mean()  # noqa: E731
    opt = HybridFOZO(m.parameters(), lr=0.1, base="sgd", schedule="split_loss", seed=5, mu=1e-3)

    def closure():
        opt.zero_grad()
        loss = f_fo()
        loss.backward()
        return loss

    g_fo = torch.autograd.grad(f_fo(), list(m.parameters()))
    m2 = copy.deepcopy(m)
    zo = ZOOptimizer(m2.parameters(), lr=1.0, base="sgd", seed=5, mu=1e-3)
    zo.step(lambda: (m2(x) - 1.0).abs().mean())  # lr 1, same seed and step 0: theta - g_ZO(theta)
    g_zo = [a - b.detach() for a, b in zip(theta0, m2.parameters())]
    opt.step(closure, closure_zo=f_zo)
    for p, t0, a, b in zip(m.parameters(), theta0, g_fo, g_zo):
        torch.testing.assert_close(p.detach(), t0 - 0.1 * a - 0.1 * b, atol=1e-6, rtol=0)
