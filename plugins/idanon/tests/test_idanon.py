import math

import numpy as np
import pytest
import torch

from gradkit_core.testing.architectures import ArchitectureConformance
from gradkit_idanon.anonymizer import IdentityDecoupledAnonymizer
from gradkit_idanon.faces import ATTRIBUTES, make_faces, render
from gradkit_idanon.metrics import kernel_distance, reidentification_rate
from gradkit_idanon.mi import CLUB, hsic, mi_penalty
from gradkit_idanon.oracles import FaceEmbedder, OracleEnsemble, far_threshold, train_oracle
from gradkit_idanon.sampler import ManifoldRejectionSampler, RejectionSamplingError
from gradkit_idanon.vae import DisentangledFaceVAE, independence_penalty


def _oracles(m=3, seed=0):
    torch.manual_seed(seed)
    return [FaceEmbedder(width=4, dim=8).eval() for _ in range(m)]


def _faces(n=6, seed=0):
    return torch.as_tensor(make_faces(3, 2, seed=seed).images)[:n]


# ----------------------------------------------------------------- privacy hinge
def test_hinge_value_matches_the_formula():
    x, xa = _faces(), _faces(seed=1)
    ens = OracleEnsemble(_oracles(), [0.1, 0.2, 0.3], weights=[1.0, 2.0, 0.5])
    sim = ens.similarity(xa, x)
    want = sum(w * torch.relu(sim[m] - t).mean() for m, (w, t) in enumerate(zip([1.0, 2.0, 0.5], [0.1, 0.2, 0.3])))
    assert torch.allclose(ens.hinge_loss(xa, x), want)


def test_hinge_gradient_is_exactly_zero_below_every_threshold_and_nonzero_above():
    x = _faces()
    xa = _faces(seed=1).clone().requires_grad_(True)
    ors = _oracles()
    sim = OracleEnsemble(ors, [0.0] * 3).similarity(xa, x).detach()
    below = OracleEnsemble(ors, (sim.max(1).values + 1e-3).clamp(max=1.0).tolist())
    loss = below.hinge_loss(xa, x)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(xa.grad, torch.zeros_like(xa))
    # one oracle above its threshold: non-zero gradient, equal to that oracle's own term's gradient
    taus = (sim.max(1).values + 1e-3).clamp(max=1.0).tolist()
    taus[1] = float(sim[1].min()) - 1e-3
    xa.grad = None
    OracleEnsemble(ors, taus).hinge_loss(xa, x).backward()
    g_all = xa.grad.clone()
    assert g_all.abs().sum() > 0
    xa.grad = None
    OracleEnsemble([ors[1]], [taus[1]]).hinge_loss(xa, x).backward()
    assert torch.allclose(g_all, xa.grad)


def test_far_threshold_is_the_impostor_quantile():
    torch.manual_seed(0)
    d = make_faces(6, 4, seed=3)
    x, ids = torch.as_tensor(d.images), torch.as_tensor(d.ids)
    o = _oracles(1)[0]
    tau = far_threshold(o, x, ids, far=0.1)
    with torch.no_grad():
        e = o(x)
    sim = e @ e.T
    imp = [float(sim[i, j]) for i in range(24) for j in range(i + 1, 24) if ids[i] != ids[j]]
    assert np.mean(np.array(imp) > tau) <= 0.1 + 1e-9 and np.mean(np.array(imp) >= tau) >= 0.1 - 1e-9
    with pytest.raises(ValueError, match="impostor pairs"):
        far_threshold(o, x, ids, far=1e-6)


