"""Hand-computed steps, EVODiff coefficients, NFE accounting, convergence, sample statistics, bad input."""

import math

import pytest
import torch

import gradkit_core
from gradkit_evodiff.models import GaussianMixture, mmd_rbf, reconstruction_error, sliced_wasserstein
from gradkit_evodiff.samplers import DDIM, EDMHeun, EVODiff, DPMSolverPP, DPMSolverPP2M, SAMPLERS, \
    SamplerDivergedError
from gradkit_evodiff.schedules import EDMSchedule, VPSchedule, time_grid

EDM = EDMSchedule()
MU, S = 0.3, 0.5  # 1-D Gaussian target N(MU, S^2)


def gauss_D(x, sigma):
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def gauss_model(x, t):
    return gauss_D(x, t.to(x.dtype).reshape(-1, *[1] * (x.dim() - 1)))


def test_ddim_single_step_by_hand():
    s = DDIM(gauss_model, EDMSchedule(0.5, 2.0), prediction="data", denoise_to_zero=False)
    x = torch.tensor([[1.7], [-0.4]], dtype=torch.float64)
    out = s.sample(x, 1)
    # sigma 2 -> 0.5: x' = (0.5/2) x + (1 - 0.5/2) D(x, 2)
    for xi, oi in zip(x.flatten().tolist(), out.flatten().tolist()):
        assert oi == pytest.approx(0.25 * xi + 0.75 * (MU + 0.25 / 4.25 * (xi - MU)), rel=1e-12)
    assert s.nfe_used == 1


def test_dpmpp_2m_two_steps_by_hand():
    s = DPMSolverPP(gauss_model, EDMSchedule(0.5, 2.0), order=2, prediction="data", denoise_to_zero=False,
                    lower_order_final=False)
    x0 = 1.3
    out = float(s.sample(torch.tensor([[x0]], dtype=torch.float64), 2))
    # logSNR grid: sigma 2, 1, 0.5; h = ln 2, r0 = 1, 1 - e^{-h} = 1/2
    m0 = MU + S ** 2 / (S ** 2 + 4) * (x0 - MU)
    x1 = 0.5 * x0 + 0.5 * m0
    m1 = MU + S ** 2 / (S ** 2 + 1) * (x1 - MU)
    x2 = 0.5 * x1 + 0.5 * m1 + 0.5 * 0.5 * (m1 - m0)
    assert out == pytest.approx(x2, rel=1e-12)


def _hand_evodiff(x, D, sig, t, steps_total):
    """EVODiff on scalars, written from the paper brief's equations (EDM: kappa = sigma = t)."""
    sig0 = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    clip = lambda v: max(-2.0, min(2.0, v))  # noqa: E731
    m = [D(x, t[0])]
    h = 1 / sig[1] - 1 / sig[0]
    x = sig[1] / sig[0] * x + sig[1] * h * m[0]
    m.append(D(x, t[1]))
    coeffs = []
    for i in range(2, len(sig)):
        h = 1 / sig[i] - 1 / sig[i - 1]
        xe = sig[i] / sig[i - 1] * x + sig[i] * h * m[-1]
        if i == len(sig) - 1:
            rho = sig[i] / sig[i - 1]
            rf = 1 - 0.5 * math.sqrt(rho) if rho < 0.5 else 1 - 0.5 * math.sqrt(rho - 0.5)
            x = (1 - math.sqrt(sig[i] * sig[i - 1])) * xe + 0.5 * sig[i] * h * (m[-1] - rf * m[-2])
            break
        r = math.log(sig[i - 2] / sig[i - 1]) / math.log(sig[i - 1] / sig[i])
        tn = (t[i] + t[-1]) / (t[0] + t[-1])
        w = 0.5 * (1 - tn ** 2)
        b = math.sqrt((sig[i] / sig[i - 1]) / (sig[i - 1] / sig[i - 2]))
        beta1 = (1 - w) * b + w * clip(m[-1] * m[-2] / m[-2] ** 2)
        d1 = m[-1] - beta1 * m[-2]
        ri = min(max(sig0(0.25 * abs(beta1)) * r, 0.25 * r), 1.5 * r)
        xp = xe + 0.5 * sig[i] * h * d1 / ri
        mt = D(xp, t[i])
        beta2 = (1 - w) * b + w * clip(mt * m[-1] / m[-1] ** 2)
        d2 = mt - beta2 * m[-1]
        bm, bp = d1 / (r * h), r * d2 / h
        eta_star = 0.5 * clip((bp + bm) * (bp - bm) / (bp - bm) ** 2)
        eta = 0.5 * sig0(abs(eta_star))
        bt = -eta / r * d1 + r * (1 - eta) * d2
        p = xp - xe - 0.5 * sig[i] * h * bt / ri
        zeta_star = clip(p * d1 / d1 ** 2) / (h * sig[i])
        zeta = sig0(abs(zeta_star) - 0.5)
        x = xe + 0.5 * sig[i] * h * bt / zeta
        coeffs.append(dict(beta1=beta1, r_i=ri, beta2=beta2, eta=eta, zeta=zeta))
        m.append(mt)
    return x, coeffs


