"""Simulator behaviour: draping, plastic creases, stick/slip friction, the implicit adjoint vs finite
differences, and clear errors on bad input."""

import math
import warnings

import pytest
import torch

from gradkit_thinshell.mesh import DTYPE, make_sheet
from gradkit_thinshell.sim import PARAM_NAMES, NewtonError, Pad, Scene, State, ThinShellSim


def test_sheet_draped_over_sphere_settles_without_penetration_or_energy_gain():
    eps = 4e-4
    r = 0.01
    sheet = make_sheet(5, 0.04, origin=(0.0, 0.0, 2 * r + eps + 1e-3))
    pad = Pad("sphere", (0.02, 0.02, r), r)
    sim = ThinShellSim(Scene([sheet], pads=[pad]), Kb=5.0, k_contact=1e4)
    s = sim.initial_state()
    energies = [float(sim.total_energy(s))]
    for _ in range(25):
        s = sim.step(s)
        energies.append(float(sim.total_energy(s)))
    d = (s.x - sim.pad_centers0[0]).norm(dim=1) - r
    assert float(d.min()) > -eps  # penetration below the contact margin: no vertex passes into the sphere
    assert float(s.x[:, 2].min()) > -eps  # nor through the table
    # the sheet is resting on the sphere: its centre vertex is supported at the sphere top
    centre = 12
    assert abs(float(s.x[centre, 2]) - (2 * r + eps)) < 1e-3
    # implicit Euler with static obstacles and friction never gains energy
    diffs = [b - a for a, b in zip(energies, energies[1:])]
    assert max(diffs) < 1e-9, max(diffs)
    assert energies[-1] < energies[0]


def _folded_sheet(phi, n=3, size=0.02):
    """Positions of an n x n sheet folded by phi about its middle column (x = size / 2)."""
    X = make_sheet(n, size).X.clone()
    mid = size / 2
    right = X[:, 0] > mid + 1e-9
    r = X[right, 0] - mid
    X[right, 0] = mid + r * math.cos(phi)
    X[right, 2] = r * math.sin(phi)
    return X


@pytest.mark.parametrize("yield_angle", [0.3, None])
def test_folding_past_yield_keeps_a_permanent_crease(yield_angle):
    # a sheet folded by 1 rad and released (no gravity, no table): with plasticity the crease angle settles at
    # the yielded rest angle theta - kappa; purely elastic bending springs back to flat
    sim = ThinShellSim(Scene([make_sheet(3, 0.02)], table=False, gravity=(0.0, 0.0, 0.0)), yield_angle=yield_angle,
                       Kb=5.0)
    X = _folded_sheet(1.0)
    e = sim.hinge_idx[:, :2]
    crease = ((sim.X0[e[:, 0], 0] - 0.01).abs() < 1e-9) & ((sim.X0[e[:, 1], 0] - 0.01).abs() < 1e-9)
    th0 = sim.hinge_angles(X)[crease]
    assert torch.allclose(th0.abs(), torch.ones_like(th0))
    s = State(X, torch.zeros_like(X), sim.theta_rest.clone(), torch.zeros(0, 3, dtype=DTYPE))
    s = sim.step(s)
    th1 = sim.hinge_angles(s.x)[crease]
    if yield_angle is not None:
        # plastic update rule: theta_bar moves to within kappa of theta
        assert torch.allclose(s.theta_bar[crease], th1 - yield_angle * torch.sign(th1), atol=1e-12)
    else:
        assert float(s.theta_bar.abs().max()) == 0.0
    for _ in range(20):
        s = sim.step(s)
    th = sim.hinge_angles(s.x)[crease]
    if yield_angle is not None:
        assert torch.all(torch.sign(th) == torch.sign(th0))
        assert float(th.abs().min()) > 0.4  # a permanent crease of about 1 - kappa
        assert float((th - s.theta_bar[crease]).abs().max()) < 0.1
    else:
        assert float(th.abs().max()) < 0.1  # springs back


