"""Energies: zero at rest, rigid-motion invariance, exact element Hessians vs autograd and finite differences,
mesh validation."""

import math

import pytest
import torch

from gradkit_thinshell import energies as en
from gradkit_thinshell.mesh import DTYPE, make_sheet, topology
from gradkit_thinshell.sim import Pad, Scene, ThinShellSim, project_psd


def _rotation(seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DTYPE))
    return q * torch.sign(torch.det(q))


def _sim(n=4, **kw):
    return ThinShellSim(n=n, size=0.03, **kw)


def test_elastic_energy_zero_at_rest():
    sim = _sim()
    assert float(sim.elastic_energy(sim.X0)) == 0.0
    # every element energy separately
    x = sim.X0
    P = sim._P(sim.params)
    assert float(en.e_edge(x[sim.edge_idx], sim.edge_l0[:, None], P).abs().max()) < 1e-15
    assert float(en.e_area(x[sim.tri_idx], sim.tri_A0[:, None], P).abs().max()) < 1e-15
    assert float(sim.hinge_angles(x).abs().max()) < 1e-12


def test_energies_invariant_to_rigid_motion():
    sim = _sim(Kb=50.0)
    g = torch.Generator().manual_seed(0)
    x = sim.X0 + 1e-3 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    tb = 0.1 * torch.randn(len(sim.hinge_idx), generator=g, dtype=DTYPE)
    E = sim.elastic_energy(x, tb)
    assert float(E) > 0
    for seed in range(3):
        R = _rotation(seed)
        t = torch.randn(3, generator=g, dtype=DTYPE)
        xr = x @ R.T + t
        assert abs(float(sim.elastic_energy(xr, tb)) - float(E)) < 1e-10 * float(E)
        # signed dihedral angles are rigid invariants too
        assert torch.allclose(sim.hinge_angles(xr), sim.hinge_angles(x), atol=1e-10)
    # a rigid motion of the rest shape has zero energy
    assert float(sim.elastic_energy(sim.X0 @ _rotation(5).T + 0.3)) < 1e-20


def test_hinge_angle_sign_and_value():
    # two triangles folded by a known angle about the x axis
    phi = 0.7
    X = torch.tensor([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -math.cos(phi), math.sin(phi)]], dtype=DTYPE)
    th = en.hinge_angle(X)
    assert abs(abs(float(th)) - phi) < 1e-12
    X2 = X.clone()
    X2[3, 2] = -X2[3, 2]
    assert float(en.hinge_angle(X2)) == pytest.approx(-float(th), abs=1e-12)


def test_bending_energy_matches_formula():
    sim = _sim(Kb=7.0)
    x = sim.X0.clone()
    h = 0
    tb = torch.zeros(len(sim.hinge_idx), dtype=DTYPE)
    v3 = sim.hinge_idx[h, 3]
    x[v3, 2] += 2e-3
    th = sim.hinge_angles(x)
    P = sim._P(sim.params)
    e = en.e_hinge(x[sim.hinge_idx], torch.stack([sim.hinge_w, tb], 1), P)
    dx = 0.03 / 3
    assert torch.allclose(e, 7.0 * th**2 * dx**2 / 3.0)


def _contact_state(seed=0):
    """A deformed sheet touching the table and a sphere pad, mid-step, so every element type is active."""
    sheet = make_sheet(4, 0.03, origin=(0.0, 0.0, 4e-4))
    pad = Pad("sphere", (0.015, 0.015, 0.0004 + 0.0004 + 0.008 - 3e-4), 0.008)
    box = Pad("box", (0.0, 0.0, 0.003), (0.002, 0.002, 0.0025))
    sim = ThinShellSim(Scene([sheet], pads=[pad, box], attachments=[(0, [15], 0)]), Kb=30.0)
    g = torch.Generator().manual_seed(seed)
    x_t = sim.X0 + 1e-4 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    v_t = 0.05 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    pad_t = sim.pad_centers0
    pad_n = pad_t + torch.tensor([[4e-4, 0, -2e-4], [0, 0, 0]], dtype=DTYPE)
    pairs = sim._pairs(x_t, pad_t, pad_n)
    x = x_t + 2e-4 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    tb = 0.05 * torch.randn(len(sim.hinge_idx), generator=g, dtype=DTYPE)
    return sim, (x_t, v_t, tb, pad_t, pad_n, sim.params, pairs), x


def test_contact_elements_are_active():
    sim, args, x = _contact_state()
    pairs = args[-1]
    assert len(pairs["table"]) == sim.n_vertices
    assert len(pairs["sphere"][0]) > 0 and len(pairs["box"][0]) > 0
    P = sim._P(sim.params)
    els = sim._elements(*args[:-2], P, pairs)
    table = [aux for fn, idx, aux in els if fn is en.e_table][0]
    assert float(table[:, 3].max()) > 0  # lagged normal forces present -> friction active


