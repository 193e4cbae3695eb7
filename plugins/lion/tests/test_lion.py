import math
import copy

import pytest
import torch

import gradkit_core as gk
from gradkit_core.testing.optimizers import OptimizerConformance
from gradkit_lion.optim import Lion


class TestLionConformance(OptimizerConformance):
    component = "lion"
    component_kwargs = {"lr": 1e-3, "weight_decay": 0.1}


class TestLionLoopConformance(OptimizerConformance):
    component = "lion"
    component_kwargs = {"lr": 1e-3, "weight_decay": 0.1, "foreach": False}


def _official_lion_step(p, g, m, lr, beta1, beta2, wd):
    """The paper's Algorithm 2 / google-automl program, written out on plain tensors."""
    p = p * (1 - lr * wd)
    update = m * beta1 + g * (1 - beta1)
    p = p - lr * torch.sign(update)
    m = m * beta2 + g * (1 - beta2)
    return p, m


def test_hand_computed_step():
    p = torch.tensor([1.0, -2.0, 0.5, 3.0], requires_grad=True)
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5, foreach=False)
    opt.state[p]["exp_avg"] = torch.tensor([0.2, -0.1, 0.0, 1.0])
    p.grad = torch.tensor([-1.0, 0.3, 0.0, -20.0])
    opt.step()
    # decay: p*(1-0.05); c = 0.9 m + 0.1 g = [0.08, -0.06, 0, -1.1]; sign = [1, -1, 0, -1]
    expected = torch.tensor([1.0 * 0.95 - 0.1, -2.0 * 0.95 + 0.1, 0.5 * 0.95, 3.0 * 0.95 + 0.1])
    assert torch.allclose(p.detach(), expected, atol=1e-7)
    # m = 0.99 m + 0.01 g
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.188, -0.096, 0.0, 0.79]), atol=1e-7)


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_official_program_over_many_steps(foreach):
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    ref_p = [p.detach().clone() for p in params]
    ref_m = [torch.zeros(s) for s in shapes]
    opt = Lion(params, lr=3e-3, betas=(0.9, 0.99), weight_decay=0.3, foreach=foreach)
    for _ in range(25):
        gs = [torch.randn(s) for s in shapes]
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(gs):
            ref_p[i], ref_m[i] = _official_lion_step(ref_p[i], g, ref_m[i], 3e-3, 0.9, 0.99, 0.3)
    for p, r in zip(params, ref_p):
        if foreach:  # lerp vs mul/add rounding only
            assert torch.allclose(p.detach(), r, atol=1e-6)
        else:  # the loop path uses the official arithmetic exactly
            assert torch.equal(p.detach(), r)
    for p, m in zip(params, ref_m):
        assert torch.allclose(opt.state[p]["exp_avg"], m, atol=1e-6)


def test_update_magnitude_is_exactly_lr_without_weight_decay():
    torch.manual_seed(1)
    p = torch.randn(1000, requires_grad=True)
    before = p.detach().clone()
    opt = Lion([p], lr=0.01)
    p.grad = torch.randn(1000)
    opt.step()
    delta = (p.detach() - before).abs()
    assert torch.allclose(delta, torch.full_like(delta, 0.01), atol=1e-7)


def test_one_state_tensor_per_parameter_no_eps():
    m = torch.nn.Linear(4, 3)
    opt = gk.create("lion", m.parameters())
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    for p in m.parameters():
        assert list(opt.state[p]) == ["exp_avg"]
        assert opt.state[p]["exp_avg"].shape == p.shape
    assert "eps" not in opt.defaults


def test_registry_defaults_are_papers():
    spec = gk.info("lion", kind="optimizers")
    assert spec.defaults["lr"] == 1e-4 and tuple(spec.defaults["betas"]) == (0.9, 0.99)
    assert spec.paper.arxiv == "2302.06675"
    opt = gk.create("lion", [torch.zeros(2, requires_grad=True)])
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["weight_decay"] == 0.0


