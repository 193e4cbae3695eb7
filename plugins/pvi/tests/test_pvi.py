"""Unbiasedness of every primitive x objective pair against exact / analytic gradients, variance
ordering, the cone model, registration and bad input."""

import math

import numpy as np
import pytest
import torch

from gradkit_pvi import adev as A
from gradkit_pvi import objectives as O
from gradkit_pvi.adev import Context

K_SE = 4.0  # |mean - exact| <= K_SE standard errors (+ a float tolerance for zero-variance estimators)


def per_particle_grads(program, params, P):
    """Per-particle gradient estimates: every param has a leading particle dim (P, ...)."""
    e = A.expectation(program)
    s = e.surrogate(*params)
    gs = torch.autograd.grad(s, params, allow_unused=True)
    return [(torch.zeros_like(p) if g is None else g * P).detach() for p, g in zip(params, gs)]


def assert_unbiased(samples, exact, what):
    samples = samples.reshape(samples.shape[0], -1).double()
    exact = exact.reshape(-1).double()
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    err = (mean - exact).abs()
    ok = err <= K_SE * se + 1e-5 * (1 + exact.abs())
    assert ok.all(), f"{what}: mean {mean.tolist()} vs exact {exact.tolist()} (se {se.tolist()})"
    return se


# ------------------------------------------------------------------------------------------------
# exact expectations by enumerating every discrete site (independent of the estimators)
# ------------------------------------------------------------------------------------------------
def _support(site):
    name = site.prim.name.split("+")[0]
    if name.startswith("flip"):
        import itertools
        n = site.value.numel()
        return [torch.tensor(bits, dtype=site.value.dtype).reshape(site.value.shape)
                for bits in itertools.product([0.0, 1.0], repeat=n)]
    if name.startswith("categorical"):
        k = site.params[0].shape[-1]
        return [torch.full_like(site.value, float(c)) for c in range(k)]
    raise AssertionError(f"cannot enumerate {site.prim.name}")


def exact_expectation(program, args):
    """Σ over every joint value of all discrete sites of  Π p(site) · program value."""
    total = 0.0

    def rec(prefix):
        nonlocal total
        ctx = Context(prefix)
        r = program(ctx, *args)
        if len(ctx.sites) > len(prefix):
            for v in _support(ctx.sites[len(prefix)]):
                rec(prefix + [v])
            return
        lp = sum(s.prim.log_prob(s.value, *s.params).sum() for s in ctx.sites)
        costs = sum(c.w for c in ctx.costs) if ctx.costs else 0.0
        total = total + lp.exp() * (r + costs)

    rec([])
    return total


# ------------------------------------------------------------------------------------------------
# T1: primitives on toys with analytic gradients
# ------------------------------------------------------------------------------------------------
FLIPS = [A.flip_enum, A.flip_mvd, A.flip_reinforce, A.baseline(A.flip_reinforce, 0.35)]


def toy_flip(prim):
    def prog(ctx, th):
        b = ctx.sample(prim, torch.sigmoid(th))
        return (b - 0.3) ** 2 + th * b
    return prog


def toy_flip_exact_grad(th):
    p = 1 / (1 + math.exp(-th))
    return p * (1 - p) * (0.49 + th - 0.09) + p


@pytest.mark.parametrize("prim", FLIPS, ids=lambda p: p.name)
def test_flip_estimators_unbiased_on_the_brief_toy(prim):
    torch.manual_seed(0)
    P = 20000
    th = torch.full((P,), 0.4, requires_grad=True)
    (g,) = per_particle_grads(toy_flip(prim), [th], P)
    assert_unbiased(g[:, None], torch.tensor([toy_flip_exact_grad(0.4)]), prim.name)