def test_element_hessians_match_autograd_and_finite_differences():
    sim, args, x = _contact_state()
    x_t, v_t, tb, pad_t, pad_n, p, pairs = args
    P = sim._P(p)
    els = sim._elements(x_t, v_t, tb, pad_t, pad_n, P, pairs)
    H = sim.hessian_dense(x, els, P, project=False)

    def E(xf):
        return sim._energy(xf.reshape(-1, 3), x_t, v_t, tb, pad_t, pad_n, p, pairs)

    H_auto = torch.autograd.functional.hessian(E, x.reshape(-1))
    assert torch.allclose(H, H_auto, rtol=1e-9, atol=1e-9 * float(H_auto.abs().max()))

    def grad(xf):
        xr = xf.clone().requires_grad_(True)
        return torch.autograd.grad(E(xr), xr)[0]

    # gradient vs central differences of the energy, Hessian vs central differences of the gradient
    g = grad(x.reshape(-1))
    gen = torch.Generator().manual_seed(1)
    h = 1e-7
    for _ in range(4):
        d = torch.randn(sim.n_dof, generator=gen, dtype=DTYPE)
        fd_g = (E(x.reshape(-1) + h * d) - E(x.reshape(-1) - h * d)) / (2 * h)
        assert float(fd_g) == pytest.approx(float(g @ d), rel=1e-6, abs=1e-9)
        fd_H = (grad(x.reshape(-1) + h * d) - grad(x.reshape(-1) - h * d)) / (2 * h)
        assert torch.allclose(fd_H, H @ d, rtol=1e-4, atol=1e-5 * float((H @ d).abs().max()))


def test_psd_projection():
    sim, args, x = _contact_state()
    x_t, v_t, tb, pad_t, pad_n, p, pairs = args
    P = sim._P(p)
    els = sim._elements(x_t, v_t, tb, pad_t, pad_n, P, pairs)
    blocks = sim.element_hessians(x, els, P)
    some_negative = False
    for B in blocks.values():
        w = torch.linalg.eigvalsh(0.5 * (B + B.transpose(-1, -2)))
        some_negative |= bool((w < -1e-8 * w.abs().max()).any())
        Bp = project_psd(B)
        wp = torch.linalg.eigvalsh(Bp)
        assert float(wp.min()) >= -1e-9 * max(1.0, float(wp.abs().max()))
        # PSD blocks are left unchanged
        psd = (w >= 0).all(-1)
        assert torch.allclose(Bp[psd], B[psd], atol=1e-9 * max(1.0, float(B.abs().max())))
    assert some_negative, "the test state should contain indefinite element Hessians"
    Hp = sim.hessian_dense(x, els, P, project=True)
    assert float(torch.linalg.eigvalsh(Hp).min()) > 0


def test_friction_potential_is_c1_mollifier():
    eps = 1e-3
    y = torch.tensor([0.0, 0.5e-3, 1e-3 - 1e-12, 1e-3 + 1e-12, 2e-3], dtype=DTYPE)
    u = torch.stack([y, torch.zeros_like(y)], 1).requires_grad_(True)
    f = en.f0_friction(u, eps)
    (g,) = torch.autograd.grad(f.sum(), u)
    f = f.detach()
    assert float(f[0]) == pytest.approx(eps / 3)
    assert float(f[2]) == pytest.approx(float(f[3]), abs=1e-9)
    assert float(g[0, 0]) == 0.0  # no force at zero slip, no NaN
    assert float(g[2, 0]) == pytest.approx(1.0, abs=1e-6) and float(g[3, 0]) == pytest.approx(1.0)
    assert float(g[1, 0]) == pytest.approx(2 * 0.5 - 0.25)  # f1(y) = 2y/e - y^2/e^2


def test_mesh_validation_errors():
    X = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=DTYPE)
    # an edge shared by three (or four) triangles: non-manifold
    for faces in ([[0, 1, 2], [1, 0, 3], [0, 4, 1]], [[0, 1, 2], [1, 0, 3], [0, 1, 4], [1, 0, 5]]):
        with pytest.raises(ValueError, match="non-manifold"):
            topology(torch.tensor(faces), 6, X)
    with pytest.raises(ValueError, match="indices"):
        topology(torch.tensor([[0, 1, 7]]), 6, X)
    with pytest.raises(ValueError, match="distinct"):
        topology(torch.tensor([[0, 1, 1]]), 6, X)
    with pytest.raises(TypeError, match="integer"):
        topology(torch.tensor([[0.0, 1.0, 2.0]]), 6, X)
    with pytest.raises(ValueError, match="degenerate"):
        make_sheet(X=torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0]], dtype=DTYPE), faces=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="n must be"):
        make_sheet(1)
    # a valid custom mesh gives the expected hinge, oriented so face 1 traverses v0 -> v1
    e, h = topology(torch.tensor([[0, 1, 2], [1, 0, 3]]), 4, X[:4])
    assert e.shape == (5, 2) and h.tolist() == [[0, 1, 2, 3]]
    sheet = make_sheet(X=X[:4], faces=torch.tensor([[0, 1, 2], [1, 0, 3]]))
    assert len(sheet.hinges) == 1 and float(sheet.mass.sum()) == pytest.approx(40.0 * 1.0)