@pytest.mark.parametrize("grid", ["logSNR", "edm"])
def test_evodiff_coefficients_match_paper_formulas(grid):
    """Nonlinear scalar denoiser, 5 solver steps: beta, r_i, eta, zeta and the output equal the hand computation."""
    D = lambda x, t: math.tanh(0.8 * x) + 0.1 * t  # noqa: E731
    model = lambda x, t: torch.tanh(0.8 * x) + 0.1 * t.to(x.dtype)[:, None]  # noqa: E731
    sch = EDMSchedule(0.05, 5.0)
    s = EVODiff(model, sch, prediction="data", denoise_to_zero=False, record=True, skip_type=grid)
    x0 = 2.1
    out = float(s.sample(torch.tensor([[x0]], dtype=torch.float64), 5))
    ts = time_grid(sch, 5.0, 0.05, 5, grid).tolist()
    ref, coeffs = _hand_evodiff(x0, D, ts, ts, 5)
    assert out == pytest.approx(ref, rel=1e-10)
    assert len(coeffs) == 3 and len([c for c in s.trace if not c.get("final")]) == 3
    for got, want in zip(s.trace, coeffs):
        for k, v in want.items():
            assert float(got[k]) == pytest.approx(v, rel=1e-10), k
    # the coefficients are non-trivial (not the DPM-Solver++ values beta = 1, zeta = r)
    assert any(abs(c["beta1"] - 1) > 1e-3 for c in coeffs)
    assert all(0 < c["zeta"] < 1 and 0.25 <= c["eta"] <= 0.5 for c in coeffs)


def test_evodiff_ablated_equals_dpmpp_2m():
    """beta = 1, r_i = r, no corrector, first-order final step: EVODiff reduces to DPM-Solver++(2M) exactly."""
    gm = GaussianMixture.ring()
    for sch in (EDM, VPSchedule()):
        model = gm.denoiser(sch)
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
        a = EVODiff(model, sch, prediction="data", balance=False, adaptive_r=False, corrector=False,
                    final_step="ddim")
        b = DPMSolverPP2M(model, sch, prediction="data")
        for nfe in (3, 6, 11):
            torch.testing.assert_close(a.sample(x, nfe), b.sample(x, nfe), rtol=1e-10, atol=1e-12)
        # and the full method does differ
        assert (EVODiff(model, sch, prediction="data").sample(x, 6) - b.sample(x, 6)).abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("nfe", [3, 4, 7, 10])