def test_variance_ordering_enum_mvd_reinforce():
    torch.manual_seed(1)
    P = 20000
    var = {}
    for prim in [A.flip_enum, A.flip_mvd, A.flip_reinforce]:
        th = torch.full((P,), 0.4, requires_grad=True)
        (g,) = per_particle_grads(toy_flip(prim), [th], P)
        var[prim.name] = g.var().item()
    n = P
    # enumeration is exact (variance 0 up to float error); MVD below REINFORCE by > 5 s.e. of the variance
    assert var["flip_enum"] < 1e-10
    se_mvd, se_rf = var["flip_mvd"] * math.sqrt(2 / n), var["flip_reinforce"] * math.sqrt(2 / n)
    assert var["flip_mvd"] > 1e-3
    assert var["flip_reinforce"] - var["flip_mvd"] > 5 * math.hypot(se_mvd, se_rf), var


@pytest.mark.parametrize("prim", [A.normal_reparam, A.normal_reinforce, A.baseline(A.normal_reinforce, 1.0)],
                         ids=lambda p: p.name)
def test_normal_primitives_unbiased(prim):
    torch.manual_seed(2)
    P = 40000
    mu = torch.full((P,), 0.5, requires_grad=True)
    ls = torch.full((P,), -0.3, requires_grad=True)

    def prog(ctx, mu, ls):
        x = ctx.sample(prim, mu, ls.exp())
        return (x - 1.2) ** 2  # E = (mu - 1.2)^2 + sigma^2

    gm, gl = per_particle_grads(prog, [mu, ls], P)
    s = math.exp(-0.3)
    assert_unbiased(torch.stack([gm, gl], 1), torch.tensor([2 * (0.5 - 1.2), 2 * s * s]), prim.name)


def test_mvnormal_uniform_beta_categorical_geometric_unbiased():
    torch.manual_seed(3)
    P = 40000
    # mvnormal_diag_reparam: E |x - c|^2 = |mu - c|^2 + sum sigma^2
    mu = torch.tensor([0.2, -0.4]).repeat(P, 1).requires_grad_()
    prog = lambda ctx, mu: ((ctx.sample(A.mvnormal_diag_reparam, mu, torch.full_like(mu, 0.7)) - 1.0) ** 2).sum(-1)
    (g,) = per_particle_grads(prog, [mu], P)
    assert_unbiased(g, 2 * (torch.tensor([0.2, -0.4]) - 1.0), "mvnormal_diag_reparam")
    # uniform(a, b): E x^2 = (a^2 + ab + b^2) / 3
    a = torch.full((P,), 0.3, requires_grad=True)
    b = torch.full((P,), 1.1, requires_grad=True)
    ga, gb = per_particle_grads(lambda ctx, a, b: ctx.sample(A.uniform, a, b) ** 2, [a, b], P)
    assert_unbiased(torch.stack([ga, gb], 1), torch.tensor([(2 * 0.3 + 1.1) / 3, (0.3 + 2 * 1.1) / 3]), "uniform")
    # beta_implicit: E x = a / (a + b)
    a = torch.full((P,), 2.0, requires_grad=True)
    b = torch.full((P,), 3.0, requires_grad=True)
    ga, gb = per_particle_grads(lambda ctx, a, b: ctx.sample(A.beta_implicit, a, b), [a, b], P)
    assert_unbiased(torch.stack([ga, gb], 1), torch.tensor([3.0 / 25, -2.0 / 25]), "beta_implicit")
    # categorical: E f(c) = sum softmax(l)_c f_c ; grad = p * (f - E f)
    f = torch.tensor([1.0, -2.0, 0.5])
    lg0 = torch.tensor([0.1, 0.4, -0.2])
    p0 = torch.softmax(lg0, 0)
    exact = p0 * (f - (p0 * f).sum())
    for prim in [A.categorical_enum, A.categorical_reinforce]:
        lg = lg0.repeat(P, 1).requires_grad_()
        (g,) = per_particle_grads(lambda ctx, lg: f[ctx.sample(prim, torch.softmax(lg, -1)).long()], [lg], P)
        assert_unbiased(g, exact, prim.name)
    # geometric_reinforce (failures before the first success): E v = (1 - p) / p, d/dp = -1 / p^2
    p = torch.full((P,), 0.6, requires_grad=True)
    (g,) = per_particle_grads(lambda ctx, p: ctx.sample(A.geometric_reinforce, p), [p], P)
    assert_unbiased(g[:, None], torch.tensor([-1 / 0.36]), "geometric_reinforce")


