"""Triangle-mesh construction and topology (edges, hinges) with validation.

A sheet is an ``n x n``-vertex grid split into triangles; a block is a small
vertex lattice held rigid by stiff springs.  ``topology`` derives unique edges and
the interior hinges (edge + two opposite vertices) used by the bending energy, and
rejects meshes the energies are not defined on (non-manifold edges, inconsistent
orientation, degenerate triangles, bad indices).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import torch

DTYPE = torch.float64


@dataclass
class Body:
    """One deformable body.  ``kind`` is ``"sheet"`` (membrane + bending) or ``"block"`` (springs)."""

    name: str
    kind: str
    X: torch.Tensor  # (V, 3) initial positions
    faces: torch.Tensor  # (F, 3) contact / membrane triangles
    mass: torch.Tensor  # (V,)
    edges: torch.Tensor  # (E, 2)
    hinges: torch.Tensor  # (H, 4) (v0, v1 = edge; v2, v3 opposite vertices)
    dx: float = 0.0  # characteristic edge length (bending weight dx^2/3)
    rest_X: Optional[torch.Tensor] = None  # rest shape (defaults to X)
    meta: dict = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.X.shape[0])


def topology(faces: torch.Tensor, n_vertices: int, X: Optional[torch.Tensor] = None):
    """Unique edges (E, 2) and hinges (H, 4) of a triangle mesh; raises ValueError on bad meshes."""
    faces = torch.as_tensor(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"faces must be an integer tensor, got {faces.dtype}")
    faces = faces.long()
    if faces.numel() and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ValueError(f"face indices must lie in [0, {n_vertices}), got range [{int(faces.min())}, {int(faces.max())}]")
    fl = faces.tolist()
    for f in fl:
        if len(set(f)) != 3:
            raise ValueError(f"face {f} repeats a vertex; every triangle needs three distinct vertices")
    if len({tuple(sorted(f)) for f in fl}) != len(fl):
        raise ValueError("mesh has duplicate faces; expected each triangle once")
    directed = {}
    edge_faces = {}
    for fi, f in enumerate(fl):
        for k in range(3):
            a, b, c = f[k], f[(k + 1) % 3], f[(k + 2) % 3]
            if (a, b) in directed:
                raise ValueError(
                    f"faces {directed[(a, b)][0]} and {fi} both traverse edge {a}->{b}: the mesh is not consistently "
                    "oriented (or is non-manifold); expected adjacent faces to traverse a shared edge in opposite directions"
                )
            directed[(a, b)] = (fi, c)
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(fi)
    for e, fs in edge_faces.items():
        if len(fs) > 2:
            raise ValueError(f"non-manifold mesh: edge {e} is shared by {len(fs)} faces {fs}; expected at most 2")
    edges = sorted(edge_faces)
    hinges = []
    for (a, b) in edges:
        if len(edge_faces[(a, b)]) == 2:
            # orient so that face 1 traverses v0 -> v1
            if (a, b) in directed and (b, a) in directed:
                v0, v1 = a, b
                v2 = directed[(a, b)][1]
                v3 = directed[(b, a)][1]
                hinges.append((v0, v1, v2, v3))
    if X is not None:
        X = torch.as_tensor(X, dtype=DTYPE)
        if X.shape != (n_vertices, 3):
            raise ValueError(f"positions must have shape ({n_vertices}, 3), got {tuple(X.shape)}")
        if not torch.isfinite(X).all():
            raise ValueError("vertex positions contain NaN or inf")
        A = triangle_areas(X, faces)
        if (A <= 1e-14).any():
            bad = int(torch.nonzero(A <= 1e-14)[0, 0])
            raise ValueError(f"degenerate triangle {fl[bad]} (area {float(A[bad]):.3g}); expected positive areas")
    return torch.tensor(edges, dtype=torch.long).reshape(-1, 2), torch.tensor(hinges, dtype=torch.long).reshape(-1, 4)


def triangle_areas(X: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    a, b, c = X[faces[:, 0]], X[faces[:, 1]], X[faces[:, 2]]
    return 0.5 * torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)


def grid_faces(nx: int, ny: int) -> torch.Tensor:
    """Triangles of an ``nx x ny``-vertex grid (vertex id = iy * nx + ix), normals along +z."""
    faces = []
    for iy in range(ny - 1):
        for ix in range(nx - 1):
            a = iy * nx + ix
            b, c, d = a + 1, a + nx + 1, a + nx
            faces += [(a, b, c), (a, c, d)]
    return torch.tensor(faces, dtype=torch.long)


def make_sheet(n: int = 11, size: float = 0.06, origin=(0.0, 0.0, 0.0), rho: float = 40.0, name: str = "sheet",
               faces: Optional[torch.Tensor] = None, X: Optional[torch.Tensor] = None) -> Body:
    """Square ``n x n``-vertex sheet of side ``size`` (m), lower corner at ``origin``; vertex mass rho * dx^2.

    ``faces``/``X`` may replace the grid with any triangle mesh (validated by :func:`topology`).
    """
    if X is None:
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"sheet resolution n must be an int >= 2, got {n!r}")
        if not size > 0:
            raise ValueError(f"sheet size must be positive, got {size!r}")
        t = torch.linspace(0.0, size, n, dtype=DTYPE)
        yy, xx = torch.meshgrid(t, t, indexing="ij")
        X = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.zeros(n * n, dtype=DTYPE)], dim=1)
        X = X + torch.tensor(origin, dtype=DTYPE)
        faces = grid_faces(n, n)
        dx = size / (n - 1)
    else:
        X = torch.as_tensor(X, dtype=DTYPE)
        if faces is None:
            raise ValueError("a custom sheet needs faces as well as positions")
        faces = torch.as_tensor(faces).long()
        dx = None
    edges, hinges = topology(faces, X.shape[0], X)
    if dx is None:
        dx = float((X[edges[:, 0]] - X[edges[:, 1]]).norm(dim=1).min())
    # lumped mass: one third of the adjacent triangle areas (rho * dx^2 per interior grid vertex)
    A = triangle_areas(X, faces)
    mass = torch.zeros(X.shape[0], dtype=DTYPE).index_add_(0, faces.reshape(-1), (A / 3.0).repeat_interleave(3))
    mass = rho * mass
    return Body(name=name, kind="sheet", X=X, faces=faces, mass=mass, edges=edges, hinges=hinges, dx=dx)


def make_block(size=(0.015, 0.015, 0.006), res=(3, 3, 2), center=(0.0, 0.0, 0.0), mass: float = 2e-3,
               name: str = "block") -> Body:
    """A box-shaped vertex lattice (``res`` vertices per axis) held rigid by springs between every pair of
    vertices of each lattice cell; bottom and top faces are triangulated for contact."""
    nx, ny, nz = res
    if min(res) < 2:
        raise ValueError(f"block resolution needs >= 2 vertices per axis, got {res}")
    sx, sy, sz = size
    xs = torch.linspace(-sx / 2, sx / 2, nx, dtype=DTYPE)
    ys = torch.linspace(-sy / 2, sy / 2, ny, dtype=DTYPE)
    zs = torch.linspace(-sz / 2, sz / 2, nz, dtype=DTYPE)
    zz, yy, xx = torch.meshgrid(zs, ys, xs, indexing="ij")
    X = torch.stack([xx.reshape(-1), yy.reshape(-1), zz.reshape(-1)], 1) + torch.tensor(center, dtype=DTYPE)

    def vid(ix, iy, iz):
        return (iz * ny + iy) * nx + ix

    edges = set()
    for iz, iy, ix in itertools.product(range(nz - 1), range(ny - 1), range(nx - 1)):
        cell = [vid(ix + a, iy + b, iz + c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
        for u, w in itertools.combinations(cell, 2):
            edges.add((min(u, w), max(u, w)))
    grid = grid_faces(nx, ny)
    bottom = grid[:, [0, 2, 1]]  # normals pointing down (outward)
    top = grid + (nz - 1) * nx * ny
    faces = torch.cat([bottom, top])
    V = X.shape[0]
    return Body(name=name, kind="block", X=X, faces=faces, mass=torch.full((V,), mass / V, dtype=DTYPE),
                edges=torch.tensor(sorted(edges), dtype=torch.long), hinges=torch.zeros(0, 4, dtype=torch.long),
                dx=float(min(size)))
