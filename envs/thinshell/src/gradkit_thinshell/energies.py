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

import functools

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
# (the box pad's comes from batched double backward in the simulator;
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


@functools.lru_cache(maxsize=None)
def _sel_cached(n_blocks, pairs, dtype):
    M = torch.zeros(3 * n_blocks, 3 * n_blocks, dtype=dtype)
    for i, j, w in pairs:
        M[3 * i:3 * i + 3, 3 * j:3 * j + 3] += w * torch.eye(3, dtype=dtype)
    return M


def _sel(n_blocks: int, pairs, dtype):
    """Constant (3 n, 3 n) matrix with w * identity blocks at the (i, j, w) block positions in ``pairs`` (cached)."""
    return _sel_cached(n_blocks, tuple(pairs), dtype)


def _skew(v):
    """Cross-product matrices [v]_x (..., 3, 3) with [v]_x w = v x w."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _outer(a, b):
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def _sym(M):
    return M + M.transpose(-1, -2)


def _edge_frame_to_vertices(g, H):
    """Map a gradient (..., 3m) and Hessian (..., 3m, 3m) in edge vectors ``e_i = x_i - x_0`` (i = 1..m) to the
    vertices (x_0, ..., x_m): ``x_0`` gets minus the sum of the edge blocks."""
    m = g.shape[-1] // 3
    gv = g.reshape(*g.shape[:-1], m, 3)
    g_out = torch.cat([-gv.sum(-2, keepdim=True), gv], -2).reshape(*g.shape[:-1], 3 * (m + 1))
    Hb = H.reshape(*H.shape[:-2], m, 3, m, 3)
    col0 = -Hb.sum(-2, keepdim=True)  # (…, m, 3, 1, 3): rows e_i, column x_0
    top = torch.cat([col0, Hb], -2)  # (…, m, 3, m+1, 3)
    row0 = -top.sum(-4, keepdim=True)  # row x_0
    Hv = torch.cat([row0, top], -4)
    return g_out, Hv.reshape(*H.shape[:-2], 3 * (m + 1), 3 * (m + 1))


def h_area(X, aux, p):
    """Closed-form Hessian of :func:`e_area`: ``A = |e1 x e2| / 2`` with ``|e1 x e2|^2 = (e1.e1)(e2.e2) - (e1.e2)^2``."""
    e1, e2 = X[..., 1, :] - X[..., 0, :], X[..., 2, :] - X[..., 0, :]
    s1, s2, m = dot(e1, e1), dot(e2, e2), dot(e1, e2)
    N = s1 * s2 - m * m
    z = torch.zeros_like(e1)
    gs1, gs2, gm = torch.cat([2 * e1, z], -1), torch.cat([z, 2 * e2], -1), torch.cat([e2, e1], -1)
    Hs1 = _sel(2, [(0, 0, 2.0)], X.dtype)
    Hs2 = _sel(2, [(1, 1, 2.0)], X.dtype)
    Hm = _sel(2, [(0, 1, 1.0), (1, 0, 1.0)], X.dtype)
    gN = s2[..., None] * gs1 + s1[..., None] * gs2 - 2 * m[..., None] * gm
    HN = (s2[..., None, None] * Hs1 + s1[..., None, None] * Hs2 + _sym(_outer(gs1, gs2))
          - 2 * m[..., None, None] * Hm - 2 * _outer(gm, gm))
    rN = torch.sqrt(N)
    A = 0.5 * rN
    gA = (0.25 / rN)[..., None] * gN
    HA = (0.25 / rN)[..., None, None] * HN - (0.125 / (N * rN))[..., None, None] * _outer(gN, gN)
    A0 = aux[..., 0]
    d1 = 2.0 * p["Ka"] * (A - A0) / A0
    d2 = 2.0 * p["Ka"] / A0
    H = d2[..., None, None] * _outer(gA, gA) + d1[..., None, None] * HA
    return _edge_frame_to_vertices(gA, H)[1]


def hinge_angle_derivatives(X):
    """Dihedral angle of hinges ``X`` (…, 4, 3) with its gradient (…, 12) and Hessian (…, 12, 12), in closed form.

    With ``e = x1 - x0``, ``a = x2 - x0``, ``b = x3 - x0`` the face normals are ``n1 = e x a``, ``n2 = b x e`` and
    ``theta = atan2(y, c)`` where ``y = (n1 x n2).e/|e| = -|e| e.(a x b)`` and
    ``c = n1.n2 = (e.a)(e.b) - (e.e)(a.b)`` (Binet-Cauchy); both are polynomials in (e, a, b) apart from |e|.
    """
    x0 = X[..., 0, :]
    e, a, b = X[..., 1, :] - x0, X[..., 2, :] - x0, X[..., 3, :] - x0
    z = torch.zeros_like(e)
    dt_ = X.dtype
    # D = e.(a x b)
    D, gD, HD = _triple_derivatives(e, a, b)
    # |e|
    le = torch.linalg.vector_norm(e, dim=-1)
    eh = e / le[..., None]
    gl = torch.cat([eh, z, z], -1)
    Hl = torch.nn.functional.pad((_eye(3, X) - _outer(eh, eh)) / le[..., None, None], (0, 6, 0, 6))
    # y = -|e| D
    y = -le * D
    gy = -(D[..., None] * gl + le[..., None] * gD)
    Hy = -(D[..., None, None] * Hl + _sym(_outer(gl, gD)) + le[..., None, None] * HD)
    # c = pq - st with p = e.a, q = e.b, s = e.e, t = a.b
    pp, q, s, t = dot(e, a), dot(e, b), dot(e, e), dot(a, b)
    gp, gq = torch.cat([a, e, z], -1), torch.cat([b, z, e], -1)
    gs, gt = torch.cat([2 * e, z, z], -1), torch.cat([z, b, a], -1)
    Hp = _sel(3, [(0, 1, 1.0), (1, 0, 1.0)], dt_)
    Hq = _sel(3, [(0, 2, 1.0), (2, 0, 1.0)], dt_)
    Hs = _sel(3, [(0, 0, 2.0)], dt_)
    Ht = _sel(3, [(1, 2, 1.0), (2, 1, 1.0)], dt_)
    c = pp * q - s * t
    gc = q[..., None] * gp + pp[..., None] * gq - t[..., None] * gs - s[..., None] * gt
    Hc = (q[..., None, None] * Hp + pp[..., None, None] * Hq + _sym(_outer(gp, gq))
          - t[..., None, None] * Hs - s[..., None, None] * Ht - _sym(_outer(gs, gt)))
    # theta = atan2(y, c)
    r2 = y * y + c * c
    ty, tc = c / r2, -y / r2
    tyy, tcc, tyc = -2 * y * c / r2**2, 2 * y * c / r2**2, (y * y - c * c) / r2**2
    g = ty[..., None] * gy + tc[..., None] * gc
    H = (ty[..., None, None] * Hy + tc[..., None, None] * Hc + tyy[..., None, None] * _outer(gy, gy)
         + tcc[..., None, None] * _outer(gc, gc) + tyc[..., None, None] * _sym(_outer(gy, gc)))
    gv, Hv = _edge_frame_to_vertices(g, H)
    return torch.atan2(y, c), gv, Hv


def h_hinge(X, aux, p):
    """Closed-form Hessian of :func:`e_hinge`: ``2 K_b w (grad theta grad theta^T + (theta - theta_bar) hess theta)``."""
    th, g, H = hinge_angle_derivatives(X)
    k = 2.0 * p["Kb"] * aux[..., 0]
    return k[..., None, None] * (_outer(g, g) + (th - aux[..., 1])[..., None, None] * H)


def _triple_derivatives(u, v, w):
    """``D = u.(v x w)`` with its gradient (…, 9) and Hessian (…, 9, 9) in the variables (u, v, w)."""
    Z3 = torch.zeros(*u.shape[:-1], 3, 3, dtype=u.dtype, device=u.device)
    Su, Sv, Sw = _skew(u), _skew(v), _skew(w)
    D = dot(u, cross(v, w))
    gD = torch.cat([cross(v, w), cross(w, u), cross(u, v)], -1)
    HD = torch.cat([torch.cat([Z3, -Sw, Sv], -1), torch.cat([Sw, Z3, -Su], -1), torch.cat([-Sv, Su, Z3], -1)], -2)
    return D, gD, HD


def h_vertex_face(X, aux, p, mu_key="mu_cloth"):
    """Closed-form Hessian of :func:`e_vertex_face`.

    ``d = sgn D / R`` with ``D = w.(e1 x e2)``, ``R = |e1 x e2| = sqrt((e1.e1)(e2.e2) - (e1.e2)^2)``, ``w = p - a``,
    ``e1 = b - a``, ``e2 = c - a``; the friction term is a function of ``u = T J x`` with a constant J (lagged
    barycentric weights and tangents), so its Hessian is ``J^T T^T f0'' T J``.
    """
    pt, a, b, c = X[..., 0, :], X[..., 1, :], X[..., 2, :], X[..., 3, :]
    w, e1, e2 = pt - a, b - a, c - a
    D, gD, HD = _triple_derivatives(w, e1, e2)
    z = torch.zeros_like(w)
    s1, s2, m = dot(e1, e1), dot(e2, e2), dot(e1, e2)
    N2 = s1 * s2 - m * m
    gs1, gs2, gm = torch.cat([z, 2 * e1, z], -1), torch.cat([z, z, 2 * e2], -1), torch.cat([z, e2, e1], -1)
    Hs1 = _sel(3, [(1, 1, 2.0)], X.dtype)
    Hs2 = _sel(3, [(2, 2, 2.0)], X.dtype)
    Hm = _sel(3, [(1, 2, 1.0), (2, 1, 1.0)], X.dtype)
    gN = s2[..., None] * gs1 + s1[..., None] * gs2 - 2 * m[..., None] * gm
    HN = (s2[..., None, None] * Hs1 + s1[..., None, None] * Hs2 + _sym(_outer(gs1, gs2))
          - 2 * m[..., None, None] * Hm - 2 * _outer(gm, gm))
    R = torch.sqrt(N2)
    gR = gN / (2 * R)[..., None]
    HR = HN / (2 * R)[..., None, None] - _outer(gN, gN) / (4 * R**3)[..., None, None]
    sg = aux[..., 0]
    d = sg * D / R
    gd = sg[..., None] * (gD / R[..., None] - (D / R**2)[..., None] * gR)
    Hd = sg[..., None, None] * (HD / R[..., None, None] - _sym(_outer(gD, gR)) / (R**2)[..., None, None]
                                - (D / R**2)[..., None, None] * HR + (2 * D / R**3)[..., None, None] * _outer(gR, gR))
    gap = p["eps_c"] - d
    act = (gap > 0).to(X.dtype)
    H9 = (act * p["k_contact"])[..., None, None] * (_outer(gd, gd) - gap[..., None, None] * Hd)
    # (w, e1, e2) -> vertices (a, p, b, c), then reorder to (p, a, b, c)
    _, H = _edge_frame_to_vertices(gd, H9)
    perm = torch.tensor([3, 4, 5, 0, 1, 2, 6, 7, 8, 9, 10, 11])
    H = H[..., perm, :][..., :, perm]
    # friction: u = T (D0 - sum_i b_i D_i), D = X - X_t
    bb = aux[..., 2:5]
    T = aux[..., 5:11].reshape(*aux.shape[:-1], 2, 3)
    coef = torch.cat([torch.ones_like(bb[..., :1]), -bb], -1)  # (…, 4)
    J = (coef[..., None, :, None] * T[..., :, None, :]).reshape(*aux.shape[:-1], 2, 12)
    Xt = aux[..., 11:23].reshape(*aux.shape[:-1], 4, 3)
    u = (J * (X - Xt).reshape(*X.shape[:-2], 1, 12)).sum(-1)
    Hu = (p[mu_key] * aux[..., 1])[..., None, None] * hess_friction_u(u, p["eps_f"])
    return H + J.transpose(-1, -2) @ Hu @ J


def h_vertex_face_obj(X, aux, p):
    return h_vertex_face(X, aux, p, mu_key="mu_obj")


ANALYTIC_HESSIANS = {e_edge: h_edge, e_edge_obj: h_edge_obj, e_table: h_table, e_sphere: h_sphere,
                     e_area: h_area, e_hinge: h_hinge, e_vertex_face: h_vertex_face,
                     e_vertex_face_obj: h_vertex_face_obj}