def test_decoupled_weight_decay_divides_by_initial_lr():
    p = torch.ones(3, requires_grad=True)
    opt = Lion([p], lr=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    opt.param_groups[0]["lr"] = 0.05  # a scheduler halved the lr
    p.grad = torch.zeros(3)
    opt.step()
    # decay = lr * wd / initial_lr = 0.05 * 0.5 / 0.1 = 0.25; sign(0) = 0 so no update
    assert torch.allclose(p.detach(), torch.full((3,), 0.75))


def test_add_param_group_and_schedulers_behave_like_torch_optimizers():
    """Lion used to pre-set ``initial_lr``: add_param_group raised KeyError with decoupled decay, and an lr
    changed after construction was reverted when a scheduler was created later."""
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = Lion([a], lr=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    opt.add_param_group({"params": [b], "lr": 0.2})
    a.grad, b.grad = torch.zeros(2), torch.zeros(2)
    opt.step()  # no scheduler: decay lr*wd/lr0 with lr0 the group's own creation lr -> 0.5 in both groups
    assert torch.allclose(a.detach(), torch.full((2,), 0.5)) and torch.allclose(b.detach(), torch.full((2,), 0.5))
    assert "initial_lr" not in opt.param_groups[0], "initial_lr belongs to lr schedulers"
    for cls in (torch.optim.AdamW, Lion):
        p = torch.zeros(2, requires_grad=True)
        o = cls([p], lr=1.0)
        o.param_groups[0]["lr"] = 0.1
        torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)
        assert o.param_groups[0]["lr"] == 0.1, cls  # AdamW keeps 0.1; Lion used to go back to 1.0


def test_decoupled_weight_decay_follows_the_scheduler_base_lr():
    p = torch.ones(3, requires_grad=True)
    opt = Lion([p], lr=1.0, weight_decay=0.5, decoupled_weight_decay=True)
    opt.param_groups[0]["lr"] = 0.2  # the user picks the base lr before attaching a schedule
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()  # lr 0.1 = half the schedule's base lr 0.2
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.75))  # decay 0.1 * 0.5 / 0.2 = 0.25


def test_nan_in_a_later_group_changes_nothing_and_huge_finite_gradients_step():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = Lion([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.ones(3), torch.tensor([1.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match=r"param group 1, parameter 0"):
        opt.step()
    with pytest.raises(FloatingPointError):  # still the exception type it raised before
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3)) and len(opt.state) == 0, "group 0 must not be stepped"
    b.grad = torch.full((3,), 1e30)  # its fp32 norm overflows to inf, yet every entry is finite
    opt.step()
    assert torch.allclose(b.detach(), torch.full((3,), 0.9))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_bad_group_hyperparameters_are_rejected(bad):
    opt = Lion([torch.zeros(1, requires_grad=True)], lr=0.1)
    for key in ("lr", "weight_decay"):
        with pytest.raises(ValueError, match=key):
            opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], key: bad})
    with pytest.raises(ValueError, match="betas"):
        Lion([torch.zeros(1, requires_grad=True)], betas=(bad, 0.99))


def test_cautious_masks_disagreeing_entries():
    p = torch.zeros(4, requires_grad=True)
    opt = Lion([p], lr=1.0, cautious=True, foreach=False)
    opt.state[p]["exp_avg"] = torch.tensor([10.0, 10.0, -10.0, -10.0])
    p.grad = torch.tensor([1.0, -1.0, -1.0, 1.0])
    opt.step()
    # c signs: [+, +, -, -]; agree with g at indices 0, 2 -> kept and rescaled by 1/0.5
    assert torch.allclose(p.detach(), torch.tensor([-2.0, 0.0, 2.0, 0.0]))


def test_bad_hyperparameters_and_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="lr"):
        Lion([torch.zeros(1, requires_grad=True)], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Lion([torch.zeros(1, requires_grad=True)], betas=(0.9, 1.5))
    with pytest.raises(TypeError, match="complex"):
        Lion([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])
    sp = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.tensor([1.0]), (3,), check_invariants=True).requires_grad_(True)
    with pytest.raises(TypeError, match="sparse"):
        Lion([sp])


