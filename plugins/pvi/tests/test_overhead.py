"""The programmed ELBO gradient pays for nothing the hand-written one does not (beyond its input
checks), the fast reparameterised log-densities equal torch's, and the Pyro peer of the benchmark
really computes the gradient it is timed for."""

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gradkit_pvi import adev as A
from gradkit_pvi import bench

# input checks of ctx.sample / the program value: one reduction per parameter tensor and its .item()s
CHECK_OPS = {"aten.aminmax.default", "aten._local_scalar_dense.default", "aten.isnan.default", "aten.any.default",
             "aten.detach.default"}
SAME_OPS = {"aten.randn.default": "aten.randn_like.default"}  # the same draw, spelled differently


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _count(fn):
    fn()  # warm-up
    with _CountOps() as c:
        fn()
    return c.ops


def test_programmed_elbo_gradient_runs_exactly_the_hand_written_kernels_plus_input_checks():
    torch.manual_seed(0)
    vae = bench.VAE()
    x = bench.digits_data()[:64]
    prog = bench.programmed_elbo(vae)
    hand = _count(lambda: (-bench.hand_elbo(vae, x)).backward())
    mine = _count(lambda: (-prog.surrogate(x)).backward())
    compute = Counter({SAME_OPS.get(k, k): v for k, v in mine.items() if k not in CHECK_OPS})
    hand_compute = Counter({k: v for k, v in hand.items() if k not in CHECK_OPS})
    assert compute == hand_compute, (compute - hand_compute, hand_compute - compute)
    # the checks: one aminmax per parameter tensor (mean, std) of the one site, one NaN check of the value
    assert mine["aten.aminmax.default"] == 2 and mine["aten.isnan.default"] == 1, mine


@pytest.mark.parametrize("prim,event", [(A.normal_reparam, 0), (A.mvnormal_diag_reparam, 1)],
                         ids=["normal", "mvnormal_diag"])
def test_fast_reparam_log_density_equals_torch_distributions(prim, event):
    torch.manual_seed(1)
    mu = torch.randn(5, 3, requires_grad=True)
    ls = torch.randn(5, 3, requires_grad=True)
    v, lp_fn = prim.fast(mu, ls.exp())
    lp = lp_fn()
    ref = prim.dist(mu, ls.exp()).log_prob(v)
    assert lp.shape == ref.shape == ((5,) if event else (5, 3))
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-5)
    # total derivative along the reparameterisation path (the value depends on mu and ls too)
    g = torch.autograd.grad(lp.sum(), [mu, ls], allow_unused=True, retain_graph=True)
    g_ref = torch.autograd.grad(ref.sum(), [mu, ls])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(torch.zeros_like(b) if a is None else a, b, rtol=1e-4, atol=1e-5)
    # a broadcast std gives the mean's shape of noise
    v2, lp2 = prim.fast(mu, torch.tensor(0.5))
    assert v2.shape == mu.shape and lp2().shape == ref.shape


def test_bench_pyro_step_computes_the_hand_written_gradient():
    pytest.importorskip("pyro")
    import pyro

    torch.manual_seed(2)
    vae = bench.VAE()
    x = bench.digits_data()[:32]
    params = list(vae.parameters())
    torch.manual_seed(7)
    g_hand = torch.autograd.grad(bench.hand_elbo(vae, x), params)
    step = bench.pyro_step_fn(vae)
    vae.zero_grad(set_to_none=True)
    with pyro.validation_enabled(False):
        torch.manual_seed(7)
        step(x)
    for p, g in zip(params, g_hand):
        assert p.grad is not None, "the Pyro step computed no gradient"
        torch.testing.assert_close(-p.grad, g, rtol=1e-4, atol=1e-5)