def test_mvd_on_a_vector_site_and_add_cost():
    """A 3-coordinate flip_mvd site, an add_cost after it, against exact enumeration (flip_enum)."""
    torch.manual_seed(4)
    P = 20000
    w = torch.tensor([1.0, -2.0, 0.5])

    def prog_for(prim):
        def prog(ctx, th):
            b = ctx.sample(prim, torch.sigmoid(th))
            ctx.add_cost(th.sum(-1) * b[..., 0])
            return (b * w).sum(-1) ** 2
        return prog

    th0 = torch.tensor([0.3, -0.5, 0.8])
    th1 = th0.clone().requires_grad_()
    exact = torch.autograd.grad(exact_expectation(prog_for(A.flip_enum), (th1,)), th1)[0]
    for prim in [A.flip_mvd, A.flip_enum, A.flip_reinforce]:
        th = th0.repeat(P, 1).requires_grad_()
        (g,) = per_particle_grads(prog_for(prim), [th], P)
        se = assert_unbiased(g, exact, prim.name)
        if prim is A.flip_enum:
            assert se.max() < 1e-6  # fully enumerated: zero variance


# ------------------------------------------------------------------------------------------------
# objectives x discrete primitives against exact enumeration
# ------------------------------------------------------------------------------------------------
def two_level_guide(prim):
    def guide(ctx, th):
        z1 = ctx.sample(prim, torch.sigmoid(th[..., 0]), name="z1")
        z2 = ctx.sample(prim, torch.sigmoid(th[..., 1] + th[..., 2] * z1), name="z2")
        return z1, z2
    return guide


def _bern_lp(z, logit):
    return z * torch.nn.functional.logsigmoid(logit) + (1 - z) * torch.nn.functional.logsigmoid(-logit)


def model_both(m):
    def lp(ch):
        z1, z2 = ch["z1"], ch["z2"]
        return _bern_lp(z1, m[..., 0]) + _bern_lp(z2, m[..., 1] + m[..., 2] * z1) - (2.0 - m[..., 3] * z2) ** 2
    return lp


def model_z2(m):
    def lp(ch):
        z2 = ch["z2"]
        return _bern_lp(z2, m[..., 1]) - (2.0 - m[..., 3] * z2) ** 2
    return lp


TH0 = torch.tensor([0.2, -0.3, 0.9])
M0 = torch.tensor([0.4, -0.2, 0.7, 1.3])

OBJECTIVES = {
    "elbo": lambda g, m: O.elbo(model_both(m), g),
    "iwae2": lambda g, m: O.iwae(model_both(m), g, 2),
    "hvi": lambda g, m: O.hvi(model_z2(m), g, ["z2"]),
    "iwhvi2": lambda g, m: O.iwhvi(model_z2(m), g, ["z2"], 2, 1),
    "diwhvi22": lambda g, m: O.diwhvi(model_z2(m), g, ["z2"], 2, 2),
    "q_wake2": lambda g, m: O.q_wake(model_both(m), g, 2),
    "p_wake2": lambda g, m: O.p_wake(model_both(m), g, 2),
}