# ----------------------------------------------------------------- MI estimators
def _pairs(dependent, n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    if dependent:
        y = x @ torch.randn(4, 6, generator=g) + 0.3 * torch.randn(n, 6, generator=g)
    else:
        y = torch.randn(n, 6, generator=g)
    return x, y


def test_hsic_ranks_dependent_above_independent_with_margin():
    ind = [float(hsic(*_pairs(False, seed=s))) for s in range(3)]
    dep = [float(hsic(*_pairs(True, seed=s))) for s in range(3)]
    assert min(dep) > 5 * max(ind)
    x, y = _pairs(True)
    x.requires_grad_(True)
    hsic(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _fit_club(x, y, steps=200):
    torch.manual_seed(0)
    c = CLUB(x.shape[1], y.shape[1], hidden=16)
    opt = torch.optim.Adam(c.parameters(), lr=5e-3)
    for _ in range(steps):
        opt.zero_grad()
        c.learning_loss(x, y).backward()
        opt.step()
    return c


def test_club_ranks_dependent_above_independent_with_margin():
    xi, yi = _pairs(False, n=2048, seed=5)
    xd, yd = _pairs(True, n=2048, seed=5)
    ind = float(_fit_club(xi, yi)(*_pairs(False, seed=1)).detach())
    dep = float(_fit_club(xd, yd)(*_pairs(True, seed=1)).detach())
    assert abs(ind) < 0.3, ind
    assert dep > ind + 2.0, (dep, ind)


def test_mi_penalty_bad_input():
    x, y = _pairs(True)
    with pytest.raises(ValueError, match="unknown MI estimator"):
        mi_penalty(x, y, method="mine")
    with pytest.raises(ValueError, match="CLUB"):
        mi_penalty(x, y, method="club")
    with pytest.raises(ValueError, match="batch size"):
        hsic(x, y[:-1])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hsic(bad, y)


# ----------------------------------------------------------------- rejection sampler
def _sampler(**kw):
    codes = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    return ManifoldRejectionSampler.from_codes(codes, n_components=2, **kw), codes


def test_sampler_accepts_only_distinct_and_realistic_codes_and_is_seeded():
    s, codes = _sampler(max_cos=0.0, density_quantile=0.2)
    z = codes[:50]
    a = s.sample(z, generator=1)
    assert torch.equal(a, s.sample(z, generator=1))
    c = a.double().numpy() - s.center
    zc = z.double().numpy() - s.center
    cos = (c * zc).sum(1) / np.linalg.norm(c, axis=1) / np.linalg.norm(zc, axis=1)
    assert (cos < 0.0).all()
    assert (s.density.score_samples(a.double().numpy()) > s.min_log_density).all()


def test_sampler_retry_cap_raises_a_clear_error():
    s, codes = _sampler(max_tries=3)
    s.min_log_density = 1e6  # unreachable density
    with pytest.raises(RejectionSamplingError, match="max_tries=3"):
        s.sample(codes[:4], generator=0)
    assert s.last_tries == 3


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="impossible"):
        _sampler(max_cos=-1.0)
    s, codes = _sampler()
    with pytest.raises(ValueError, match="columns"):
        s.sample(codes[:, :3])
    bad = codes[:3].clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        s.sample(bad)
    with pytest.raises(TypeError, match="density"):
        ManifoldRejectionSampler(object(), min_log_density=0.0)


# ----------------------------------------------------------------- VAE and the independence term
class TestVAEConformance(ArchitectureConformance):
    component = "idanon-vae"
    component_kwargs = {"id_dim": 4, "attr_channels": 2, "width": 4, "oracle_dim": 8}
    unused_parameters = ("to_oracle.weight", "to_oracle.bias")

    def example_input(self):
        return _faces(4)

    def bad_inputs(self):
        return super().bad_inputs() + [_faces(4)[:, :, :16], torch.zeros(0, 1, 32, 32)]


def test_independence_penalty_equals_the_jacobian_norm_and_trains_the_decoder():
    torch.manual_seed(0)
    vae = DisentangledFaceVAE(id_dim=4, attr_channels=2, width=4, oracle_dim=8)
    phi = _oracles(1)[0]
    zi, za = torch.randn(2, 4), torch.randn(2, 2, 8, 8)
    exact = independence_penalty(vae, phi, zi, za, exact=True)
    J = torch.autograd.functional.jacobian(lambda a: phi(vae.decode(zi, a)), za)  # (2, 8, 2, 2, 8, 8)
    want = sum((J[b, :, b] ** 2).sum() for b in range(2)) / 2
    assert torch.allclose(exact, want, rtol=1e-4)
    est = independence_penalty(vae, phi, zi, za, projections=400, generator=torch.Generator().manual_seed(0))
    assert abs(float(est.detach()) / float(exact.detach()) - 1) < 0.2
    exact.backward()
    assert vae.dec[0].weight.grad.abs().sum() > 0


def test_vae_loss_bad_input_and_parts():
    vae = DisentangledFaceVAE(id_dim=4, attr_channels=2, width=4, oracle_dim=8)
    x = _faces(4)
    with pytest.raises(ValueError, match="oracle"):
        vae.loss(x, lam_ind=1.0)
    loss, parts = vae.loss(x, lam_mi=1.0, mi="hsic", lam_ind=1.0, lam_id=1.0, oracle=FaceEmbedder(width=4, dim=8).eval())
    assert set(parts) == {"rec", "kl_id", "kl_attr", "mi", "ind", "idsup"} and torch.isfinite(loss)
    with pytest.raises(ValueError, match="batch sizes"):
        vae.decode(torch.zeros(2, 4), torch.zeros(3, 2, 8, 8))


# ----------------------------------------------------------------- data, metrics, pipeline
def test_faces_labels_and_identity_is_attribute_invariant():
    d = make_faces(4, 5, seed=0)
    assert d.images.shape == (20, 1, 32, 32) and d.attributes.shape == (20, len(ATTRIBUTES))
    assert set(np.unique(d.attributes[:, 5])) <= {0.0, 1.0}
    # same attributes, different identity -> different image; same identity + attributes -> same image
    a = np.repeat(d.attributes[:1], 2, 0)
    same = render(d.identity_factors[[0, 0]], a)
    diff = render(d.identity_factors[[0, 1]], a)
    assert np.array_equal(same[0], same[1]) and np.abs(diff[0] - diff[1]).mean() > 0.01
    with pytest.raises(ValueError, match="identity"):
        render(d.identity_factors[:, :3], d.attributes[:4])
    with pytest.raises(ValueError, match="n_ids"):
        make_faces(0, 3)


def test_reid_and_kernel_distance():
    x = _faces(6)
    ids = torch.arange(6)
    o = _oracles(1)[0]
    assert reidentification_rate(o, x, ids, x, ids) == 1.0
    a = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    b = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    assert abs(kernel_distance(a, b)) < kernel_distance(a, b + 2.0) / 10
    with pytest.raises(ValueError, match="feature dims"):
        kernel_distance(a, b[:, :2])


def test_anonymizer_bad_input():
    vae = DisentangledFaceVAE(id_dim=4, attr_channels=2, width=4, oracle_dim=8)
    ens = OracleEnsemble(_oracles(1), [0.5])
    with pytest.raises(ValueError, match="unknown MI estimator"):
        IdentityDecoupledAnonymizer(vae, oracles=ens, mi="mine")
    with pytest.raises(ValueError, match="lam_mi"):
        IdentityDecoupledAnonymizer(vae, oracles=ens, lam_mi=float("nan"))
    with pytest.raises(TypeError, match="OracleEnsemble"):
        IdentityDecoupledAnonymizer(vae, oracles=_oracles(1))
    with pytest.raises(ValueError, match="one threshold per oracle"):
        OracleEnsemble(_oracles(2), [0.5])
    an = IdentityDecoupledAnonymizer(vae, oracles=ens)
    with pytest.raises(RuntimeError, match="fit"):
        an.anonymize(_faces(2))


def _tiny_pipeline(w_priv, tau, mi="club", seed=0):
    d = make_faces(8, 8, seed=seed)
    x = torch.as_tensor(d.images)
    torch.manual_seed(0)
    vae = DisentangledFaceVAE(id_dim=4, attr_channels=2, width=4, oracle_dim=8)
    ens = OracleEnsemble(_oracles(2), [tau, tau])
    an = IdentityDecoupledAnonymizer(vae, oracles=ens, mi=mi, epochs=1, batch_size=16, hinge_steps=3, w_priv=w_priv,
                                     n_components=2, lam_ind=0.1, seed=seed, generator="vae-decoder", hinge_margin=0.0)
    enc_before = None

    def snap():
        return {k: v.clone() for k, v in vae.state_dict().items()}

    hs = an.hinge_steps
    an.hinge_steps = 0
    an.fit(x)
    enc_before = snap()
    an.hinge_steps = hs
    an._hinge_finetune(x, torch.Generator().manual_seed(1))
    return an, x, enc_before, snap()


def test_pipeline_hinge_finetune_touches_only_the_generator_and_halts_below_thresholds():
    an, x, before, after = _tiny_pipeline(w_priv=50.0, tau=1.0)
    enc = [k for k in before if k.startswith(("enc.", "id_head", "attr_head"))]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("dec."))
    assert all(h["hinge"] == 0.0 for h in an.history["hinge"])
    # every oracle below its threshold (tau = 1): the hinge contributes nothing, same as w_priv = 0
    _, _, _, after0 = _tiny_pipeline(w_priv=0.0, tau=1.0)
    assert all(torch.equal(after[k], after0[k]) for k in after)
    # thresholds that every pair exceeds: the hinge moves the generator
    _, _, _, after_hi = _tiny_pipeline(w_priv=50.0, tau=-1.0)
    assert any(not torch.equal(after[k], after_hi[k]) for k in after if k.startswith("dec."))
    xa = an.anonymize(x[:5], generator=0)
    assert xa.shape == (5, 1, 32, 32) and torch.isfinite(xa).all()
    assert torch.equal(xa, an.anonymize(x[:5], generator=0))
    assert not torch.allclose(xa, an.model(x[:5]))
