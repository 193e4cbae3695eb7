"""Per-element energies of the thin-shell model, written once for batches and for ``torch.func.vmap``.

Every element function has the signature ``f(X, aux, p) -> energy`` with ``X`` of shape
``(..., k, 3)`` (the element's vertex positions), ``aux`` of shape ``(..., m)`` (rest data and
lagged contact quantities) and ``p`` the dictionary of scalar parameters.  Summing ``f`` over all
elements gives the total energy; ``vmap(hessian(f))`` gives the exact per-element Hessian blocks
that Newton projects to PSD and assembles.

Equations (ThinShellLab, Wang et al. ICLR 2024; IPC friction, Li et al. 2020):

* edge (membrane stretch)   ``K_l (1 - l / l0)^2 l0``
* area (membrane area)      ``K_a (1 - A / A0)^2 A0``
* hinge (bending)           ``K_b (theta - theta_bar)^2 w``,  ``w = dx^2 / 3``, theta = signed dihedral angle
* contact (one-sided)       ``k_c / 2 (eps_c - d)^2`` for ``d < eps_c``
* friction (lagged, smoothed Coulomb) ``mu lambda f0(|u|)`` with ``f0(y) = -y^3/(3 e^2) + y^2/e + e/3``
  for ``y < e = eps_v * dt`` and ``y`` otherwise; ``lambda`` (normal force) and the tangent basis ``T``
  are taken at the start of the step, ``u`` is the tangential relative displacement during the step.
"""

from __future__ import annotations

import torch


def cross(a, b):
    return torch.linalg.cross(a, b, dim=-1)


def dot(a, b):
    return (a * b).sum(-1)


def safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis whose derivatives at 0 are 0 instead of NaN."""
    s = dot(v, v)
    pos = s > 1e-40
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s))


def hinge_angle(X: torch.Tensor) -> torch.Tensor:
    """Signed dihedral angle of hinge ``X = (x0, x1, x2, x3)``; 0 when flat.

    Face 1 is (x0, x1, x2), face 2 is (x1, x0, x3); both normals follow the mesh orientation and the
    sign is that of ``(n1 x n2) . e``.
    """
    x0, x1, x2, x3 = X[..., 0, :], X[..., 1, :], X[..., 2, :], X[..., 3, :]
    e = x1 - x0
    n1 = cross(e, x2 - x0)
    n2 = cross(x3 - x0, e)
    en = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)
    return torch.atan2(dot(cross(n1, n2), en), dot(n1, n2))


def f0_friction(u: torch.Tensor, eps_f: float) -> torch.Tensor:
    """IPC's C1-mollified friction potential of the tangential displacement ``u`` (..., 2)."""
    s = dot(u, u)
    y = safe_norm(u)
    smooth = -y * s / (3.0 * eps_f**2) + s / eps_f + eps_f / 3.0
    return torch.where(y < eps_f, smooth, y)


# ----------------------------------------------------------------------------- elastic elements
def e_edge(X, aux, p, key="Kl"):
    """aux = [l0]."""
    l = torch.linalg.vector_norm(X[..., 1, :] - X[..., 0, :], dim=-1)
    l0 = aux[..., 0]
    return p[key] * (1.0 - l / l0) ** 2 * l0


def e_edge_obj(X, aux, p):
    return e_edge(X, aux, p, key="K_obj")


def e_area(X, aux, p):
    """aux = [A0]."""
    A = 0.5 * torch.linalg.vector_norm(cross(X[..., 1, :] - X[..., 0, :], X[..., 2, :] - X[..., 0, :]), dim=-1)
    A0 = aux[..., 0]
    return p["Ka"] * (1.0 - A / A0) ** 2 * A0


def e_hinge(X, aux, p):
    """aux = [w, theta_bar]."""
    th = hinge_angle(X)
    return p["Kb"] * (th - aux[..., 1]) ** 2 * aux[..., 0]


# ----------------------------------------------------------------------------- contact elements
def _penalty(d, p):
    pen = torch.relu(p["eps_c"] - d)
    return 0.5 * p["k_contact"] * pen * pen