def test_model_calls_equal_nfe(name, nfe, counting):
    gm = GaussianMixture.ring()
    model, box = counting(gm.denoiser(EDM))
    s = SAMPLERS[name](model, EDM, prediction="data")
    s.sample(torch.randn(8, 2), nfe)
    expected = 2 * ((nfe + 1) // 2) - 1 if name == "heun" else nfe
    assert box["calls"] == s.nfe_used == expected


def _gauss_errors(name, nfes):
    g = GaussianMixture(torch.tensor([[0.3, -0.2]]), 0.5)
    x = 80 * torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = g.exact_ode_gaussian(x, 80.0, 0.002)
    s = SAMPLERS[name](g.denoiser(EDM), EDM, prediction="data", denoise_to_zero=False, consistency_above=10 ** 6) \
        if name == "evodiff" else SAMPLERS[name](g.denoiser(EDM), EDM, prediction="data", denoise_to_zero=False)
    return [reconstruction_error(s.sample(x, n), exact) for n in nfes]


def test_convergence_orders_on_exact_gaussian_flow():
    """Against the closed-form probability-flow map of a Gaussian: DDIM is first order, DPM-Solver++(2M) second."""
    nfes = [20, 40, 80]
    ddim, dpm = _gauss_errors("ddim", nfes), _gauss_errors("dpmpp-2m", nfes)
    # squared error: order p => ratio 4^p per NFE doubling
    slopes_ddim = [math.log2(ddim[i] / ddim[i + 1]) / 2 for i in range(2)]
    slopes_dpm = [math.log2(dpm[i] / dpm[i + 1]) / 2 for i in range(2)]
    assert all(0.7 < p < 1.4 for p in slopes_ddim), slopes_ddim
    assert all(p > 1.6 for p in slopes_dpm), slopes_dpm


def test_evodiff_error_falls_with_nfe():
    errs = _gauss_errors("evodiff", [5, 10, 20, 40, 80, 160])
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 2e-5
    # the heuristic (sigmoid-squashed) coefficients keep it only ~first order asymptotically (README)
    assert math.log2(errs[-2] / errs[-1]) / 2 > 0.6


def test_mixture_denoiser_is_tweedie():
    """E[x0|xt] = (xt + sigma^2 grad log p_t(xt)) / alpha with the exact mixture density (VP schedule)."""
    gm = GaussianMixture.ring(n=5, radius=1.5, std=0.3)
    sch = VPSchedule()
    x = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64)
    a, s = sch.alpha(t), sch.sigma(t)
    var = a ** 2 * gm.std ** 2 + s ** 2
    logp = torch.logsumexp(torch.log(gm.weights)[None] - ((x[:, None] - a * gm.means[None]) ** 2).sum(-1) / (2 * var),
                           dim=1).sum()
    (g,) = torch.autograd.grad(logp, x)
    tweedie = (x + s ** 2 * g) / a
    got = gm.denoiser(sch)(x.detach(), torch.full((16,), 0.4, dtype=torch.float64))
    torch.testing.assert_close(got, tweedie.detach(), rtol=1e-9, atol=1e-10)


def test_noise_prediction_path_matches_data_prediction():
    gm = GaussianMixture.ring()
    for sch in (EDM, VPSchedule()):
        data_model = gm.denoiser(sch)

        def eps_model(x, t, sch=sch):
            a = sch.alpha(t.double())[:, None].to(x.dtype)
            s = sch.sigma(t.double())[:, None].to(x.dtype)
            return (x - a * data_model(x, t)) / s

        x = torch.randn(32, 2, dtype=torch.float64)
        for name in ("evodiff", "dpmpp-2m"):
            a = SAMPLERS[name](data_model, sch, prediction="data").sample(x, 8)
            b = SAMPLERS[name](eps_model, sch, prediction="noise").sample(x, 8)
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_exact_score_statistics_approach_target():
    gm = GaussianMixture.ring(radius=1.0, std=0.1)
    s = EVODiff(gm.denoiser(EDM), EDM, prediction="data")
    x = s.sample(s.prior_sample((4000, 2), torch.Generator().manual_seed(3), dtype=torch.float64), 20)
    target = gm.sample(4000, torch.Generator().manual_seed(4)).double()
    assert x.mean(0).abs().max() < 0.05
    torch.testing.assert_close(torch.cov(x.T), torch.eye(2, dtype=torch.float64) * (0.5 + 0.01), atol=0.04, rtol=0)
    sw_20 = sliced_wasserstein(x, target)
    x4 = s.sample(s.prior_sample((4000, 2), torch.Generator().manual_seed(3), dtype=torch.float64), 3)
    assert sw_20 < 0.08 and sliced_wasserstein(x4, target) > sw_20
    assert mmd_rbf(x[:1000], target[:1000]) < mmd_rbf(x4[:1000], target[:1000])
    # a far-off cloud is far
    assert sliced_wasserstein(target + 1.0, target) > 0.5