@pytest.mark.parametrize("obj", list(OBJECTIVES))
@pytest.mark.parametrize("prim", FLIPS, ids=lambda p: p.name)
def test_objective_x_discrete_primitive_unbiased(obj, prim):
    torch.manual_seed(5)
    P = 6000 if obj != "diwhvi22" else 3000
    th1, m1 = TH0.clone().requires_grad_(), M0.clone().requires_grad_()
    ref = exact_expectation(OBJECTIVES[obj](two_level_guide(prim), m1), (th1,))
    gr = torch.autograd.grad(ref, [th1, m1], allow_unused=True)
    exact = torch.cat([torch.zeros_like(p) if g is None else g for p, g in zip([th1, m1], gr)])
    th, m = TH0.repeat(P, 1).requires_grad_(), M0.repeat(P, 1).requires_grad_()
    prog = OBJECTIVES[obj](two_level_guide(prim), m)
    gth, gm = per_particle_grads(lambda ctx, th, m: prog(ctx, th), [th, m], P)
    # the model gradient (through m) exists in every objective except q_wake
    if obj == "q_wake2":
        assert torch.count_nonzero(gm) == 0
    assert exact.abs().max() > 1e-2
    assert_unbiased(torch.cat([gth, gm], 1), exact, f"{obj} x {prim.name}")


@pytest.mark.parametrize("obj", ["elbo", "iwae2"])
@pytest.mark.parametrize("prim", [A.categorical_enum, A.categorical_reinforce], ids=lambda p: p.name)
def test_objective_x_categorical_unbiased(obj, prim):
    torch.manual_seed(6)
    P = 8000

    def guide(ctx, lg):
        return ctx.sample(prim, torch.softmax(lg, -1), name="c")

    f = torch.tensor([0.5, -1.0, 2.0])
    model = lambda ch: torch.log(torch.tensor([0.2, 0.5, 0.3]))[ch["c"].long()] - (f[ch["c"].long()] - 1.0) ** 2
    build = (lambda g: O.elbo(model, g)) if obj == "elbo" else (lambda g: O.iwae(model, g, 2))
    lg0 = torch.tensor([0.3, -0.1, 0.2])
    lg1 = lg0.clone().requires_grad_()
    exact = torch.autograd.grad(exact_expectation(build(guide), (lg1,)), lg1)[0]
    lg = lg0.repeat(P, 1).requires_grad_()
    (g,) = per_particle_grads(build(guide), [lg], P)
    assert_unbiased(g, exact, f"{obj} x {prim.name}")


def _gauss_model(ch):
    z = ch["z"]  # z ~ N(0, 1), x = 1 | z ~ N(z, 1)
    return -0.5 * z ** 2 - 0.5 * (1.0 - z) ** 2 - math.log(2 * math.pi)


@pytest.mark.parametrize("obj", ["elbo", "iwae2"])
@pytest.mark.parametrize("prim", [A.normal_reparam, A.normal_reinforce], ids=lambda p: p.name)
def test_objective_x_continuous_primitive_against_quadrature(obj, prim):
    torch.manual_seed(7)
    P = 40000

    def guide(ctx, phi):
        return ctx.sample(prim, phi[..., 0], phi[..., 1].exp(), name="z")

    build = (lambda: O.elbo(_gauss_model, guide)) if obj == "elbo" else (lambda: O.iwae(_gauss_model, guide, 2))
    phi0 = torch.tensor([0.2, -0.4])
    # reference: Gauss-Hermite quadrature over the guide's standard normal noise (independent of the estimators)
    x, w = np.polynomial.hermite_e.hermegauss(60)
    x, w = torch.tensor(x, dtype=torch.float64), torch.tensor(w / w.sum(), dtype=torch.float64)
    phi1 = phi0.double().clone().requires_grad_()

    def logw(eps):
        z = phi1[0] + phi1[1].exp() * eps
        lq = -0.5 * eps ** 2 - phi1[1] - 0.5 * math.log(2 * math.pi)
        return _gauss_model({"z": z}) - lq

    if obj == "elbo":
        ref = (w * logw(x)).sum()
    else:
        l1, l2 = logw(x)[:, None], logw(x)[None, :]
        ref = (w[:, None] * w[None, :] * (torch.logaddexp(l1, l2) - math.log(2))).sum()
    exact = torch.autograd.grad(ref, phi1)[0].float()
    phi = phi0.repeat(P, 1).requires_grad_()
    (g,) = per_particle_grads(build(), [phi], P)
    assert_unbiased(g, exact, f"{obj} x {prim.name}")


