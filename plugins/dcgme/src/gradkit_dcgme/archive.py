"""CVT-MAP-Elites archive (Vassiliades et al. 2018): one elite per centroidal Voronoi cell.

Centroids are k-means (scikit-learn ``KMeans``, seeded) centres of ``n_init_samples`` points drawn
uniformly in the descriptor box, so they are a deterministic function of ``(n_cells, bounds,
n_init_samples, seed)``.  A solution goes to the cell of its nearest centroid and replaces the
elite there only if its fitness is strictly higher (MAP-Elites elitism per cell).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def cvt_centroids(n_cells: int, low: Sequence[float], high: Sequence[float], n_init_samples: int = 50_000,
                  seed: int = 0) -> np.ndarray:
    """``(n_cells, d)`` k-means centroids of uniform samples in the box ``[low, high]``."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if n_cells < 1 or n_init_samples < n_cells:
        raise ValueError(f"need 1 <= n_cells <= n_init_samples, got n_cells={n_cells}, n_init_samples={n_init_samples}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(n_init_samples, low.shape[0]))
    km = KMeans(n_clusters=n_cells, init="k-means++", n_init=1, max_iter=300, random_state=seed)
    # one thread: identical centroids whatever the machine, and no OpenMP oversubscription
    # (2 s -> 0.06 s for 16 cells on the shared 2-core machine)
    with threadpool_limits(limits=1):
        km.fit(x)
    return km.cluster_centers_.astype(np.float64)


class CVTArchive:
    """An archive of ``n_cells`` elites over the descriptor box ``[low, high]``.

    ``genomes`` (n_cells, genome_dim) float32, ``fitness`` (n_cells,) with ``-inf`` for empty
    cells, ``descriptors`` (n_cells, d).  ``centroids`` may be given (e.g. to share a
    tessellation); otherwise they are computed with :func:`cvt_centroids`.
    """

    def __init__(self, n_cells: int, low: Sequence[float], high: Sequence[float], genome_dim: int, *,
                 n_init_samples: int = 50_000, seed: int = 0, centroids: Optional[np.ndarray] = None):
        self.low = np.asarray(low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(high, dtype=np.float64).reshape(-1)
        if self.low.shape != self.high.shape or np.any(self.high <= self.low):
            raise ValueError(f"descriptor bounds need low < high elementwise, got {self.low} and {self.high}")
        if centroids is None:
            centroids = cvt_centroids(n_cells, self.low, self.high, n_init_samples, seed)
        centroids = np.asarray(centroids, dtype=np.float64)
        if centroids.shape != (n_cells, self.low.shape[0]):
            raise ValueError(f"centroids must have shape {(n_cells, self.low.shape[0])}, got {centroids.shape}")
        self.centroids = centroids
        self.n_cells = int(n_cells)
        self.genome_dim = int(genome_dim)
        self.genomes = np.zeros((n_cells, genome_dim), dtype=np.float32)
        self.fitness = np.full(n_cells, -np.inf)
        self.descriptors = np.zeros((n_cells, self.low.shape[0]))
        #: evaluations averaged into each elite's fitness and descriptor (0: empty cell)
        self.counts = np.zeros(n_cells, dtype=np.int64)

    # ------------------------------------------------------------------ queries
    @property
    def desc_dim(self) -> int:
        return int(self.low.shape[0])

    @property
    def filled(self) -> np.ndarray:
        return np.isfinite(self.fitness)

    def __len__(self) -> int:
        return int(self.filled.sum())

    def check_descriptors(self, desc: np.ndarray, what: str = "descriptor") -> np.ndarray:
        desc = np.asarray(desc, dtype=np.float64)
        if desc.ndim != 2 or desc.shape[1] != self.desc_dim:
            raise ValueError(f"{what}s must have shape (n, {self.desc_dim}), got {desc.shape}")
        if not np.all(np.isfinite(desc)):
            raise ValueError(f"{what}s must be finite, got {desc[~np.isfinite(desc).all(1)][:3]}")
        tol = 1e-6 * (self.high - self.low)
        bad = np.any((desc < self.low - tol) | (desc > self.high + tol), axis=1)
        if bad.any():
            raise ValueError(
                f"{what} {desc[bad][0].tolist()} lies outside the descriptor bounds "
                f"[{self.low.tolist()}, {self.high.tolist()}] ({int(bad.sum())} of {len(desc)} outside)"
            )
        return desc

    def index_of(self, desc: np.ndarray) -> np.ndarray:
        """Nearest-centroid cell of each descriptor row."""
        desc = self.check_descriptors(np.atleast_2d(desc))
        d2 = ((desc[:, None, :] - self.centroids[None, :, :]) ** 2).sum(-1)
        return np.argmin(d2, axis=1)

    def qd_score(self, offset: float = 0.0) -> float:
        """Σ (fitness − offset) over filled cells (offset 0: the tasks' rewards are ≥ 0)."""
        f = self.fitness[self.filled]
        return float(np.sum(f - offset))

    def coverage(self) -> float:
        return float(self.filled.mean())

    def max_fitness(self) -> float:
        return float(self.fitness.max()) if self.filled.any() else float("-inf")

    def sample(self, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """``n`` elites drawn uniformly (with replacement) from the filled cells: (genomes, descriptors)."""
        idx = np.flatnonzero(self.filled)
        if idx.size == 0:
            raise ValueError("cannot sample from an empty archive")
        pick = idx[rng.integers(0, idx.size, size=n)]
        return self.genomes[pick].copy(), self.descriptors[pick].copy()

    # ------------------------------------------------------------------ insertion
    def add(self, genomes: np.ndarray, fitness: np.ndarray, desc: np.ndarray,
            counts: Optional[np.ndarray] = None) -> np.ndarray:
        """Insert a batch; returns a bool mask of the solutions that became elites.

        Within a batch the solutions are offered in order, so of several offspring landing in one
        cell the fittest one wins (ties: the first).  ``counts``: how many evaluations each
        solution's fitness / descriptor average (default 1).
        """
        counts = np.ones(len(np.asarray(fitness).reshape(-1)), dtype=np.int64) if counts is None else \
            np.asarray(counts, dtype=np.int64).reshape(-1)
        genomes = np.asarray(genomes, dtype=np.float32)
        fitness = np.asarray(fitness, dtype=np.float64).reshape(-1)
        desc = self.check_descriptors(np.asarray(desc).reshape(len(fitness), -1))
        if genomes.shape != (len(fitness), self.genome_dim):
            raise ValueError(f"genomes must have shape ({len(fitness)}, {self.genome_dim}), got {genomes.shape}")
        if not np.all(np.isfinite(fitness)):
            raise ValueError("fitness values must be finite")
        cells = self.index_of(desc)
        added = np.zeros(len(fitness), dtype=bool)
        winner: Dict[int, int] = {}
        for i, c in enumerate(cells.tolist()):
            if fitness[i] > self.fitness[c]:
                self.fitness[c] = fitness[i]
                self.genomes[c] = genomes[i]
                self.descriptors[c] = desc[i]
                self.counts[c] = counts[i]
                prev = winner.get(c)
                if prev is not None:
                    added[prev] = False
                winner[c] = i
                added[i] = True
        return added

    def reevaluate(self, fitness: np.ndarray, desc: np.ndarray) -> int:
        """Fold one new evaluation of every elite (in the order of ``np.flatnonzero(self.filled)``) into
        its running means, then re-place the elites by their mean descriptor with per-cell elitism on
        the mean fitness.  Returns how many elites were dropped (a lucky elite whose mean moved into a
        cell held by a better one).  For stochastic evaluations (random starts): an elite's fitness and
        descriptor become averages over all its evaluations instead of one lucky draw.
        """
        idx = np.flatnonzero(self.filled)
        fitness = np.asarray(fitness, dtype=np.float64).reshape(-1)
        desc = self.check_descriptors(np.asarray(desc, dtype=np.float64).reshape(len(fitness), -1))
        if len(fitness) != len(idx):
            raise ValueError(f"need one new evaluation per elite ({len(idx)}), got {len(fitness)}")
        if not np.all(np.isfinite(fitness)):
            raise ValueError("fitness values must be finite")
        n = self.counts[idx].astype(np.float64)
        mean_f = (self.fitness[idx] * n + fitness) / (n + 1)
        mean_d = (self.descriptors[idx] * n[:, None] + desc) / (n + 1)[:, None]
        genomes, counts = self.genomes[idx].copy(), self.counts[idx] + 1
        self.fitness[:] = -np.inf
        self.genomes[:] = 0
        self.descriptors[:] = 0
        self.counts[:] = 0
        self.add(genomes, mean_f, np.clip(mean_d, self.low, self.high), counts)
        return int(len(idx) - self.filled.sum())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, np.ndarray]:
        return {"centroids": self.centroids, "genomes": self.genomes, "fitness": self.fitness,
                "descriptors": self.descriptors, "low": self.low, "high": self.high, "counts": self.counts}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        for k in ("centroids", "genomes", "fitness", "descriptors", "low", "high"):
            v = np.asarray(state[k])
            if v.shape != getattr(self, k).shape:
                raise ValueError(f"archive state {k!r} has shape {v.shape}, expected {getattr(self, k).shape}")
            setattr(self, k, v.astype(getattr(self, k).dtype).copy())
        if "counts" in state:  # checkpoints before re-evaluation existed: one evaluation per elite
            counts = np.asarray(state["counts"], dtype=np.int64)
            if counts.shape != self.counts.shape:
                raise ValueError(f"archive state 'counts' has shape {counts.shape}, expected {self.counts.shape}")
            self.counts = counts.copy()
        else:
            self.counts = self.filled.astype(np.int64)