def test_vp_schedule_round_trip_and_grid():
    sch = VPSchedule()
    t = torch.linspace(1e-3, 1.0, 50, dtype=torch.float64)
    torch.testing.assert_close(sch.inverse_lambda(sch.lambda_(t)), t, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones_like(t))
    ts = time_grid(sch, 1.0, 1e-3, 7, "logSNR")
    lam = sch.lambda_(ts)
    torch.testing.assert_close(lam[1:] - lam[:-1], torch.full((7,), float(lam[1] - lam[0]), dtype=torch.float64))
    k = time_grid(EDM, 80.0, 0.002, 4, "edm")
    assert float(k[0]) == 80.0 and float(k[-1]) == pytest.approx(0.002)
    assert torch.all(k[1:] < k[:-1])


def _bad_nan(x, t):
    return torch.full_like(x, float("nan"))


def test_bad_inputs():
    gm = GaussianMixture.ring()
    model = gm.denoiser(EDM)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="nfe >= 3"):
        EVODiff(model, EDM, prediction="data").sample(x, 2)
    for name in SAMPLERS:
        with pytest.raises(ValueError, match="nfe >="):
            SAMPLERS[name](model, EDM, prediction="data").sample(x, 0)
    with pytest.raises(TypeError, match="nfe must be an int"):
        DDIM(model, EDM, prediction="data").sample(x, 5.0)
    with pytest.raises(ValueError, match="shape"):
        DDIM(model, EDM, prediction="data").sample(torch.randn(4), 5)
    with pytest.raises(ValueError, match="shaped like x"):
        EVODiff(lambda x, t: x[:, :1], EDM, prediction="data").sample(x, 5)
    with pytest.raises(ValueError, match="non-finite"):
        EVODiff(_bad_nan, EDM, prediction="data").sample(x, 5)
    with pytest.raises(ValueError, match="non-finite"):
        DDIM(model, EDM).sample(x * float("inf"), 5)
    with pytest.raises(ValueError, match="prediction"):
        EVODiff(model, EDM, prediction="score")
    with pytest.raises(ValueError, match="skip_type"):
        EVODiff(model, EDM, skip_type="quadratic")
    with pytest.raises(TypeError, match="callable"):
        EVODiff("not a model", EDM)
    with pytest.raises(TypeError, match="schedule must provide"):
        EVODiff(model, object())
    with pytest.raises(ValueError, match="t_min < t_max"):
        EVODiff(model, EDM, t_min=5.0, t_max=1.0)
    with pytest.raises(ValueError, match="order"):
        DPMSolverPP(model, EDM, order=4)


def test_registered_and_created_through_gradkit():
    names = {s.name for s in gradkit_core.list(kind="samplers")}
    assert {"evodiff", "ddim", "dpmpp-2m", "dpmpp-3m", "edm-heun"} <= names
    gm = GaussianMixture.ring()
    s = gradkit_core.create("evodiff", gm.denoiser(EDM), EDM, prediction="data")
    assert isinstance(s, EVODiff) and s.temperature == 0.25 and s.r_clip == (0.25, 1.5)
    assert s.consistency_above is None and s.zeta_floor == pytest.approx(1 / (1 + math.exp(0.5)))
    assert isinstance(gradkit_core.create("edm-heun", gm.denoiser(EDM), EDM), EDMHeun)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 80
    torch.testing.assert_close(s.sample(x, 6), EVODiff(gm.denoiser(EDM), EDM, prediction="data").sample(x, 6))


def test_consistency_gated_zeta_above_threshold():
    """With more solver steps than ``consistency_above`` zeta = sigmoid(-(|zeta*| - mu) c),
    c = sigmoid(proj(m_{i-1}, (m_{i-1} - m_{i-2}) / h) (2 - (sigma_i/sigma_{i-1})^2)); below it sigmoid(|zeta*| - mu)."""
    gm = GaussianMixture.ring()
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    gated = EVODiff(gm.denoiser(EDM), EDM, prediction="data", consistency_above=3, zeta_floor=None, record=True)
    gated.sample(x, 7)  # 6 solver steps > 3
    plain = EVODiff(gm.denoiser(EDM), EDM, prediction="data", record=True)
    plain.sample(x, 7)
    steps = [r for r in gated.trace if not r.get("final")]
    assert steps and all("consistency" in r for r in steps)
    for r in steps:
        c = r["consistency"]
        assert torch.all((c > 0) & (c < 1))
        torch.testing.assert_close(r["zeta"], torch.sigmoid(-(r["zeta_star"].abs() - 0.5) * c))
    for r in (r for r in plain.trace if not r.get("final")):
        assert "consistency" not in r
        torch.testing.assert_close(r["zeta"], torch.sigmoid(r["zeta_star"].abs() - 0.5))