def test_iwhvi_with_continuous_auxiliary_matches_its_definition():
    """IWHVI(2, 1) on the cone's expressive guide: the value equals log p - log q̂ with q̂ the 2-particle
    conditional-SIR estimate (hand-written here), and it exceeds HVI (N = 1) by a margin."""
    from gradkit_pvi import cone

    s = torch.tensor([-3.0, -3.0])  # near the trained scales, where both objectives have light tails
    sd = math.exp(-3.0)
    P = 50000
    torch.manual_seed(8)
    _, V = A.expectation(O.iwhvi(cone.model_logpdf, cone.expressive_guide, ["x", "y"], 2, 1))._path((s, P))
    torch.manual_seed(9)
    u1 = torch.rand(P)
    r = math.sqrt(5.0)
    x = r * torch.cos(2 * math.pi * u1) + sd * torch.randn(P)
    y = r * torch.sin(2 * math.pi * u1) + sd * torch.randn(P)
    u2 = torch.rand(P)

    def lq(u):
        return (torch.distributions.Normal(r * torch.cos(2 * math.pi * u), sd).log_prob(x)
                + torch.distributions.Normal(r * torch.sin(2 * math.pi * u), sd).log_prob(y))

    ref = cone.model_logpdf({"x": x, "y": y}) - (torch.logaddexp(lq(u1), lq(u2)) - math.log(2))
    se = math.hypot(V.std().item(), ref.std().item()) / math.sqrt(P)
    assert abs(V.mean().item() - ref.mean().item()) < 4 * se, (V.mean(), ref.mean(), se)
    torch.manual_seed(10)
    _, H = A.expectation(O.hvi(cone.model_logpdf, cone.expressive_guide, ["x", "y"]))._path((s, P))
    # definition of HVI(N = 1): log p - log q(x, y | u)
    assert V.mean() - H.mean() > 4 * math.hypot(V.std().item(), H.std().item()) / math.sqrt(P)


# ------------------------------------------------------------------------------------------------
# cone (reduced Table 4 claim, runs in CI)
# ------------------------------------------------------------------------------------------------
def test_cone_elbo_and_hvi_reach_the_paper_values_reduced():
    from gradkit_pvi.reproduce import train_cone

    r_elbo = train_cone("elbo", iters=1500, seed=0, eval_n=5000)
    r_hvi = train_cone("hvi", iters=1500, seed=0, eval_n=5000)
    assert abs(r_elbo["value"] - (-8.08)) < 0.3, r_elbo
    assert abs(r_hvi["value"] - (-9.75)) < 0.3, r_hvi
    assert r_elbo["value"] - r_hvi["value"] > 4 * math.hypot(r_elbo["se"], r_hvi["se"])


# ------------------------------------------------------------------------------------------------
# registration and bad input
# ------------------------------------------------------------------------------------------------
def test_registered_estimators_build_the_objectives():
    import gradkit_core as gk

    names = {s.name for s in gk.list(kind="estimators", plugin="pvi")}
    assert {"adev", "elbo", "iwae", "hvi", "iwhvi", "diwhvi", "q_wake", "p_wake"} <= names
    prog = gk.create("elbo", _gauss_model, lambda ctx, phi: ctx.sample(A.normal_reparam, phi[0], phi[1].exp(),
                                                                        name="z"))
    e = gk.create("adev", prog)
    phi = torch.tensor([0.5, 0.0], requires_grad=True)
    g = e.grad_estimate(phi)[0]
    # reparam ELBO of a unit-variance guide: d/dmu = -(2 mu - 1), d/dlogsigma = 1 - 2 sigma^2 at eps-mean (noisy)
    assert torch.isfinite(g).all() and g.shape == (2,)


