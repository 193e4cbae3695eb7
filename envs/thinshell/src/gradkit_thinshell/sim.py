"""Differentiable thin-shell simulator: implicit Euler as incremental-potential minimisation.

One step solves (ThinShellLab eq. for the time step)::

    x_{t+1} = argmin_x  1/(2 dt^2) |x - x_t - dt v_t|_M^2 + E_elastic(x) - M g . x + E_contact(x) + E_friction(x)

with Newton's method (the exact Hessian when it is positive definite, else per-element Hessian blocks projected
to PSD by an eigenvalue clamp; sparse assembly into a fixed CSR pattern, sparse LU with a symmetric ordering
reused across Newton iterations while the steps shrink fast, backtracking Armijo line search) until the Newton
step is below ``tol``.

Gradients come from the implicit function theorem: :class:`_NewtonStep` is a ``torch.autograd.Function``
whose backward solves ``H lambda = dL/dx_{t+1}`` with the *unprojected* Hessian and returns
``-lambda^T d(grad_x E)/d(theta)`` for every input theta (step-start positions and velocities, plastic rest
angles, gripper poses, material and friction parameters) as one vector-Jacobian product of ``grad_x E``.
Nothing but the step's inputs and solution is stored, so memory is linear in the number of steps.
Contact pairs are chosen once per step (at its start); the lagged normal forces and tangent bases are
recomputed with autograd in backward, so they are differentiated too (the contact *set* is held fixed).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from . import energies as en
from .mesh import DTYPE, Body, make_sheet, triangle_areas

PARAM_NAMES = ("Kl", "Ka", "Kb", "K_obj", "k_contact", "k_att", "mu_table", "mu_pad", "mu_cloth", "mu_obj")
DEFAULT_PARAMS = dict(Kl=1e3, Ka=1e3, Kb=100.0, K_obj=1e4, k_contact=1e3, k_att=1e4, mu_table=0.5, mu_pad=1.0,
                      mu_cloth=0.2, mu_obj=1.0)
#: initial gap (m) between bodies that start touching and their contact distance: scenes start just off the
#: kink of the one-sided penalty (and of the lagged normal force), so the rollout is differentiable in the
#: initial positions; bodies settle into contact during the first step
START_CLEARANCE = 5e-5
_POSITIVE = ("Kl", "Ka", "k_contact", "k_att", "K_obj")


class NewtonError(RuntimeError):
    """A Newton solve did not converge (or produced a non-finite iterate)."""


@dataclass
class Pad:
    """Kinematic gripper pad: ``kind`` ``"sphere"`` (``size`` = radius) or ``"box"`` (``size`` = half extents)."""

    kind: str
    center: Sequence[float]
    size: Union[float, Sequence[float]]

    def __post_init__(self):
        if self.kind not in ("sphere", "box"):
            raise ValueError(f"pad kind must be 'sphere' or 'box', got {self.kind!r}")
        sz = torch.as_tensor(self.size, dtype=DTYPE).reshape(-1)
        if self.kind == "sphere" and sz.numel() != 1 or self.kind == "box" and sz.numel() != 3:
            raise ValueError(f"{self.kind} pad size must be a radius (sphere) or 3 half extents (box), got {self.size!r}")
        if not (sz > 0).all() or not torch.isfinite(sz).all():
            raise ValueError(f"pad size must be positive and finite, got {self.size!r}")
        c = torch.as_tensor(self.center, dtype=DTYPE).reshape(-1)
        if c.numel() != 3 or not torch.isfinite(c).all():
            raise ValueError(f"pad center must be 3 finite numbers, got {self.center!r}")


@dataclass
class Scene:
    """What is simulated: bodies, kinematic pads, gripper attachments and which bodies touch which."""

    bodies: List[Body]
    pads: List[Pad] = field(default_factory=list)
    #: (body index, vertex ids within the body, pad index): vertices held by a gripper
    attachments: List[tuple] = field(default_factory=list)
    #: (body A, body B, friction parameter name): vertex-vs-face contact in both directions
    contacts: List[tuple] = field(default_factory=list)
    table: bool = True
    gravity: Sequence[float] = (0.0, 0.0, -9.8)
    #: (pad index, body index) pairs that collide; ``None`` = every pad with every body
    pad_contacts: Optional[List[tuple]] = None


@dataclass
class State:
    x: torch.Tensor  # (V, 3)
    v: torch.Tensor  # (V, 3)
    theta_bar: torch.Tensor  # (H,) plastic rest angles
    pads: torch.Tensor  # (G, 3) pad centres

    def detach(self) -> "State":
        return State(self.x.detach(), self.v.detach(), self.theta_bar.detach(), self.pads.detach())


@dataclass
class StepStats:
    iterations: int = 0
    converged: bool = True
    step_norm: float = 0.0
    n_contacts: int = 0
    hessians: int = 0


class ThinShellSim:
    """Differentiable thin-shell simulator (float64).

    Parameters
    ----------
    scene : Scene, optional
        Bodies, pads and attachments.  Without one, an ``n x n`` sheet of side ``size`` lying on the table.
    dt : time step (s).  eps_contact : contact distance (m).  eps_v : friction velocity threshold (m/s).
    yield_angle : plasticity threshold kappa (rad): when ``|theta - theta_bar| > kappa`` the rest angle moves
        so that the excess becomes permanent.  ``None`` = purely elastic bending.
    max_moving_dist : largest per-step gripper translation per axis (m); larger actions raise ValueError.
    newton_max_iter, tol : Newton iteration cap and convergence threshold on the step's max-norm (m).
    on_fail : ``"raise"`` (default) raises :class:`NewtonError` when Newton does not converge;
        ``"warn"`` keeps the last iterate, warns and records it in ``last_stats`` (documented fallback).
    contact_radius : candidate-pair search radius at the start of a step (m).
    projection : ``"always"`` projects every element block to PSD (ThinShellLab); ``"auto"`` (default) first tries
        the exact assembled Hessian (mass term included) and falls back to the per-element projection only when it
        is not positive definite, which keeps Newton's quadratic convergence near the solution.
    analytic_hessians : closed-form Hessian blocks for edges, table and sphere contact (with friction); the other
        element types always use batched double backward (``False`` uses autograd for every type).
    hessian_reuse_ratio : the projected Hessian's factorisation is reused for the next Newton iteration when the
        step shrank by at least this factor with a full line-search step (0 = fresh Hessian every iteration).
    **params : material/friction parameters (``Kl, Ka, Kb, K_obj, k_contact, k_att, mu_table, mu_pad,
        mu_cloth, mu_obj``); they can also be given per call as a tensor to differentiate with respect to them.
    """

    def __init__(self, scene: Optional[Scene] = None, *, n: int = 11, size: float = 0.06, dt: float = 5e-3,
                 eps_contact: float = 4e-4, eps_v: float = 0.01, yield_angle: Optional[float] = None,
                 max_moving_dist: float = 1e-3, newton_max_iter: int = 100, tol: float = 1e-7,
                 on_fail: str = "raise", contact_radius: float = 5e-3, hessian_reuse_ratio: float = 0.25,
                 projection: str = "auto", analytic_hessians: bool = True, **params):
        if scene is None:  # a sheet just above the table's contact distance (off the penalty's kink)
            sheet = make_sheet(n, size, origin=(0.0, 0.0, eps_contact + START_CLEARANCE))
            scene = Scene(bodies=[sheet])
        if not isinstance(scene, Scene):
            raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
        for name, val in dict(dt=dt, eps_contact=eps_contact, eps_v=eps_v, max_moving_dist=max_moving_dist,
                              tol=tol, contact_radius=contact_radius).items():
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        if yield_angle is not None and not (isinstance(yield_angle, (int, float)) and 0 < yield_angle < math.inf):
            raise ValueError(f"yield_angle must be a positive finite number or None, got {yield_angle!r}")
        if not (isinstance(hessian_reuse_ratio, (int, float)) and 0 <= hessian_reuse_ratio <= 1):
            raise ValueError(f"hessian_reuse_ratio must be in [0, 1], got {hessian_reuse_ratio!r}")
        if isinstance(newton_max_iter, bool) or not isinstance(newton_max_iter, int) or newton_max_iter < 1:
            raise ValueError(f"newton_max_iter must be a positive integer, got {newton_max_iter!r}")
        if on_fail not in ("raise", "warn"):
            raise ValueError(f"on_fail must be 'raise' or 'warn', got {on_fail!r}")
        unknown = set(params) - set(PARAM_NAMES)
        if unknown:
            raise TypeError(f"unknown simulator parameters {sorted(unknown)}; expected some of {PARAM_NAMES}")
        self.scene = scene
        self.dt, self.eps_c, self.eps_v = float(dt), float(eps_contact), float(eps_v)
        self.yield_angle = yield_angle
        self.max_moving_dist = float(max_moving_dist)
        self.newton_max_iter, self.tol, self.on_fail = int(newton_max_iter), float(tol), on_fail
        self.contact_radius = float(contact_radius)
        self.hessian_reuse_ratio = float(hessian_reuse_ratio)
        if projection not in ("auto", "always"):
            raise ValueError(f"projection must be 'auto' or 'always', got {projection!r}")
        self.projection = projection
        self.analytic_hessians = bool(analytic_hessians)
        self._given = {}
        self.params = self.param_vector(**params)
        self._given = dict(params)
        self.last_stats = StepStats()
        self.stats_log: List[StepStats] = []
        self._build()
        self._sparsity()

    # ------------------------------------------------------------------ setup
    def param_vector(self, **overrides) -> torch.Tensor:
        """A parameter tensor (ordered as ``PARAM_NAMES``) from the defaults and ``overrides``."""
        unknown = set(overrides) - set(PARAM_NAMES)
        if unknown:
            raise TypeError(f"unknown simulator parameters {sorted(unknown)}; expected some of {PARAM_NAMES}")
        vals = {**DEFAULT_PARAMS, **getattr(self, "_given", {}), **overrides}
        p = torch.tensor([float(vals[k]) for k in PARAM_NAMES], dtype=DTYPE)
        self.check_params(p)
        return p

    @staticmethod
    def check_params(p: torch.Tensor) -> None:
        if p.shape != (len(PARAM_NAMES),):
            raise ValueError(f"parameter vector must have shape ({len(PARAM_NAMES)},) ordered {PARAM_NAMES}, "
                             f"got {tuple(p.shape)}")
        pv = p.detach()
        if not torch.isfinite(pv).all():
            raise ValueError(f"simulator parameters must be finite, got {dict(zip(PARAM_NAMES, pv.tolist()))}")
        for i, k in enumerate(PARAM_NAMES):
            if k in _POSITIVE and not pv[i] > 0:
                raise ValueError(f"parameter {k} must be positive (a stiffness), got {float(pv[i])}")
            if k not in _POSITIVE and pv[i] < 0:
                raise ValueError(f"parameter {k} must be >= 0, got {float(pv[i])}")

    def _build(self):
        sc = self.scene
        offs, X, M, Xr = [], [], [], []
        o = 0
        for b in sc.bodies:
            offs.append(o)
            X.append(b.X)
            M.append(b.mass)
            Xr.append(b.X if b.rest_X is None else b.rest_X)
            o += b.n_vertices
        for b in sc.bodies:
            for what, t in (("positions", b.X), ("masses", b.mass), ("rest positions", b.rest_X)):
                if t is not None and not torch.isfinite(torch.as_tensor(t, dtype=DTYPE)).all():
                    raise ValueError(f"body {b.name!r} has non-finite {what} (NaN or inf)")
        if not all(math.isfinite(float(g)) for g in sc.gravity) or len(sc.gravity) != 3:
            raise ValueError(f"gravity must be 3 finite numbers, got {sc.gravity!r}")
        self.offsets = offs
        self.n_vertices = o
        self.X0 = torch.cat(X).to(DTYPE)
        self.mass = torch.cat(M).to(DTYPE)
        Xr = torch.cat(Xr).to(DTYPE)
        sheets = [(i, b) for i, b in enumerate(sc.bodies) if b.kind == "sheet"]
        blocks = [(i, b) for i, b in enumerate(sc.bodies) if b.kind == "block"]

        def cat(items, dim=2):
            return torch.cat(items) if items else torch.zeros(0, dim, dtype=torch.long)

        self.edge_idx = cat([b.edges + offs[i] for i, b in sheets])
        self.edge_l0 = (Xr[self.edge_idx[:, 0]] - Xr[self.edge_idx[:, 1]]).norm(dim=1)
        self.tri_idx = cat([b.faces + offs[i] for i, b in sheets], 3)
        self.tri_A0 = triangle_areas(Xr, self.tri_idx)
        self.hinge_idx = cat([b.hinges + offs[i] for i, b in sheets], 4)
        self.hinge_w = torch.cat([torch.full((len(b.hinges),), b.dx**2 / 3.0, dtype=DTYPE) for i, b in sheets]) \
            if sheets else torch.zeros(0, dtype=DTYPE)
        self.theta_rest = en.hinge_angle(Xr[self.hinge_idx]) if len(self.hinge_idx) else torch.zeros(0, dtype=DTYPE)
        self.obj_edge_idx = cat([b.edges + offs[i] for i, b in blocks])
        self.obj_edge_l0 = (Xr[self.obj_edge_idx[:, 0]] - Xr[self.obj_edge_idx[:, 1]]).norm(dim=1)
        self.body_faces = [b.faces + offs[i] for i, b in enumerate(sc.bodies)]
        self.body_verts = [torch.arange(offs[i], offs[i] + b.n_vertices) for i, b in enumerate(sc.bodies)]
        self.pad_centers0 = (torch.tensor([list(map(float, p.center)) for p in sc.pads], dtype=DTYPE).reshape(-1, 3))
        self.pad_kind = [p.kind for p in sc.pads]
        self.pad_size = [torch.as_tensor(p.size, dtype=DTYPE).reshape(-1) for p in sc.pads]
        att_v, att_g = [], []
        for bi, vids, g in sc.attachments:
            if not 0 <= g < len(sc.pads):
                raise ValueError(f"attachment refers to pad {g}, but the scene has {len(sc.pads)} pads")
            for v in vids:
                att_v.append(offs[bi] + int(v))
                att_g.append(g)
        self.att_v = torch.tensor(att_v, dtype=torch.long)
        self.att_g = torch.tensor(att_g, dtype=torch.long)
        self.att_offset = self.X0[self.att_v] - self.pad_centers0[self.att_g] if att_v else torch.zeros(0, 3, dtype=DTYPE)
        self.gravity = torch.tensor(list(map(float, sc.gravity)), dtype=DTYPE)
        self._pad_mask = torch.zeros(len(sc.pads), o, dtype=torch.bool)
        for g, bi in (sc.pad_contacts or []):
            if not (0 <= g < len(sc.pads) and 0 <= bi < len(sc.bodies)):
                raise ValueError(f"pad_contacts entry {(g, bi)} refers to a missing pad or body")
            self._pad_mask[g, offs[bi]:offs[bi] + sc.bodies[bi].n_vertices] = True
        for A, B, mu in sc.contacts:
            if mu not in ("mu_cloth", "mu_obj"):
                raise ValueError(f"body-body contact friction must be 'mu_cloth' or 'mu_obj', got {mu!r}")

    @property
    def n_dof(self) -> int:
        return 3 * self.n_vertices

    @property
    def action_dim(self) -> int:
        return 3 * len(self.scene.pads)

    def initial_state(self) -> State:
        return State(self.X0.clone(), torch.zeros_like(self.X0), self.theta_rest.clone(), self.pad_centers0.clone())

    def _P(self, p: torch.Tensor) -> Dict[str, torch.Tensor]:
        P = {k: p[i] for i, k in enumerate(PARAM_NAMES)}
        P["eps_c"] = self.eps_c
        P["eps_f"] = self.eps_v * self.dt
        return P

    # ------------------------------------------------------------------ contact set (discrete, start of step)
    @torch.no_grad()
    def _pairs(self, x_t: torch.Tensor, pad_t: torch.Tensor, pad_n: torch.Tensor) -> dict:
        r = self.contact_radius
        pairs = {}
        pairs["table"] = torch.nonzero(x_t[:, 2] < r).reshape(-1) if self.scene.table else torch.zeros(0, dtype=torch.long)
        for kind in ("sphere", "box"):
            vs, gs = [], []
            for g, k in enumerate(self.pad_kind):
                if k != kind:
                    continue
                d = torch.minimum(self._sdf(x_t, pad_t[g], g), self._sdf(x_t, pad_n[g], g))
                near = d < r
                near[self.att_v[self.att_g == g]] = False  # a gripper does not collide with what it holds
                if self.scene.pad_contacts is not None:
                    near &= self._pad_mask[g]
                v = torch.nonzero(near).reshape(-1)
                vs.append(v)
                gs.append(torch.full_like(v, g))
            pairs[kind] = (torch.cat(vs), torch.cat(gs)) if vs else (torch.zeros(0, dtype=torch.long),) * 2
        for mu in ("mu_cloth", "mu_obj"):
            rows, sg = [], []
            for A, B, m in self.scene.contacts:
                if m != mu:
                    continue
                for a, b in ((A, B), (B, A)):
                    q, s = self._vf_candidates(x_t, self.body_verts[a], self.body_faces[b], r)
                    rows.append(q)
                    sg.append(s)
            pairs["vf_" + mu] = (torch.cat(rows), torch.cat(sg)) if rows else (torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=DTYPE))
        return pairs

    def _sdf(self, x, c, g):
        if self.pad_kind[g] == "sphere":
            return en.sphere_sdf(x, c, self.pad_size[g][0])
        return en.box_sdf(x, c, self.pad_size[g])

    @staticmethod
    def _bary(P, a, b, c):
        v0, v1, v2 = b - a, c - a, P - a
        d00, d01, d11 = en.dot(v0, v0), en.dot(v0, v1), en.dot(v1, v1)
        d20, d21 = en.dot(v2, v0), en.dot(v2, v1)
        den = d00 * d11 - d01 * d01
        w1 = (d11 * d20 - d01 * d21) / den
        w2 = (d00 * d21 - d01 * d20) / den
        return torch.stack([1.0 - w1 - w2, w1, w2], dim=-1)

    def _vf_candidates(self, x, verts, faces, r):
        P = x[verts][:, None, :]
        a, b, c = x[faces[:, 0]][None], x[faces[:, 1]][None], x[faces[:, 2]][None]
        n = en.cross(b - a, c - a)
        n = n / n.norm(dim=-1, keepdim=True)
        d = en.dot(n, P - a)  # (nv, nf)
        bary = self._bary(P, a, b, c)
        ok = (bary.min(dim=-1).values > -1e-6) & (d.abs() < r)
        dd = torch.where(ok, d.abs(), torch.full_like(d, float("inf")))
        best = dd.argmin(dim=1)
        has = torch.isfinite(dd.gather(1, best[:, None]))[:, 0]
        v = verts[has]
        f = faces[best[has]]
        sgn = torch.sign(d[has, best[has]])
        sgn = torch.where(sgn == 0, torch.ones_like(sgn), sgn)
        return torch.cat([v[:, None], f], dim=1), sgn

    # ------------------------------------------------------------------ elements (with lagged quantities)
    def _elements(self, x_t, v_t, theta_bar, pad_t, pad_n, P, pairs):
        """List of (element fn, vertex index (n, k), aux (n, m)); aux built with differentiable torch ops."""
        els = []
        if len(self.edge_idx):
            els.append((en.e_edge, self.edge_idx, self.edge_l0[:, None]))
        if len(self.tri_idx):
            els.append((en.e_area, self.tri_idx, self.tri_A0[:, None]))
        if len(self.hinge_idx):
            els.append((en.e_hinge, self.hinge_idx, torch.stack([self.hinge_w, theta_bar], 1)))
        if len(self.obj_edge_idx):
            els.append((en.e_edge_obj, self.obj_edge_idx, self.obj_edge_l0[:, None]))
        tv = pairs["table"]
        if len(tv):
            xt = x_t[tv]
            lam = P["k_contact"] * torch.relu(self.eps_c - xt[:, 2])
            els.append((en.e_table, tv[:, None], torch.cat([xt, lam[:, None]], 1)))
        for kind, fn in (("sphere", en.e_sphere), ("box", en.e_box)):
            v, g = pairs[kind]
            if len(v):
                xt = x_t[v]
                ct, cn = pad_t[g], pad_n[g]
                if kind == "sphere":
                    rad = torch.stack([self.pad_size[int(gi)][0] for gi in g])
                    d = en.sphere_sdf(xt, ct, rad)
                    nrm = (xt - ct) / en.safe_norm(xt - ct).clamp_min(1e-30)[:, None]
                    size = rad[:, None]
                else:
                    hs = torch.stack([self.pad_size[int(gi)] for gi in g])
                    d = en.box_sdf(xt, ct, hs)
                    nrm = en.box_normal(xt, ct, hs)
                    size = hs
                lam = P["k_contact"] * torch.relu(self.eps_c - d)
                T = en.tangent_basis(nrm).reshape(-1, 6)
                els.append((fn, v[:, None], torch.cat([cn, ct, xt, lam[:, None], T, size], 1)))
        if len(self.att_v):
            anchor = pad_n[self.att_g] + self.att_offset
            els.append((en.e_attach, self.att_v[:, None], anchor))
        for mu, fn in (("mu_cloth", en.e_vertex_face), ("mu_obj", en.e_vertex_face_obj)):
            q, sg = pairs["vf_" + mu]
            if len(q):
                Xt = x_t[q]
                d, n = en.point_face_distance(Xt, sg)
                lam = P["k_contact"] * torch.relu(self.eps_c - d)
                bary = self._bary(Xt[:, 0], Xt[:, 1], Xt[:, 2], Xt[:, 3])
                T = en.tangent_basis(n).reshape(-1, 6)
                els.append((fn, q, torch.cat([sg[:, None], lam[:, None], bary, T, Xt.reshape(-1, 12)], 1)))
        return els

    def _energy(self, x, x_t, v_t, theta_bar, pad_t, pad_n, p, pairs, els=None):
        P = self._P(p)
        if els is None:
            els = self._elements(x_t, v_t, theta_bar, pad_t, pad_n, P, pairs)
        xt = x_t + self.dt * v_t
        E = 0.5 / self.dt**2 * (self.mass[:, None] * (x - xt) ** 2).sum() - (self.mass[:, None] * self.gravity * x).sum()
        for fn, idx, aux in els:
            E = E + fn(x[idx], aux, P).sum()
        return E

    def element_hessians(self, x, els, P):
        """Exact per-element Hessian blocks (n, 3k, 3k) of every element group.

        Closed-form blocks where :data:`energies.ANALYTIC_HESSIANS` has them; for the rest one reverse pass
        gives every element's gradient and one batched second reverse pass
        (``is_grads_batched``, 12 one-hot directions in local coordinates) gives all blocks at once.
        """
        out = {}
        groups = []
        for fn, idx, aux in els:
            if fn is en.e_attach:
                continue
            h = en.ANALYTIC_HESSIANS.get(fn) if self.analytic_hessians else None
            if h is not None:
                out[id(fn), id(idx)] = h(x.detach()[idx], aux.detach(), P).reshape(len(idx), 3 * idx.shape[1], -1)
            else:
                groups.append((fn, idx, aux))
        Xs = [x.detach()[idx].requires_grad_(True) for _, idx, _ in groups]
        if groups:
            with torch.enable_grad():
                E = sum(fn(X, aux.detach() if aux.requires_grad else aux, P).sum()
                        for (fn, _, aux), X in zip(groups, Xs))
                gs = torch.autograd.grad(E, Xs, create_graph=True)
                kmax = max(idx.shape[1] for _, idx, _ in groups)
                dirs = []
                for _, idx, _ in groups:
                    n, k = idx.shape
                    eye = torch.zeros(3 * kmax, 3 * k, dtype=DTYPE)
                    eye[: 3 * k] = torch.eye(3 * k, dtype=DTYPE)
                    dirs.append(eye.reshape(3 * kmax, 1, k, 3).expand(3 * kmax, n, k, 3))
                Hs = torch.autograd.grad(gs, Xs, dirs, is_grads_batched=True, allow_unused=True,
                                         materialize_grads=True)
            for (fn, idx, _), Hg in zip(groups, Hs):
                n, k = idx.shape
                out[id(fn), id(idx)] = Hg.detach()[: 3 * k].permute(1, 0, 2, 3).reshape(n, 3 * k, 3 * k)
        return out

    def _sparsity(self):
        """CSR pattern of the Hessian for the fixed elements (membrane, hinges, block springs) and every vertex's
        3x3 diagonal block (mass, table, pads, attachments), with each element entry's position in it."""
        N = self.n_dof
        groups = [t for t in (self.edge_idx, self.tri_idx, self.hinge_idx, self.obj_edge_idx) if len(t)]
        keys = []
        for idx in groups:
            r, c = _block_rc(idx)
            keys.append(r * N + c)
        dr, dc = _block_rc(torch.arange(self.n_vertices)[:, None])
        keys.append(dr * N + dc)
        uniq, inv = np.unique(np.concatenate(keys), return_inverse=True)
        rows, cols = uniq // N, uniq % N
        self._sp_indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=N))]).astype(np.int32)
        self._sp_indices = cols.astype(np.int32)
        self._sp_nnz = len(uniq)
        self._sp_pos, o = {}, 0
        for idx, k in zip(groups, keys[:-1]):
            self._sp_pos[id(idx)] = (idx, inv[o:o + len(k)])
            o += len(k)
        self._sp_diag = inv[o:].reshape(self.n_vertices, 9)
        self._sp_mass = np.repeat(self.mass.numpy() / self.dt**2, 3)
        self._sp_mass_pos = self._sp_diag[:, [0, 4, 8]].reshape(-1)

    def _hessian(self, x, els, P, project: bool, blocks_all=None):
        """Assembled Hessian of the incremental potential as a scipy CSR matrix (n_dof x n_dof); ``blocks_all``:
        the element blocks of :meth:`element_hessians` at ``x`` when already computed."""
        N = self.n_dof
        vals, pos, extra = [self._sp_mass], [self._sp_mass_pos], []
        if blocks_all is None:
            blocks_all = self.element_hessians(x, els, P)
        for fn, idx, aux in els:
            k = idx.shape[1]
            if fn is en.e_attach:
                blocks = (P["k_att"] * torch.eye(3, dtype=DTYPE)).expand(len(idx), 3, 3)
            else:
                blocks = blocks_all[id(fn), id(idx)]
                if project:
                    blocks = project_psd(blocks)
            b = blocks.detach().reshape(-1).numpy()
            known = self._sp_pos.get(id(idx))
            if known is not None and known[0] is idx:
                vals.append(b)
                pos.append(known[1])
            elif k == 1:
                vals.append(b)
                pos.append(self._sp_diag[idx[:, 0].numpy()].reshape(-1))
            else:  # vertex-face contact pairs: outside the fixed pattern
                r, c = _block_rc(idx)
                extra.append((b, r, c))
        data = np.bincount(np.concatenate(pos), weights=np.concatenate(vals), minlength=self._sp_nnz)
        H = sp.csr_matrix((data, self._sp_indices, self._sp_indptr), shape=(N, N))
        if extra:
            b, r, c = (np.concatenate(t) for t in zip(*extra))
            H = (H + sp.coo_matrix((b, (r, c)), shape=(N, N)).tocsr()).tocsr()
        return H

    def hessian_dense(self, x, els, P, project: bool = False) -> torch.Tensor:
        """The assembled Hessian as a dense torch tensor (for tests and diagnostics)."""
        return torch.from_numpy(self._hessian(x, els, P, project).toarray())

    # ------------------------------------------------------------------ Newton solve
    @torch.no_grad()
    def _solve(self, x_t, v_t, theta_bar, pad_t, pad_n, p, pairs):
        P = self._P(p)
        els = self._elements(x_t, v_t, theta_bar, pad_t, pad_n, P, pairs)
        x = (x_t + self.dt * v_t).clone()

        def energy_grad(x):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                E = self._energy(xr, x_t, v_t, theta_bar, pad_t, pad_n, p, pairs, els)
                (g,) = torch.autograd.grad(E, xr)
            return E.detach(), g

        def energy(x):
            return self._energy(x, x_t, v_t, theta_bar, pad_t, pad_n, p, pairs, els)

        stats = StepStats(n_contacts=sum(len(v[0]) if isinstance(v, tuple) else len(v) for v in pairs.values()))
        converged = False
        step_norm = float("inf")
        L = None
        prev_norm = float("inf")
        n_hess = 0
        for it in range(1, self.newton_max_iter + 1):
            E, g = energy_grad(x)
            gf = g.reshape(-1)
            if L is None:
                # sparse LU (symmetric ordering, diagonal pivots) of the exact Hessian when it is positive definite,
                # else of the per-element PSD-projected one; reused (chord Newton) while the steps shrink fast
                n_hess += 1
                L = None
                blocks = self.element_hessians(x, els, P)
                if self.projection == "auto":
                    L = _factor_pd(self._hessian(x, els, P, project=False, blocks_all=blocks))
                if L is None:
                    H = self._hessian(x, els, P, project=True, blocks_all=blocks)
                    L = _factor_pd(H)
                    if L is None:
                        L = _factor_pd(H + 1e-9 * abs(H.diagonal()).max() * sp.identity(H.shape[0], format="csr"))
                    if L is None:
                        break
            dx = -torch.from_numpy(L.solve(gf.numpy())).reshape(-1, 3)
            if not torch.isfinite(dx).all():
                break
            step_norm = float(dx.abs().max())
            if step_norm < self.tol:
                x = x + dx
                converged = True
                break
            slope = float((g * dx).sum())
            alpha = 1.0
            Ef = float(E)
            while alpha > 1e-12:
                xn = x + alpha * dx
                En = float(energy(xn))
                if En <= Ef + 1e-4 * alpha * slope + 1e-13 * abs(Ef):
                    break
                alpha *= 0.5
            x = x + alpha * dx
            if alpha * step_norm < 1e-3 * self.tol and step_norm < 1e3 * self.tol:
                converged = True  # line search cannot make progress at round-off level
                break
            if alpha < 1.0 or step_norm > self.hessian_reuse_ratio * prev_norm:
                L = None  # slow progress: refresh the Hessian
            prev_norm = step_norm
        stats.hessians = n_hess
        stats.iterations, stats.converged, stats.step_norm = it, converged, step_norm
        self.last_stats = stats
        self.stats_log.append(stats)
        if not torch.isfinite(x).all():
            raise NewtonError(f"Newton produced non-finite positions after {it} iterations; reduce dt or the "
                              "gripper speed, or check the parameters")
        if not converged:
            msg = (f"Newton did not converge in {self.newton_max_iter} iterations (last step {step_norm:.3g} m > "
                   f"tol {self.tol:.3g} m); raise newton_max_iter, loosen tol, reduce dt, or pass on_fail='warn'")
            if self.on_fail == "raise":
                raise NewtonError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return x

    # ------------------------------------------------------------------ public API
    def _coerce_params(self, params) -> torch.Tensor:
        if params is None:
            return self.params
        if isinstance(params, dict):
            unknown = set(params) - set(PARAM_NAMES)
            if unknown:
                raise TypeError(f"unknown simulator parameters {sorted(unknown)}; expected some of {PARAM_NAMES}")
            base = self.params
            p = torch.stack([torch.as_tensor(params[k], dtype=DTYPE) if k in params else base[i]
                             for i, k in enumerate(PARAM_NAMES)])
        else:
            p = params
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params must be a tensor or dict, got {type(p).__name__}")
        self.check_params(p)
        return p

    def check_action(self, action: torch.Tensor) -> torch.Tensor:
        G = len(self.scene.pads)
        a = torch.as_tensor(action, dtype=DTYPE)
        if a.numel() != 3 * G:
            raise ValueError(f"action must hold {3 * G} numbers (a 3-D translation per gripper pad), got shape "
                             f"{tuple(a.shape)}")
        a = a.reshape(G, 3)
        if not torch.isfinite(a.detach()).all():
            raise ValueError("action contains NaN or inf")
        over = float(a.detach().abs().max()) if a.numel() else 0.0
        if over > self.max_moving_dist * (1 + 1e-9):
            raise ValueError(f"gripper action {over:.3g} m exceeds max_moving_dist={self.max_moving_dist:.3g} m per "
                             "axis per step; scale or clip the action")
        return a

    def check_state(self, state: State) -> None:
        """ValueError unless ``state`` has this scene's shapes and finite values."""
        if not isinstance(state, State):
            raise TypeError(f"state must be a State, got {type(state).__name__}")
        shapes = dict(x=(self.n_vertices, 3), v=(self.n_vertices, 3), theta_bar=(len(self.hinge_idx),),
                      pads=(len(self.scene.pads), 3))
        for name, shape in shapes.items():
            t = getattr(state, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                raise ValueError(f"state.{name} must be a tensor of shape {shape}, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if not torch.isfinite(t.detach()).all():
                raise ValueError(f"state.{name} contains NaN or inf")

    def step(self, state: State, action=None, params=None) -> State:
        """One implicit-Euler step; differentiable in state, action and params."""
        p = self._coerce_params(params)
        if action is None:
            action = torch.zeros(len(self.scene.pads), 3, dtype=DTYPE)
        a = self.check_action(action)
        self.check_state(state)
        pad_n = state.pads + a
        pairs = self._pairs(state.x.detach(), state.pads.detach(), pad_n.detach())
        x_new = _NewtonStep.apply(self, pairs, state.x, state.v, state.theta_bar, state.pads, pad_n, p)
        v_new = (x_new - state.x) / self.dt
        tb = state.theta_bar
        if self.yield_angle is not None and len(self.hinge_idx):
            th = en.hinge_angle(x_new[self.hinge_idx])
            diff = th - tb
            tb = torch.where(diff.abs() > self.yield_angle, th - self.yield_angle * torch.sign(diff), tb)
        return State(x_new, v_new, tb, pad_n)

    def rollout(self, actions, state: Optional[State] = None, params=None) -> List[State]:
        """States ``[s_0, ..., s_T]`` for actions of shape (T, n_pads, 3) (or (T, 3 n_pads))."""
        state = self.initial_state() if state is None else state
        actions = torch.as_tensor(actions, dtype=DTYPE) if not isinstance(actions, torch.Tensor) else actions
        states = [state]
        for t in range(actions.shape[0]):
            state = self.step(state, actions[t], params)
            states.append(state)
        return states

    # ------------------------------------------------------------------ diagnostics
    def hinge_angles(self, x: torch.Tensor) -> torch.Tensor:
        return en.hinge_angle(x[self.hinge_idx])

    def elastic_energy(self, x: torch.Tensor, theta_bar: Optional[torch.Tensor] = None, params=None) -> torch.Tensor:
        """Membrane + bending (+ block springs) energy at positions x."""
        P = self._P(self._coerce_params(params))
        tb = self.theta_rest if theta_bar is None else theta_bar
        E = x.new_zeros(())
        if len(self.edge_idx):
            E = E + en.e_edge(x[self.edge_idx], self.edge_l0[:, None], P).sum()
        if len(self.tri_idx):
            E = E + en.e_area(x[self.tri_idx], self.tri_A0[:, None], P).sum()
        if len(self.hinge_idx):
            E = E + en.e_hinge(x[self.hinge_idx], torch.stack([self.hinge_w, tb], 1), P).sum()
        if len(self.obj_edge_idx):
            E = E + en.e_edge_obj(x[self.obj_edge_idx], self.obj_edge_l0[:, None], P).sum()
        return E

    def total_energy(self, state: State, params=None) -> torch.Tensor:
        """Kinetic + elastic + gravity + contact-penalty energy (pads static at ``state.pads``)."""
        P = self._P(self._coerce_params(params))
        x = state.x
        E = 0.5 * (self.mass[:, None] * state.v**2).sum() - (self.mass[:, None] * self.gravity * x).sum()
        E = E + self.elastic_energy(x, state.theta_bar, params)
        if self.scene.table:
            E = E + en._penalty(x[:, 2], P).sum()
        for g in range(len(self.scene.pads)):
            E = E + en._penalty(self._sdf(x, state.pads[g], g), P).sum()
        return E


def _block_rc(idx: torch.Tensor):
    """Row and column DOF indices (flattened numpy) of the (3k x 3k) blocks of elements with vertex index ``idx``."""
    n, k = idx.shape
    dof = (3 * idx[:, :, None] + torch.arange(3)).reshape(n, 3 * k).numpy().astype(np.int64)
    rows = np.broadcast_to(dof[:, :, None], (n, 3 * k, 3 * k)).reshape(-1)
    cols = np.broadcast_to(dof[:, None, :], (n, 3 * k, 3 * k)).reshape(-1)
    return rows, cols


def _factor_pd(H):
    """Sparse LU of a symmetric matrix with a symmetric fill-reducing ordering and diagonal pivots, so that
    ``P^T H P = L D L^T`` and the signs of ``U``'s diagonal are H's inertia.  Returns the factorisation when H is
    positive definite, else ``None``."""
    try:
        lu = spla.splu(H.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options=dict(SymmetricMode=True))
    except RuntimeError:  # a zero pivot: singular
        return None
    if not np.array_equal(lu.perm_r, lu.perm_c):  # not a symmetric permutation: inertia unknown
        return None
    d = lu.U.diagonal()
    if not (np.isfinite(d).all() and (d > 0).all()):
        return None
    return lu


def project_psd(blocks: torch.Tensor) -> torch.Tensor:
    """Clamp the eigenvalues of symmetric blocks (n, k, k) at zero."""
    sym = 0.5 * (blocks + blocks.transpose(-1, -2))
    w, Q = torch.linalg.eigh(sym)
    return (Q * w.clamp_min(0.0).unsqueeze(-2)) @ Q.transpose(-1, -2)


class _NewtonStep(torch.autograd.Function):
    """x_{t+1} = argmin IP(x; x_t, v_t, theta_bar, pad_t, pad_n, p) with an implicit-function backward."""

    @staticmethod
    def forward(ctx, sim, pairs, x_t, v_t, theta_bar, pad_t, pad_n, p):
        x_new = sim._solve(x_t.detach(), v_t.detach(), theta_bar.detach(), pad_t.detach(), pad_n.detach(),
                           p.detach(), pairs)
        ctx.sim, ctx.pairs = sim, pairs
        ctx.save_for_backward(x_t, v_t, theta_bar, pad_t, pad_n, p, x_new)
        return x_new

    @staticmethod
    def backward(ctx, gx):
        sim, pairs = ctx.sim, ctx.pairs
        x_t, v_t, theta_bar, pad_t, pad_n, p, x_new = ctx.saved_tensors
        need = ctx.needs_input_grad[2:]
        ins = [t.detach().requires_grad_(bool(n)) for t, n in zip((x_t, v_t, theta_bar, pad_t, pad_n, p), need)]
        with torch.no_grad():
            P = sim._P(p.detach())
            els = sim._elements(x_t.detach(), v_t.detach(), theta_bar.detach(), pad_t.detach(), pad_n.detach(), P, pairs)
            H = sim._hessian(x_new.detach(), els, P, project=False)
            try:
                lam = torch.from_numpy(spla.splu(H.tocsc()).solve(gx.detach().reshape(-1).numpy().copy()))
            except RuntimeError:  # exactly singular
                lam = torch.full((H.shape[0],), float("nan"), dtype=DTYPE)
        if not torch.isfinite(lam).all():
            raise NewtonError("adjoint solve with the step's Hessian produced non-finite values (singular Hessian)")
        with torch.enable_grad():
            x = x_new.detach().requires_grad_(True)
            E = sim._energy(x, *ins, pairs)
            (g,) = torch.autograd.grad(E, x, create_graph=True)
            wanted = [t for t in ins if t.requires_grad]
            grads = torch.autograd.grad(g, wanted, grad_outputs=-lam.reshape_as(g), allow_unused=True) if wanted else []
        out, k = [], 0
        for t in ins:
            if t.requires_grad:
                gr = grads[k]
                out.append(torch.zeros_like(t) if gr is None else gr)
                k += 1
            else:
                out.append(None)
        return (None, None, *out)