@pytest.mark.parametrize("angle_deg, sticks", [(18.0, True), (40.0, False)])
def test_sheet_on_incline_sticks_iff_tan_below_mu(angle_deg, sticks):
    mu = 0.5
    a = math.radians(angle_deg)
    sheet = make_sheet(3, 0.02, origin=(0.0, 0.0, 4e-4))
    sim = ThinShellSim(Scene([sheet], gravity=(9.8 * math.sin(a), 0.0, -9.8 * math.cos(a))), mu_table=mu)
    s = sim.initial_state()
    for _ in range(30):
        s = sim.step(s)
    vx = float(s.v[:, 0].mean())
    assert (math.tan(a) < mu) == sticks
    if sticks:
        assert vx < sim.eps_v  # only the mollifier's sub-eps_v creep
    else:
        expected = 9.8 * (math.sin(a) - mu * math.cos(a)) * 30 * sim.dt
        assert vx == pytest.approx(expected, rel=0.15)


def _grad_setup():
    sheet = make_sheet(4, 0.03, origin=(0.0, 0.0, 4e-4))
    r = 0.008
    pad = Pad("sphere", (0.015, 0.015, 2 * 4e-4 + r + 2e-4), r)
    sim = ThinShellSim(Scene([sheet], pads=[pad]), tol=1e-11, Kb=20.0, mu_pad=0.8, mu_table=0.3)
    T = 10
    a = torch.zeros(T, 1, 3, dtype=DTYPE)
    a[:, 0, 2] = -4e-4
    a[:, 0, 0] = 8e-4
    a[5:, 0, 2] = 0.0
    w = torch.linspace(0.5, 1.5, sim.n_vertices, dtype=DTYPE)

    def loss(actions, p):
        states = sim.rollout(actions, params=p)
        xT = states[-1].x
        return (w * xT[:, 0]).sum() + 3.0 * xT[:, 2].sum()

    return sim, a, loss


def test_rollout_gradient_matches_central_differences_with_contact_and_friction():
    sim, a, loss = _grad_setup()
    p = sim.params.clone().requires_grad_(True)
    act = a.clone().requires_grad_(True)
    L = loss(act, p)
    L.backward()
    # contact with the pad and the table is active, and friction forces are non-zero
    assert all(st.n_contacts > sim.n_vertices for st in sim.stats_log[-10:])
    checks = [("action", (3, 0, 2)), ("action", (7, 0, 0)), ("param", "mu_table"), ("param", "Kb")]
    for what, key in checks:
        if what == "action":
            h = 1e-6
            ap, am = a.clone(), a.clone()
            ap[key] += h
            am[key] -= h
            with torch.no_grad():
                fd = (loss(ap, sim.params) - loss(am, sim.params)) / (2 * h)
            an = act.grad[key]
        else:
            i = PARAM_NAMES.index(key)
            h = 1e-5 * float(sim.params[i])
            pp, pm = sim.params.clone(), sim.params.clone()
            pp[i] += h
            pm[i] -= h
            with torch.no_grad():
                fd = (loss(a, pp) - loss(a, pm)) / (2 * h)
            an = p.grad[i]
        assert abs(float(fd)) > 1e-6, (what, key)
        rel = abs(float(an) - float(fd)) / abs(float(fd))
        assert rel <= 1e-3, (what, key, float(an), float(fd), rel)