def test_corrector_reduces_error_at_low_nfe():
    """Ablation direction of the paper: the variance-optimised corrector beats the probe-only multistep (exact GMM)."""
    gm = GaussianMixture.ring()
    model = gm.denoiser(EDM)
    ref_s = DPMSolverPP(model, EDM, order=2, prediction="data")
    x = ref_s.prior_sample((500, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ref_s.sample(x, 500)
    full, probe = EVODiff(model, EDM, prediction="data"), EVODiff(model, EDM, prediction="data", corrector=False)
    for nfe in (6, 8, 10):
        assert reconstruction_error(full.sample(x, nfe), ref) < reconstruction_error(probe.sample(x, nfe), ref)


def test_sliced_wasserstein_of_shifted_cloud():
    """Shift by d in 2-D: every projection is shifted by d cos(theta), so SW2 = d / sqrt(2)."""
    y = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = torch.tensor([0.6, 0.8], dtype=torch.float64)
    assert sliced_wasserstein(y + d, y, n_proj=2000) == pytest.approx(1 / math.sqrt(2), rel=0.05)
    with pytest.raises(ValueError, match="equal shape"):
        sliced_wasserstein(y[:10], y[:11])


# ---------------------------------------------------------------------------------------------------------------
# issue 11: NFE > 21 returned garbage (gated zeta -> 1e-3 and below, corrector scaled by 1/zeta), iterates unchecked
def _ring_case(dtype=torch.float64, dz=False):
    gm = GaussianMixture.ring()
    model = gm.denoiser(EDM)
    ref_s = DPMSolverPP(model, EDM, order=2, prediction="data")
    x = ref_s.prior_sample((300, 2), torch.Generator().manual_seed(0), dtype=dtype)
    return model, x, ref_s.sample(x, 400)


def test_default_evodiff_stays_accurate_above_nfe_21():
    """Default settings: the error above 21 NFE stays at the level of NFE 15-21 (old default: 1e-3 at NFE 22,
    6.5e4 at NFE 30 on this case) and below half of DDIM's error at the same NFE."""
    model, x, ref = _ring_case(dz=False)
    errs = {n: reconstruction_error(EVODiff(model, EDM, prediction="data", denoise_to_zero=False).sample(x, n), ref)
            for n in (15, 21, 22, 25, 30, 40)}
    for n in (22, 25, 30, 40):
        assert errs[n] < 3 * errs[21] and errs[n] < errs[15], errs
        ddim = reconstruction_error(DDIM(model, EDM, prediction="data", denoise_to_zero=False).sample(x, n), ref)
        assert errs[n] < ddim / 2, (n, errs[n], ddim)


def test_gated_zeta_is_floored_by_default():
    """The gated branch (consistency_above set) keeps zeta >= sigmoid(-shift_mu), the ungated range; unfloored
    (the official code) zeta falls far below it on the same run."""
    model, x, ref = _ring_case(dz=False)
    floor = 1 / (1 + math.exp(0.5))
    guarded = EVODiff(model, EDM, prediction="data", denoise_to_zero=False, consistency_above=20, record=True)
    out = guarded.sample(x, 30)
    zs = torch.cat([r["zeta"].flatten() for r in guarded.trace if "zeta" in r])
    assert zs.min() >= floor - 1e-12 and guarded.zeta_floor == pytest.approx(floor)
    raw = EVODiff(model, EDM, prediction="data", denoise_to_zero=False, consistency_above=20, zeta_floor=None,
                  record=True)
    raw_out = raw.sample(x, 30)
    assert min(float(r["zeta"].min()) for r in raw.trace if "zeta" in r) < 0.01
    assert reconstruction_error(out, ref) < 1e-3 < reconstruction_error(raw_out, ref)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_overflowing_iterate_raises_for_every_sampler(name):
    """A finite noise prediction (1e37, float32) on the VP schedule, where alpha(t_max) ~ 0.006: the data prediction
    (x - sigma eps)/alpha overflows to inf.  Every sampler stops with SamplerDivergedError instead of returning inf
    (the model-output check alone let this through)."""
    vp = VPSchedule()
    huge = lambda x, t: torch.full_like(x, 1e37)  # noqa: E731
    s = SAMPLERS[name](huge, vp, prediction="noise")
    with pytest.raises(SamplerDivergedError, match="overflowed"):
        s.sample(torch.randn(4, 2), 6)


def test_check_iterate_names_the_step():
    s = DDIM(lambda x, t: x, EDM, prediction="data")
    x = torch.ones(2, 2)
    assert s.check_iterate(x, 3, 1.0) is x
    x[1, 0] = float("inf")
    with pytest.raises(SamplerDivergedError, match="solver step 3 .t=1") as exc:
        s.check_iterate(x, 3, 1.0)
    assert exc.value.step == 3 and exc.value.t == 1.0


def test_projection_on_a_zero_direction_is_zero_not_nan():
    s = EVODiff(lambda x, t: x, EDM, prediction="data")
    a = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(s.proj(a, torch.zeros_like(a)), torch.zeros(3, 1, dtype=torch.float64))
    b = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(s.proj(0.5 * b, b), torch.full((3, 1), 0.5, dtype=torch.float64))
    # a model whose data prediction is exactly 0: every <m, m> is 0; the old code returned nan samples
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 80
    ev = EVODiff(zero, EDM, prediction="data", denoise_to_zero=False)
    out = ev.sample(x, 6)
    sig = [float(t) for t in ev.timesteps(6)]          # EDM: sigma = t; 6 solver steps without denoise_to_zero
    torch.testing.assert_close(out, x * (sig[-1] / sig[0]) * (1 - math.sqrt(sig[-1] * sig[-2])))


@pytest.mark.parametrize("kw, exc, match", [
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(shift_mu=float("inf")), ValueError, "shift_mu"),
    (dict(shift_mu=float("nan")), ValueError, "shift_mu"),
    (dict(proj_clip=float("nan")), ValueError, "proj_clip"),
    (dict(proj_clip=0.0), ValueError, "proj_clip"),
    (dict(r_clip=(float("nan"), 1.5)), ValueError, "r_clip"),
    (dict(r_clip=(0.25, float("inf"))), ValueError, "r_clip"),
    (dict(r_clip=(1.5, 0.25)), ValueError, "r_clip"),
    (dict(r_clip=(0.25,)), ValueError, "r_clip"),
    (dict(r_clip=0.5), TypeError, "r_clip"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(consistency_above=-1), ValueError, "consistency_above"),
    (dict(consistency_above=2.5), ValueError, "consistency_above"),
    (dict(zeta_floor=0.0), ValueError, "zeta_floor"),
    (dict(zeta_floor=float("nan")), ValueError, "zeta_floor"),
    (dict(zeta_floor=1.5), ValueError, "zeta_floor"),
])
def test_heuristic_constants_are_validated(kw, exc, match):
    with pytest.raises(exc, match=match):
        EVODiff(lambda x, t: x, EDM, prediction="data", **kw)


def test_reproduction_claims_need_a_margin_over_sample_groups():
    from gradkit_evodiff.reproduce import _below

    nfes, low = (5, 6), (5, 6)
    same = [[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]]
    assert not _below(same, same, nfes, low)[0]                                   # an exact tie never passes
    half = [[v / 2 for v in row] for row in same]
    assert _below(half, same, nfes, low)[0] and not _below(same, half, nfes, low)[0]
    noisy = [[0.5, 0.5, 0.5, 0.5, 3.0], [0.5, 0.5, 0.5, 0.5, 3.0]]                # mean log ratio < 0, spread large
    assert not _below([[a * b for a, b in zip(r, q)] for r, q in zip(same, noisy)], same, nfes, low)[0]
    assert not _below([[float("inf")] * 5, [1.0] * 5], same, nfes, low)[0]      # a diverged run never wins