def e_table(X, aux, p):
    """Vertex vs plane z = 0 with friction.  aux = [x_t (3), lambda]."""
    x = X[..., 0, :]
    u = x[..., :2] - aux[..., 0:2]
    return _penalty(x[..., 2], p) + p["mu_table"] * aux[..., 3] * f0_friction(u, p["eps_f"])


def _pad_friction(x, aux, p):
    # aux = [c_n (3), c_t (3), x_t (3), lambda, T (6)]
    c_n, c_t, x_t = aux[..., 0:3], aux[..., 3:6], aux[..., 6:9]
    lam = aux[..., 9]
    T = aux[..., 10:16].reshape(*aux.shape[:-1], 2, 3)
    rel = (x - x_t) - (c_n - c_t)
    u = (T * rel.unsqueeze(-2)).sum(-1)
    return p["mu_pad"] * lam * f0_friction(u, p["eps_f"])


def sphere_sdf(x, c, r):
    return safe_norm(x - c) - r


def box_sdf(x, c, h):
    q = (x - c).abs() - h
    outside = safe_norm(torch.relu(q))
    inside = torch.clamp(q.max(dim=-1).values, max=0.0)
    return outside + inside


def box_normal(x, c, h):
    """Outward unit normal of the box SDF (gradient of :func:`box_sdf`)."""
    rel = x - c
    q = rel.abs() - h
    sgn = torch.where(rel >= 0, torch.ones_like(rel), -torch.ones_like(rel))
    qp = torch.relu(q)
    out = sgn * qp / safe_norm(qp).clamp_min(1e-30).unsqueeze(-1)
    onehot = torch.nn.functional.one_hot(q.argmax(-1), 3).to(x.dtype) * sgn
    return torch.where((q > 0).any(-1, keepdim=True), out, onehot)


def e_sphere(X, aux, p):
    """Vertex vs kinematic sphere pad.  aux = [c_n, c_t, x_t, lambda, T, radius]."""
    x = X[..., 0, :]
    d = sphere_sdf(x, aux[..., 0:3], aux[..., 16])
    return _penalty(d, p) + _pad_friction(x, aux, p)


def e_box(X, aux, p):
    """Vertex vs kinematic axis-aligned box pad.  aux = [c_n, c_t, x_t, lambda, T, half extents (3)]."""
    x = X[..., 0, :]
    d = box_sdf(x, aux[..., 0:3], aux[..., 16:19])
    return _penalty(d, p) + _pad_friction(x, aux, p)


def e_attach(X, aux, p):
    """Vertex held by a gripper: spring to the gripper's anchor point.  aux = [anchor (3)]."""
    r = X[..., 0, :] - aux[..., 0:3]
    return 0.5 * p["k_att"] * dot(r, r)


def point_face_distance(X, sgn):
    """Signed distance of vertex X[..., 0, :] to the plane of triangle X[..., 1:4, :] (sign ``sgn``)."""
    pt, a, b, c = X[..., 0, :], X[..., 1, :], X[..., 2, :], X[..., 3, :]
    n = cross(b - a, c - a)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    return sgn * dot(n, pt - a), n


def e_vertex_face(X, aux, p, mu_key="mu_cloth"):
    """Vertex vs triangle of another body.  aux = [sgn, lambda, bary (3), T (6), X_t (12)]."""
    d, _ = point_face_distance(X, aux[..., 0])
    lam = aux[..., 1]
    b = aux[..., 2:5]
    T = aux[..., 5:11].reshape(*aux.shape[:-1], 2, 3)
    Xt = aux[..., 11:23].reshape(*aux.shape[:-1], 4, 3)
    D = X - Xt
    rel = D[..., 0, :] - (b.unsqueeze(-1) * D[..., 1:4, :]).sum(-2)
    u = (T * rel.unsqueeze(-2)).sum(-1)
    return _penalty(d, p) + p[mu_key] * lam * f0_friction(u, p["eps_f"])