def test_gradient_reaches_initial_state():
    sim, a, loss = _grad_setup()
    s0 = sim.initial_state()
    v0 = torch.zeros_like(s0.v).requires_grad_(True)
    st = State(s0.x, v0, s0.theta_bar, s0.pads)
    states = sim.rollout(a[:4], state=st)
    L = states[-1].x[:, 0].sum()
    L.backward()
    h = 1e-6
    vp, vm = torch.zeros_like(s0.v), torch.zeros_like(s0.v)
    vp[5, 0] += h
    vm[5, 0] -= h
    with torch.no_grad():
        fd = (sim.rollout(a[:4], state=State(s0.x, vp, s0.theta_bar, s0.pads))[-1].x[:, 0].sum()
              - sim.rollout(a[:4], state=State(s0.x, vm, s0.theta_bar, s0.pads))[-1].x[:, 0].sum()) / (2 * h)
    assert float(v0.grad[5, 0]) == pytest.approx(float(fd), rel=1e-3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="Kl must be positive"):
        ThinShellSim(n=3, Kl=-1.0)
    with pytest.raises(ValueError, match="mu_table must be >= 0"):
        ThinShellSim(n=3, mu_table=-0.1)
    with pytest.raises(TypeError, match="unknown simulator parameters"):
        ThinShellSim(n=3, stiffness=1.0)
    with pytest.raises(ValueError, match="dt must be"):
        ThinShellSim(n=3, dt=-1.0)
    sheet = make_sheet(3, 0.02, origin=(0, 0, 4e-4))
    sim = ThinShellSim(Scene([sheet], pads=[Pad("sphere", (0.01, 0.01, 0.02), 0.005)]))
    s = sim.initial_state()
    with pytest.raises(ValueError, match="max_moving_dist"):
        sim.step(s, torch.tensor([0.0, 0.0, 2e-3]))
    with pytest.raises(ValueError, match="3 numbers"):
        sim.step(s, torch.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        sim.step(s, torch.tensor([float("nan"), 0.0, 0.0]))
    bad = State(s.x.clone(), s.v.clone(), s.theta_bar, s.pads)
    bad.x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="state.x"):
        sim.step(bad)
    p = sim.params.clone()
    p[PARAM_NAMES.index("Kb")] = -5.0
    with pytest.raises(ValueError, match="Kb must be >= 0"):
        sim.step(s, params=p)
    p[PARAM_NAMES.index("Kb")] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        sim.step(s, params=p)
    with pytest.raises(ValueError, match="pad size"):
        Pad("sphere", (0, 0, 0), -1.0)
    with pytest.raises(ValueError, match="pad center"):
        Pad("sphere", (0, float("nan"), 0), 1.0)
    with pytest.raises(ValueError, match="gravity"):
        ThinShellSim(Scene([sheet], gravity=(0.0, 0.0, float("inf"))))
    with pytest.raises(ValueError, match="NaN or inf"):
        ThinShellSim(Scene([make_sheet(3, 0.02, origin=(0, float("nan"), 4e-4))]))
    with pytest.raises(ValueError, match="yield_angle"):
        ThinShellSim(n=3, yield_angle=float("inf"))
    for name in ("Kb", "mu_pad"):
        with pytest.raises(ValueError, match="finite"):
            ThinShellSim(n=3, **{name: float("nan")})
    with pytest.raises(ValueError, match="finite"):
        sim.step(s, params={"k_contact": float("inf")})


@pytest.mark.parametrize("field, bad", [("x", float("nan")), ("v", float("inf")), ("theta_bar", float("nan")),
                                        ("pads", -float("inf"))])
def test_non_finite_initial_state_or_action_raises_and_changes_nothing(field, bad):
    sheet = make_sheet(3, 0.02, origin=(0, 0, 5e-4))
    sim = ThinShellSim(Scene([sheet], pads=[Pad("sphere", (0.01, 0.01, 0.006), 0.005)]))
    s = sim.initial_state()
    t = getattr(s, field).clone()
    t.reshape(-1)[0] = bad
    bad_state = State(**{**vars(s), field: t})
    keep = {k: v.clone() for k, v in vars(bad_state).items()}
    params = sim.params.clone()
    with pytest.raises(ValueError, match=f"state.{field} contains NaN or inf"):
        sim.step(bad_state, torch.zeros(3, dtype=DTYPE))
    with pytest.raises(ValueError, match=f"state.{field}"):
        sim.rollout(torch.zeros(2, 1, 3, dtype=DTYPE), state=bad_state)
    for k, v in vars(bad_state).items():
        assert torch.equal(torch.nan_to_num(v), torch.nan_to_num(keep[k]))
    assert torch.equal(sim.params, params) and not sim.stats_log  # no solve ran
    with pytest.raises(ValueError, match="NaN or inf"):
        sim.step(s, torch.tensor([0.0, bad, 0.0], dtype=DTYPE))
    with pytest.raises(ValueError, match="shape"):
        sim.step(State(s.x[:-1], s.v, s.theta_bar, s.pads))


def test_newton_non_convergence_raises_or_warns():
    sheet = make_sheet(3, 0.02, origin=(0, 0, 0.01))
    sim = ThinShellSim(Scene([sheet]), newton_max_iter=1, tol=1e-14)
    s = sim.initial_state()
    with pytest.raises(NewtonError, match="did not converge"):
        sim.step(s)
    sim_w = ThinShellSim(Scene([sheet]), newton_max_iter=1, tol=1e-14, on_fail="warn")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s1 = sim_w.step(s)
    assert any("did not converge" in str(x.message) for x in w)
    assert torch.isfinite(s1.x).all() and not sim_w.last_stats.converged
    # the fallback iterate is the result of one full Newton step: it moved under gravity
    assert float(s1.x[:, 2].max()) < 0.01