def test_reproduction_protocol_pieces():
    """Best-vs-best protocol: the grid's best must be interior; parity claims need mean + 2 SE < margin."""
    from gradkit_lion.reproduce import best_in_grid, not_worse_by, paired

    assert best_in_grid({1e-3: 2.7, 3e-3: 2.5, 1e-2: 2.6}, higher_is_better=False) == (3e-3, True)
    assert best_in_grid({1e-3: 2.7, 3e-3: 2.6, 1e-2: 2.5}, higher_is_better=False) == (1e-2, False)  # edge
    assert best_in_grid({1e-3: 0.9, 3e-3: 0.95, 1e-2: 0.5}, higher_is_better=True) == (3e-3, True)
    ok, mean, se = not_worse_by([0.01, 0.02, 0.03], margin=0.05)
    assert ok and mean == pytest.approx(0.02) and se == pytest.approx(0.01 / 3 ** 0.5)
    assert not not_worse_by([0.01, 0.06, 0.03], margin=0.05)[0]  # mean 0.033 + 2 SE 0.029 > 0.05
    assert not not_worse_by([0.05, 0.05, 0.05], margin=0.05)[0]  # an exact tie with the margin does not pass
    assert paired([2.0, 3.0], [1.0, 1.0]) == (1.5, pytest.approx(0.5))


def test_reproduction_runs_learn_in_a_reduced_form():
    """The two tasks' single runs on a tiny budget: both optimizers learn and Lion keeps half the state."""
    from gradkit_lion.reproduce import digits_run, lm_run, make_optimizer

    lm = dict(d=32, layers=1, block=32, batch=8, steps=40, warmup=4, eval_batches=2, corpus=100_000)
    res = {o: lm_run(o, lr, 0, lm) for o, lr in (("adamw", 1e-2), ("lion", 3e-3))}
    assert all(r["metric"] < math.log(256) - 1.0 for r in res.values()), res  # well below uniform bytes
    assert res["lion"]["state_bytes"] * 2 == pytest.approx(res["adamw"]["state_bytes"], rel=1e-3)
    dg = dict(width=8, epochs=4, batch=64)
    accs = {o: digits_run(o, lr, 0, dg)["metric"] for o, lr in (("adamw", 1e-2), ("lion", 3e-3))}
    assert min(accs.values()) > 0.25, accs  # chance is 0.1
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("adam", [torch.zeros(1, requires_grad=True)], 1e-3)


@pytest.mark.slow
def test_quick_reproduction_protocol_and_state_claims_hold():
    from gradkit_lion.reproduce import run

    res = run(quick=True, progress=False)
    claims = {c.text: c for c in res.claims}
    assert any(t.startswith("(protocol)") and c.passed for t, c in claims.items()), claims
    assert any("half" in t and c.passed for t, c in claims.items())


def test_ddp_two_processes_match_single_process():
    from gradkit_support.ddp import compare_ddp_single, initial_state

    ddp, single = compare_ddp_single("lion", world_size=2, steps=8, global_batch=8, lr=1e-3, weight_decay=0.1)
    assert ddp.keys() == single.keys()
    for k in single:
        # sign() makes Lion sensitive to reduction order only where c is ~0; float64 keeps it exact here
        assert torch.allclose(ddp[k], single[k], atol=1e-10), k
    start = initial_state(0)
    assert any(not torch.equal(start[k], single[k]) for k in single), "training must have moved the weights"


@pytest.mark.parametrize("foreach", [False, True])
def test_chunked_path_for_large_tensors_matches_official_program(foreach):
    from gradkit_lion import optim

    torch.manual_seed(3)
    n = optim.CHUNK * 2 + 123  # three chunks, the last one partial
    big = torch.randn(n, requires_grad=True)
    small = torch.randn(5, requires_grad=True)
    refs = [big.detach().clone(), small.detach().clone()]
    ms = [torch.zeros(n), torch.zeros(5)]
    opt = Lion([big, small], lr=1e-2, weight_decay=0.2, foreach=foreach)
    for _ in range(4):
        gs = [torch.randn(n), torch.randn(5)]
        big.grad, small.grad = gs[0].clone(), gs[1].clone()
        opt.step()
        for i in range(2):
            refs[i], ms[i] = _official_lion_step(refs[i], gs[i], ms[i], 1e-2, 0.9, 0.99, 0.2)
    if foreach:  # chunked + foreach paths: lerp, equal up to rounding
        assert torch.allclose(big.detach(), refs[0], atol=1e-6)
        assert torch.allclose(small.detach(), refs[1], atol=1e-6)
        assert torch.allclose(opt.state[big]["exp_avg"], ms[0], atol=1e-6)
    else:  # foreach=False: the official arithmetic for every tensor, even those of >= CHUNK elements
        assert torch.equal(big.detach(), refs[0]) and torch.equal(small.detach(), refs[1])
        assert torch.allclose(opt.state[big]["exp_avg"], ms[0], atol=1e-6)