def test_bad_input_errors():
    # unknown primitive
    with pytest.raises(TypeError, match="unknown primitive"):
        A.expectation(lambda ctx: ctx.sample(torch.distributions.Normal(0, 1))).estimate()
    with pytest.raises(ValueError, match="unknown primitive 'gaussian'"):
        A.expectation(lambda ctx: ctx.sample("gaussian", 0.0, 1.0)).estimate()
    # NaN parameters
    with pytest.raises(ValueError, match="finite"):
        A.expectation(lambda ctx, m: ctx.sample(A.normal_reparam, m, 1.0)).estimate(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="finite"):
        A.expectation(lambda ctx: ctx.sample(A.flip_mvd, torch.tensor(float("inf")))).estimate()
    # out of range
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        A.expectation(lambda ctx: ctx.sample(A.flip_enum, torch.tensor(1.5))).estimate()
    with pytest.raises(ValueError, match="std must be > 0"):
        A.expectation(lambda ctx: ctx.sample(A.normal_reparam, 0.0, -1.0)).estimate()
    # wrong shapes
    with pytest.raises(ValueError, match="do not broadcast"):
        A.expectation(lambda ctx: ctx.sample(A.normal_reparam, torch.zeros(3), torch.ones(2))).estimate()
    with pytest.raises(ValueError, match="particle shape"):
        A.expectation(lambda ctx: ctx.sample(A.flip_mvd, torch.tensor(0.5)) + torch.zeros(4)).estimate()
    with pytest.raises(ValueError, match="add_cost"):
        def prog(ctx):
            ctx.add_cost(torch.zeros(3))
            return torch.zeros(4)
        A.expectation(prog).estimate()
    with pytest.raises(ValueError, match="sum to 1"):
        A.expectation(lambda ctx: ctx.sample(A.categorical_enum, torch.tensor([0.5, 0.7]))).estimate()
    with pytest.raises(ValueError, match="branches"):
        A.expectation(lambda ctx: ctx.sample(A.flip_enum, torch.full((1, 20), 0.5)).sum(-1)).estimate()
    # not a tensor / not a program / bad objective hyperparameters
    with pytest.raises(TypeError, match="must return a tensor"):
        A.expectation(lambda ctx: "x").estimate()
    with pytest.raises(TypeError):
        A.expectation(3)
    with pytest.raises(ValueError, match="K must be a positive integer"):
        O.iwae(_gauss_model, lambda ctx: None, 0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        O.marginal(lambda ctx: None, ["x"], 0)
    with pytest.raises(ValueError, match="never sampled"):
        A.expectation(O.hvi(_gauss_model, lambda ctx: ctx.sample(A.normal_reparam, 0.0, 1.0, name="z"),
                            ["w"])).estimate()
    # NaN model parameters surface as a clear error, not a NaN gradient
    with pytest.raises(ValueError, match="NaN"):
        bad = torch.tensor(float("nan"))
        A.expectation(O.elbo(lambda ch: -(ch["z"] - bad) ** 2,
                             lambda ctx: ctx.sample(A.normal_reparam, 0.0, 1.0, name="z"))).surrogate()
    with pytest.raises(TypeError, match="baseline"):
        A.baseline(A.flip_mvd, 0.0)


# ------------------------------------------------------------------------------------------------
# the hybrid estimator (MVD, then enumeration: the artifact's genjax_hybrid_air.py) and REINFORCE
# with a data-dependent (learned) baseline
# ------------------------------------------------------------------------------------------------
def hybrid_two_level_guide(ctx, th):
    z1 = ctx.sample(A.flip_mvd, torch.sigmoid(th[..., 0]), name="z1")
    z2 = ctx.sample(A.flip_enum, torch.sigmoid(th[..., 1] + th[..., 2] * z1), name="z2")
    return z1, z2


@pytest.mark.parametrize("obj", list(OBJECTIVES))
def test_objective_x_hybrid_mvd_then_enum_unbiased(obj):
    torch.manual_seed(11)
    P = 6000 if obj != "diwhvi22" else 3000
    th1, m1 = TH0.clone().requires_grad_(), M0.clone().requires_grad_()
    ref = exact_expectation(OBJECTIVES[obj](two_level_guide(A.flip_enum), m1), (th1,))
    gr = torch.autograd.grad(ref, [th1, m1], allow_unused=True)
    exact = torch.cat([torch.zeros_like(p) if g is None else g for p, g in zip([th1, m1], gr)])
    th, m = TH0.repeat(P, 1).requires_grad_(), M0.repeat(P, 1).requires_grad_()
    prog = OBJECTIVES[obj](hybrid_two_level_guide, m)
    gth, gm = per_particle_grads(lambda ctx, th, m: prog(ctx, th), [th, m], P)
    assert_unbiased(torch.cat([gth, gm], 1), exact, f"{obj} x hybrid")


@pytest.mark.parametrize("obj", ["elbo", "iwae2", "hvi"])
def test_reinforce_with_a_per_particle_baseline_unbiased_and_checked(obj):
    """A baseline that varies across particles (as a learned b(x) does) but not with the sample."""
    torch.manual_seed(12)
    P = 6000
    b = 1.0 + 2.0 * torch.randn(P)
    th1, m1 = TH0.clone().requires_grad_(), M0.clone().requires_grad_()
    ref = exact_expectation(OBJECTIVES[obj](two_level_guide(A.flip_enum), m1), (th1,))
    exact = torch.cat([torch.zeros_like(p) if g is None else g
                       for p, g in zip([th1, m1], torch.autograd.grad(ref, [th1, m1], allow_unused=True))])
    th, m = TH0.repeat(P, 1).requires_grad_(), M0.repeat(P, 1).requires_grad_()
    prog = OBJECTIVES[obj](two_level_guide(A.baseline(A.flip_reinforce, b)), m)
    gth, gm = per_particle_grads(lambda ctx, th, m: prog(ctx, th), [th, m], P)
    assert_unbiased(torch.cat([gth, gm], 1), exact, f"{obj} x reinforce + per-particle baseline")
    # a baseline that does not broadcast to the particle shape is refused
    bad = OBJECTIVES[obj](two_level_guide(A.baseline(A.flip_reinforce, torch.zeros(P, 2))), m)
    with pytest.raises(ValueError, match="baseline of shape"):
        A.expectation(lambda ctx, th: bad(ctx, th)).surrogate(th)


def _vae_grads(estimator, vae, x, bnet=None):
    from gradkit_pvi.discrete import estimator_step

    vae.zero_grad(set_to_none=True)
    estimator_step(estimator, vae, x, bnet).backward()  # the loss is minus the ELBO surrogate
    return -torch.cat([vae.enc[2].bias.grad, vae.dec[2].bias.grad])


def test_binary_vae_hybrid_and_learned_baseline_unbiased_against_enumeration():
    """The discrete comparison's estimators on its own model: the mean of R gradient estimates of the
    batch ELBO (encoder output bias, decoder output bias) within 4 s.e. of the exact gradient from
    enumerating all 2^D latent values; the learned baseline lowers REINFORCE's variance."""
    from gradkit_pvi.discrete import BaselineNet, BinaryVAE, data

    torch.manual_seed(13)
    vae = BinaryVAE(latent=4)
    x = data()[0][:8]
    vae.zero_grad(set_to_none=True)
    vae.exact_elbo_per_datum(x).mean().backward()
    exact = torch.cat([vae.enc[2].bias.grad, vae.dec[2].bias.grad]).clone()
    xr = x.repeat(20, 1)  # 20 draws per datum in one estimate; R estimates below
    bnet = BaselineNet()
    opt = torch.optim.Adam(bnet.parameters(), lr=1e-2)
    for _ in range(100):  # fit the baseline at fixed VAE parameters (only the regression loss moves bnet)
        opt.zero_grad(set_to_none=True)
        _vae_grads("reinforce_bl", vae, xr, bnet)
        opt.step()
    R = 100
    est = {e: torch.stack([_vae_grads(e, vae, xr, bnet if e == "reinforce_bl" else None) for _ in range(R)])
           for e in ["reinforce", "reinforce_bl", "hybrid", "mvd"]}
    for e, g in est.items():
        assert_unbiased(g, exact, f"binary VAE {e}")
    assert exact[:4].abs().max() > 1e-2
    # variance of the encoder-bias gradient: the learned baseline and the hybrid beat plain REINFORCE
    v = {e: g[:, :4].var(0).sum().item() for e, g in est.items()}
    assert v["reinforce_bl"] < 0.1 * v["reinforce"], v
    assert v["hybrid"] < 0.1 * v["reinforce"], v


def test_discrete_comparison_bad_input():
    from gradkit_pvi.discrete import BaselineNet, BinaryVAE, estimator_step, train

    vae = BinaryVAE(latent=4)
    x = torch.zeros(3, 64)
    with pytest.raises(ValueError, match="unknown estimator 'reinfroce'"):
        estimator_step("reinfroce", vae, x)
    with pytest.raises(ValueError, match="unknown estimator"):
        train("gumbel", 1, 0)
    with pytest.raises(ValueError, match="baseline_net"):
        estimator_step("reinforce_bl", vae, x)
    with pytest.raises(ValueError, match="decay"):
        BaselineNet(decay=1.0)
    with pytest.raises(ValueError, match="latent >= 2"):
        BinaryVAE(latent=1).hybrid_guide()


def test_discrete_summary_picks_each_best_lr_and_compares_at_equal_iterations_and_cpu_time():
    from gradkit_core.results import Result
    from gradkit_pvi.reproduce import _discrete_summary, _interp

    assert _interp([0.0, 1.0, 2.0], [0.0, 10.0, 20.0], 1.5) == 15.0
    assert math.isnan(_interp([0.0, 1.0], [0.0, 1.0], 1.5))

    def run(final, cpu_end, jitter):
        return {"iters": [0, 100], "cpu_s": [0.0, cpu_end], "elbo": [-40.0, final + jitter], "final": final + jitter}

    seeds = [0.01, -0.02, 0.015]
    disc = {  # reinforce: best lr 1e-2 (interior); mvd: best 1e-1 (edge), 2x the CPU time per iteration
        "reinforce": {1e-3: [run(-26, 1.0, j) for j in seeds], 1e-2: [run(-25, 1.0, j) for j in seeds],
                      1e-1: [run(-27, 1.0, j) for j in seeds]},
        "mvd": {1e-3: [run(-24, 2.0, j) for j in seeds], 1e-2: [run(-23, 2.0, j) for j in seeds],
                1e-1: [run(-22, 2.0, j) for j in seeds]},
        "rws": {1e-2: [run(-25, 1.0, -j) for j in seeds]},  # equal to REINFORCE up to noise: no claim
    }
    res = Result("t")
    _discrete_summary(res, disc)
    rows = {r["objective"]: r for r in res.rows}
    assert rows["binary-VAE/reinforce"]["best_lr"] == 1e-2 and not rows["binary-VAE/reinforce"]["best_lr_at_grid_edge"]
    assert rows["binary-VAE/mvd"]["best_lr"] == 1e-1 and rows["binary-VAE/mvd"]["best_lr_at_grid_edge"]
    # at REINFORCE's CPU budget (1 s) mvd is half-way: -40 + (-22 + 40) / 2 = -31
    assert abs(rows["binary-VAE/mvd"]["elbo_at_reinforce_cpu"] - (-31.0)) < 0.05
    claims = {c.text.split(" reaches")[0] + (" cpu" if "CPU" in c.text else ""): c.passed for c in res.claims}
    assert claims["binary VAE: mvd"] is True and claims["binary VAE: mvd cpu"] is False
    assert claims["binary VAE: rws"] is False
    assert any("mvd" in n and "edge" in n for n in res.notes)