def test_exact_and_projected_newton_agree():
    sheet = make_sheet(4, 0.03, origin=(0.0, 0.0, 4e-4))
    pad = Pad("sphere", (0.015, 0.015, 2 * 4e-4 + 0.008 + 2e-4), 0.008)
    out = []
    for proj in ("auto", "always"):
        sim = ThinShellSim(Scene([sheet], pads=[pad]), projection=proj, tol=1e-11)
        s = sim.initial_state()
        for _ in range(3):
            s = sim.step(s, torch.tensor([8e-4, 0.0, -6e-4]))
        out.append(s.x)
    assert torch.allclose(out[0], out[1], atol=1e-9)


def _height_loss(task, T=4):
    sim = task.sim
    s0 = sim.initial_state()
    a = torch.zeros(T, len(sim.scene.pads), 3, dtype=DTYPE)
    a[:, :, 2] = -8e-4 if task.name == "separate" else 6e-4
    a[T // 2:, :, 0] = 8e-4 if task.name == "separate" else 0.0
    w = torch.linspace(0.5, 1.5, sim.n_vertices, dtype=DTYPE)

    def loss(z):
        x = torch.cat([s0.x[:, :2], z[:, None]], 1)
        xT = sim.rollout(a, state=State(x, s0.v, s0.theta_bar, s0.pads))[-1].x
        return (w * xT[:, 0]).sum() + (w * xT[:, 2]).sum()

    return s0.x[:, 2].clone(), loss


@pytest.mark.parametrize("name", ["separate", "lift"])
def test_gradient_wrt_initial_heights_matches_central_differences(name):
    # scenes start off the contact penalty's kink (START_CLEARANCE) and with no vertex exactly over a vertex or an
    # edge of the other body (TIE_SHIFT), so the rollout is differentiable in the initial heights of every vertex;
    # a scene starting exactly at the contact distance (the old one) fails this at 1-100 % relative error
    from gradkit_thinshell.tasks import make_task

    kw = dict(block_res=(2, 2, 2)) if name == "lift" else {}
    task = make_task(name, n=3, horizon=4, tol=1e-11, **kw)
    z0, loss = _height_loss(task)
    z = z0.clone().requires_grad_(True)
    loss(z).backward()
    h = 1e-6  # far below START_CLEARANCE; large enough that Newton's tolerance (1e-11 m) is not amplified
    checked = 0
    # corners and centres of both bodies (the centres sit under the pad / the block)
    for i in ([0, 4, 8, 9, 13, 17] if name == "separate" else [0, 4, 8, 9, 12, 16]):
        zp, zm = z0.clone(), z0.clone()
        zp[i] += h
        zm[i] -= h
        with torch.no_grad():
            fd = float(loss(zp) - loss(zm)) / (2 * h)
        if abs(fd) < 1e-4:
            continue
        assert float(z.grad[i]) == pytest.approx(fd, rel=1e-3, abs=1e-6), (i, float(z.grad[i]), fd)
        checked += 1
    assert checked >= 4


def test_pad_contacts_restrict_which_bodies_a_pad_touches():
    bottom = make_sheet(3, 0.02, origin=(0, 0, 5e-4), name="bottom")
    top = make_sheet(3, 0.02, origin=(0.003, 0.004, 1e-3), name="top")
    pad = Pad("sphere", (0.01, 0.01, 0.0125), 0.01)
    both = ThinShellSim(Scene([bottom, top], pads=[pad], contacts=[(0, 1, "mu_cloth")]))
    only_top = ThinShellSim(Scene([bottom, top], pads=[pad], contacts=[(0, 1, "mu_cloth")], pad_contacts=[(0, 1)]))
    s = both.initial_state()
    v_both = both._pairs(s.x, s.pads, s.pads)["sphere"][0]
    v_top = only_top._pairs(s.x, s.pads, s.pads)["sphere"][0]
    assert (v_both < 9).any() and (v_both >= 9).any()  # within the search radius of both sheets
    assert len(v_top) and bool((v_top >= 9).all()) and set(v_top.tolist()) == set(v_both[v_both >= 9].tolist())
    with pytest.raises(ValueError, match="pad_contacts"):
        ThinShellSim(Scene([bottom], pads=[pad], pad_contacts=[(0, 3)]))