def test_closed_form_blocks_equal_double_backward_blocks():
    sim, args, x = _contact_state(seed=3)
    x_t, v_t, tb, pad_t, pad_n, p, pairs = args
    P = sim._P(p)
    els = sim._elements(x_t, v_t, tb, pad_t, pad_n, P, pairs)
    sim.analytic_hessians = True
    closed = sim.element_hessians(x, els, P)
    sim.analytic_hessians = False
    auto = sim.element_hessians(x, els, P)
    checked = 0
    for fn, idx, aux in els:
        if fn in en.ANALYTIC_HESSIANS:
            A, B = closed[id(fn), id(idx)], auto[id(fn), id(idx)]
            assert torch.allclose(A, B, rtol=1e-9, atol=1e-9 * float(B.abs().max())), fn.__name__
            checked += 1
    assert checked == 5  # edges, area, hinges, table, sphere pad


def _stacked_state(seed=0):
    """Two sheets in vertex-face contact (separate task), mid-step, with a pressed pad."""
    from gradkit_thinshell.tasks import separate_task

    sim = separate_task(n=3, press=1.5e-4).sim
    g = torch.Generator().manual_seed(seed)
    x_t = sim.X0 + 2e-5 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    v_t = 0.02 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    pad_t = sim.pad_centers0
    pad_n = pad_t + torch.tensor([[3e-4, 0, -2e-4]], dtype=DTYPE)
    pairs = sim._pairs(x_t, pad_t, pad_n)
    x = x_t + 5e-5 * torch.randn(sim.X0.shape, generator=g, dtype=DTYPE)
    x[sim.body_verts[1], 2] -= 1.5e-4  # the top sheet pressed into the bottom one's contact band
    return sim, (x_t, v_t, sim.theta_rest.clone(), pad_t, pad_n, sim.params, pairs), x


def test_vertex_face_blocks_and_sparse_hessian_match_autograd():
    sim, args, x = _stacked_state()
    x_t, v_t, tb, pad_t, pad_n, p, pairs = args
    assert len(pairs["vf_mu_cloth"][0]) > 0
    P = sim._P(p)
    els = sim._elements(x_t, v_t, tb, pad_t, pad_n, P, pairs)
    vf = [(fn, idx, aux) for fn, idx, aux in els if fn is en.e_vertex_face]
    assert vf and float(en.point_face_distance(x[vf[0][1]], vf[0][2][:, 0])[0].min()) < sim.eps_c  # penalty active
    sim.analytic_hessians = True
    closed = sim.element_hessians(x, vf, P)
    sim.analytic_hessians = False
    auto = sim.element_hessians(x, vf, P)
    A, B = closed[id(en.e_vertex_face), id(vf[0][1])], auto[id(en.e_vertex_face), id(vf[0][1])]
    assert torch.allclose(A, B, rtol=1e-9, atol=1e-9 * float(B.abs().max()))
    sim.analytic_hessians = True
    # the assembled sparse Hessian (fixed pattern + vertex-face entries outside it) equals autograd's dense one
    H = sim.hessian_dense(x, els, P)

    def E(xf):
        return sim._energy(xf.reshape(-1, 3), x_t, v_t, tb, pad_t, pad_n, p, pairs)

    H_auto = torch.autograd.functional.hessian(E, x.reshape(-1))
    assert torch.allclose(H, H_auto, rtol=1e-9, atol=1e-9 * float(H_auto.abs().max()))


def test_sparse_factorisation_detects_indefinite_matrices():
    import numpy as np
    import scipy.sparse as sp

    from gradkit_thinshell.sim import _factor_pd

    rng = np.random.default_rng(0)
    for trial in range(20):
        A = sp.random(40, 40, density=0.08, random_state=trial)
        A = (A + A.T).toarray() + np.diag(rng.uniform(-0.3, 3.0, 40))
        w = np.linalg.eigvalsh(A)
        lu = _factor_pd(sp.csr_matrix(A))
        assert (lu is not None) == (w.min() > 0), trial
        if lu is not None:
            b = rng.normal(size=40)
            assert np.allclose(A @ lu.solve(b), b)