def e_vertex_face_obj(X, aux, p):
    return e_vertex_face(X, aux, p, mu_key="mu_obj")


def tangent_basis(n: torch.Tensor) -> torch.Tensor:
    """Two orthonormal tangents (..., 2, 3) perpendicular to unit normals n (..., 3)."""
    ex = torch.zeros_like(n)
    ex[..., 0] = 1.0
    ey = torch.zeros_like(n)
    ey[..., 1] = 1.0
    a = torch.where((n[..., 0].abs() < 0.9).unsqueeze(-1), ex, ey)
    t1 = cross(n, a)
    t1 = t1 / torch.linalg.vector_norm(t1, dim=-1, keepdim=True)
    t2 = cross(n, t1)
    return torch.stack([t1, t2], dim=-2)


# ----------------------------------------------------------------------------- closed-form element Hessians
# (the others -- area, hinge, box pad, vertex-face -- come from batched double backward in the simulator;
# tests check every block against autograd and finite differences)
def _eye(n, like):
    return torch.eye(n, dtype=like.dtype, device=like.device)


def hess_friction_u(u: torch.Tensor, eps_f: float) -> torch.Tensor:
    """Hessian (..., 2, 2) of f0(|u|) with respect to u."""
    y = safe_norm(u)
    I2 = _eye(2, u)
    uu = u.unsqueeze(-1) * u.unsqueeze(-2)
    ysafe = torch.where(y > 0, y, torch.ones_like(y))[..., None, None]
    inner = (2.0 / eps_f - y / eps_f**2)[..., None, None] * I2 - uu / (eps_f**2 * ysafe)
    outer = (I2 - uu / ysafe**2) / ysafe
    return torch.where((y < eps_f)[..., None, None], inner, outer)


def h_edge(X, aux, p, key="Kl"):
    d = X[..., 1, :] - X[..., 0, :]
    l = torch.linalg.vector_norm(d, dim=-1)
    l0 = aux[..., 0]
    n = d / l[..., None]
    nn = n.unsqueeze(-1) * n.unsqueeze(-2)
    B = (2.0 * p[key] / l0)[..., None, None] * (nn + ((l - l0) / l)[..., None, None] * (_eye(3, X) - nn))
    top = torch.cat([B, -B], -1)
    return torch.cat([top, -top], -2)


def h_edge_obj(X, aux, p):
    return h_edge(X, aux, p, key="K_obj")


def h_table(X, aux, p):
    x = X[..., 0, :]
    H = torch.zeros(*x.shape[:-1], 3, 3, dtype=X.dtype)
    H[..., 2, 2] = p["k_contact"] * (x[..., 2] < p["eps_c"]).to(X.dtype)
    u = x[..., :2] - aux[..., 0:2]
    H[..., :2, :2] += (p["mu_table"] * aux[..., 3])[..., None, None] * hess_friction_u(u, p["eps_f"])
    return H


def h_sphere(X, aux, p):
    x = X[..., 0, :]
    r = x - aux[..., 0:3]
    rho = torch.linalg.vector_norm(r, dim=-1)
    n = r / rho[..., None]
    nn = n.unsqueeze(-1) * n.unsqueeze(-2)
    d = rho - aux[..., 16]
    gap = p["eps_c"] - d
    act = (gap > 0).to(X.dtype)[..., None, None]
    H = act * p["k_contact"] * (nn - (gap / rho)[..., None, None] * (_eye(3, X) - nn))
    c_n, c_t, x_t = aux[..., 0:3], aux[..., 3:6], aux[..., 6:9]
    T = aux[..., 10:16].reshape(*aux.shape[:-1], 2, 3)
    u = (T * ((x - x_t) - (c_n - c_t)).unsqueeze(-2)).sum(-1)
    Hu = (p["mu_pad"] * aux[..., 9])[..., None, None] * hess_friction_u(u, p["eps_f"])
    return H + T.transpose(-1, -2) @ Hu @ T


ANALYTIC_HESSIANS = {e_edge: h_edge, e_edge_obj: h_edge_obj, e_table: h_table, e_sphere: h_sphere}
