"""Boolean function classes as seeded samplers of in-context prompts (Bhattamishra et al., 2023).

Inputs are ``x in {-1, +1}^n``, labels ``y in {-1, +1}``.  Every task draws ``batch_size`` target
functions at construction (one per prompt) from its own seeded ``numpy.random.Generator``;
``sample_xs(n_points)`` draws the prompt inputs (with the class's forced positives / negatives and,
for teaching variants, the teaching prefix), ``evaluate(xs)`` labels them, ``sample(n_points)`` does
both.  Definitions follow the paper's code (``satwik77/incontext-bool``, ``src/bool_tasks.py``):

* conjunction: ``w in {0, +1, -1}^n`` with probabilities (0.7, 0.15, 0.15), ``k = ||w||_1 - 1``,
  ``y = sign(x.w - k)`` (true iff every literal holds); each point is forced positive (its
  literals set true) with probability 0.3.
* disjunction: same ``w``; ``y = sign(x.w + k)`` (false iff every literal is false); each point is
  forced negative with probability 0.3.  Sparse disjunction: exactly ``k = 4`` positive literals.
* parity: a uniformly random subset ``S``; ``y = 2 * (sum_{i in S} (x_i + 1) / 2 mod 2) - 1``.
  Sparse parity: ``|S| = k = 2``.
* majority: ``w in {0, 1}^n`` (P(1) = 0.3), ``y = sign(x.w - 0.5)``.
* integer halfspace: ``w in {-3..3}^n`` uniform, ``y = sign(x.w - 0.5)``.
* DNF / CNF: three terms (clauses) of the conjunction (disjunction) kind with ``w`` probabilities
  (0.8, 0.1, 0.1); ``y`` = OR of terms (AND of clauses); per prompt one term (clause) is chosen and
  each point is forced to satisfy it (falsify it) with probability 0.35 (0.3).
* mono-conjunction (control, not in the paper's list): teach-conjunction's class without the prefix.
* teach-conjunction: monotone conjunction (``w in {0, 1}^n``, P(1) = 0.3), forced positives 0.4,
  prompt starts with a teaching sequence of ``k + 1`` points (``k = |w|``): the positive point with
  the literals on and everything else off, then one negative per literal with that literal off.
* teach-biconjunction: the conjunction class (literals of both signs), forced positives 0.4, prompt
  starts with ``k + 2`` points: two positives (literals true, irrelevant variables all -1, then all
  +1) and one negative per literal with that literal falsified.
"""

from __future__ import annotations

import abc

import math
import numbers
from typing import Dict, Optional, Type

import numpy as np
import torch

__all__ = ["Task", "TASKS", "make_task", "check_xs"]


def _check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _check_prob(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {p!r}")
    p = float(p)
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a finite probability in [0, 1], got {p}")
    return p


def check_xs(xs, n_dims: Optional[int] = None, batch_size: Optional[int] = None) -> torch.Tensor:
    """Validate a prompt input batch: a float tensor ``(B, m, n)`` with entries in {-1, +1}."""
    if not isinstance(xs, torch.Tensor):
        raise TypeError(f"xs must be a torch.Tensor of shape (batch, points, n_dims), got {type(xs).__name__}")
    if xs.dim() != 3:
        raise ValueError(f"xs must have shape (batch, points, n_dims), got shape {tuple(xs.shape)}")
    if xs.shape[0] == 0 or xs.shape[1] == 0:
        raise ValueError(f"xs is empty (shape {tuple(xs.shape)}); need at least one prompt and one point")
    if n_dims is not None and xs.shape[2] != n_dims:
        raise ValueError(f"xs has {xs.shape[2]} input dimensions, expected n_dims = {n_dims}")
    if batch_size is not None and xs.shape[0] != batch_size:
        raise ValueError(f"xs has {xs.shape[0]} prompts, this task holds {batch_size} target functions")
    if not torch.is_floating_point(xs):
        raise TypeError(f"xs must be a floating tensor, got dtype {xs.dtype}")
    if not torch.isfinite(xs).all():
        raise ValueError("xs contains NaN or inf; inputs must be in {-1, +1}")
    if not ((xs == 1) | (xs == -1)).all():
        raise ValueError("xs entries must be exactly -1 or +1 (Boolean inputs)")
    return xs


class Task(abc.ABC):
    """Base class: ``batch_size`` seeded target functions on ``{-1, +1}^n_dims``."""

    name = "task"
    #: tasks whose prompts start with a teaching sequence
    teaching = False

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0):
        self.n_dims = _check_int("n_dims", n_dims, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.rng = np.random.default_rng(self.seed)

    # -- helpers
    def _uniform_xs(self, n_points: int) -> np.ndarray:
        return self.rng.integers(0, 2, size=(self.batch_size, n_points, self.n_dims)).astype(np.float32) * 2 - 1

    def _force(self, xs: np.ndarray, w: np.ndarray, p: float, sign: float) -> np.ndarray:
        """With probability ``p`` per point set every literal of ``w`` (B, n) to ``sign * w``."""
        if p <= 0:
            return xs
        force = self.rng.random(size=xs.shape[:2]) < p  # (B, m)
        sel = force[:, :, None] & (w != 0)[:, None, :]
        return np.where(sel, sign * np.broadcast_to(w[:, None, :], xs.shape), xs).astype(np.float32)

    def _check_points(self, n_points) -> int:
        return _check_int("n_points", n_points, 1)

    # -- API
    def sample_xs(self, n_points: int) -> torch.Tensor:
        n_points = self._check_points(n_points)
        return torch.from_numpy(self._uniform_xs(n_points))

    @abc.abstractmethod
    def evaluate(self, xs: torch.Tensor) -> torch.Tensor:
        """Labels of ``xs``; every task class defines it."""

    def sample(self, n_points: int):
        xs = self.sample_xs(n_points)
        return xs, self.evaluate(xs)


def _lin(xs: torch.Tensor, w: np.ndarray) -> torch.Tensor:
    return torch.einsum("bmn,bn->bm", xs.double(), torch.from_numpy(w).double())


def _sign(v: torch.Tensor) -> torch.Tensor:
    # the class definitions never produce a 0 (checked by the tests); keep the float dtype
    return torch.sign(v).float()


class Conjunction(Task):
    name = "conjunction"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, p_forced: float = 0.3,
                 literal_probs=(0.7, 0.15, 0.15)):
        super().__init__(n_dims, batch_size, seed)
        self.p_forced = _check_prob("p_forced", p_forced)
        probs = [_check_prob("literal_probs entry", p) for p in literal_probs]
        if len(probs) != 3 or abs(sum(probs) - 1.0) > 1e-9:
            raise ValueError(f"literal_probs must be 3 probabilities (absent, +, -) summing to 1, got {literal_probs}")
        self.w = self.rng.choice([0.0, 1.0, -1.0], size=(self.batch_size, self.n_dims), p=probs).astype(np.float32)
        self.k = np.abs(self.w).sum(1) - 1

    def sample_xs(self, n_points):
        n_points = self._check_points(n_points)
        return torch.from_numpy(self._force(self._uniform_xs(n_points), self.w, self.p_forced, +1.0))

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        return _sign(_lin(xs, self.w) - torch.from_numpy(self.k).double()[:, None])


class Disjunction(Conjunction):
    name = "disjunction"

    def sample_xs(self, n_points):
        n_points = self._check_points(n_points)
        return torch.from_numpy(self._force(self._uniform_xs(n_points), self.w, self.p_forced, -1.0))

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        return _sign(_lin(xs, self.w) + torch.from_numpy(self.k).double()[:, None])


def _k_subsets(rng, batch_size: int, n_dims: int, k: int) -> np.ndarray:
    w = np.zeros((batch_size, n_dims), dtype=np.float32)
    for b in range(batch_size):
        w[b, rng.choice(n_dims, size=k, replace=False)] = 1.0
    return w


class SparseDisjunction(Disjunction):
    name = "sparse_disjunction"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, k: int = 4, p_forced: float = 0.3):
        Task.__init__(self, n_dims, batch_size, seed)
        self.p_forced = _check_prob("p_forced", p_forced)
        self.k_literals = _check_int("k", k, 1)
        if self.k_literals > self.n_dims:
            raise ValueError(f"k = {k} literals cannot exceed n_dims = {n_dims}")
        self.w = _k_subsets(self.rng, self.batch_size, self.n_dims, self.k_literals)
        self.k = np.abs(self.w).sum(1) - 1


class Parity(Task):
    name = "parity"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0):
        super().__init__(n_dims, batch_size, seed)
        # uniform over all 2^n subsets = each variable in S independently with probability 1/2
        self.w = self.rng.integers(0, 2, size=(self.batch_size, self.n_dims)).astype(np.float32)

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        bits = (xs.double() + 1) / 2
        s = torch.einsum("bmn,bn->bm", bits, torch.from_numpy(self.w).double())
        return (torch.remainder(s, 2) * 2 - 1).float()


class SparseParity(Parity):
    name = "sparse_parity"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, k: int = 2):
        Task.__init__(self, n_dims, batch_size, seed)
        self.k_literals = _check_int("k", k, 1)
        if self.k_literals > self.n_dims:
            raise ValueError(f"k = {k} relevant bits cannot exceed n_dims = {n_dims}")
        self.w = _k_subsets(self.rng, self.batch_size, self.n_dims, self.k_literals)


class Majority(Task):
    name = "majority"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, p_one: float = 0.3):
        super().__init__(n_dims, batch_size, seed)
        p = _check_prob("p_one", p_one)
        self.w = (self.rng.random(size=(self.batch_size, self.n_dims)) < p).astype(np.float32)

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        return _sign(_lin(xs, self.w) - 0.5)


class IntHalfspace(Task):
    name = "int_halfspace"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, bound: int = 3):
        super().__init__(n_dims, batch_size, seed)
        self.bound = _check_int("bound", bound, 1)
        self.w = self.rng.integers(-self.bound, self.bound + 1, size=(self.batch_size, self.n_dims)).astype(np.float32)

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        return _sign(_lin(xs, self.w) - 0.5)


class DNF(Task):
    """OR of ``n_terms`` conjunctions (the paper's 3-term DNF)."""

    name = "dnf"
    _force_sign = +1.0
    _p_forced_default = 0.35

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, n_terms: int = 3, p_forced: Optional[float] = None,
                 literal_probs=(0.8, 0.1, 0.1)):
        super().__init__(n_dims, batch_size, seed)
        self.n_terms = _check_int("n_terms", n_terms, 1)
        self.p_forced = _check_prob("p_forced", self._p_forced_default if p_forced is None else p_forced)
        probs = [_check_prob("literal_probs entry", p) for p in literal_probs]
        if len(probs) != 3 or abs(sum(probs) - 1.0) > 1e-9:
            raise ValueError(f"literal_probs must be 3 probabilities (absent, +, -) summing to 1, got {literal_probs}")
        self.w = self.rng.choice([0.0, 1.0, -1.0], size=(self.n_terms, self.batch_size, self.n_dims),
                                 p=probs).astype(np.float32)
        self.k = np.abs(self.w).sum(2) - 1  # (terms, B)

    def sample_xs(self, n_points):
        n_points = self._check_points(n_points)
        xs = self._uniform_xs(n_points)
        cid = self.rng.integers(0, self.n_terms, size=self.batch_size)
        w_sel = self.w[cid, np.arange(self.batch_size)]
        return torch.from_numpy(self._force(xs, w_sel, self.p_forced, self._force_sign))

    def _terms(self, xs):
        return [_lin(xs, self.w[t]) - torch.from_numpy(self.k[t]).double()[:, None] for t in range(self.n_terms)]

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        return _sign(torch.stack([torch.sign(v) for v in self._terms(xs)], 0).max(0).values)


class CNF(DNF):
    """AND of ``n_terms`` disjunctive clauses (the paper's 3-clause CNF)."""

    name = "cnf"
    _force_sign = -1.0
    _p_forced_default = 0.3

    def _terms(self, xs):
        return [_lin(xs, self.w[t]) + torch.from_numpy(self.k[t]).double()[:, None] for t in range(self.n_terms)]

    def evaluate(self, xs):
        xs = check_xs(xs, self.n_dims, self.batch_size)
        return _sign(torch.stack([torch.sign(v) for v in self._terms(xs)], 0).min(0).values)


class MonoConjunction(Conjunction):
    """Monotone conjunctions drawn like teach-conjunction's (P(literal) = 0.3, forced positives 0.4), with no
    teaching prefix: the control that separates the teaching sequence from the easier class."""

    name = "mono_conjunction"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, p_forced: float = 0.4, p_literal: float = 0.3):
        p = _check_prob("p_literal", p_literal)
        super().__init__(n_dims, batch_size, seed, p_forced=p_forced, literal_probs=(1.0 - p, p, 0.0))


class TeachConjunction(Conjunction):
    """Monotone conjunctions whose prompts start with a teaching sequence of ``k + 1`` points."""

    name = "teach_conjunction"
    teaching = True

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, p_forced: float = 0.4, p_literal: float = 0.3):
        p = _check_prob("p_literal", p_literal)
        super().__init__(n_dims, batch_size, seed, p_forced=p_forced, literal_probs=(1.0 - p, p, 0.0))

    @property
    def teach_len(self) -> np.ndarray:
        """Length of each prompt's teaching sequence: ``k + 1`` (k = number of literals)."""
        return (np.abs(self.w).sum(1) + 1).astype(int)

    def teaching_sequence(self, b: int) -> np.ndarray:
        w = self.w[b]
        lits = np.flatnonzero(w)
        base = np.where(w != 0, w, -1.0).astype(np.float32)  # literals true, the rest -1
        seq = [base]
        for i in lits:
            x = base.copy()
            x[i] = -w[i]
            seq.append(x)
        return np.stack(seq)

    def sample_xs(self, n_points):
        n_points = self._check_points(n_points)
        longest = int(self.teach_len.max())
        if n_points < longest:
            raise ValueError(f"n_points = {n_points} is shorter than the longest teaching sequence ({longest}); "
                             f"use n_points >= n_dims + {2 if isinstance(self, TeachBiConjunction) else 1}")
        xs = self._force(self._uniform_xs(n_points), self.w, self.p_forced, +1.0)
        for b in range(self.batch_size):
            seq = self.teaching_sequence(b)
            xs[b, : len(seq)] = seq
        return torch.from_numpy(xs)


class TeachBiConjunction(TeachConjunction):
    """Conjunctions with literals of both signs; teaching sequence of ``k + 2`` points."""

    name = "teach_biconjunction"

    def __init__(self, n_dims: int, batch_size: int, seed: int = 0, p_forced: float = 0.4):
        Conjunction.__init__(self, n_dims, batch_size, seed, p_forced=p_forced)

    @property
    def teach_len(self) -> np.ndarray:
        return (np.abs(self.w).sum(1) + 2).astype(int)

    def teaching_sequence(self, b: int) -> np.ndarray:
        w = self.w[b]
        lits = np.flatnonzero(w)
        lo = np.where(w != 0, w, -1.0).astype(np.float32)
        hi = np.where(w != 0, w, +1.0).astype(np.float32)
        seq = [lo, hi]
        for i in lits:
            x = lo.copy()
            x[i] = -w[i]
            seq.append(x)
        return np.stack(seq)


TASKS: Dict[str, Type[Task]] = {
    cls.name: cls
    for cls in (Conjunction, Disjunction, SparseDisjunction, Parity, SparseParity, Majority, IntHalfspace, DNF, CNF,
                TeachConjunction, TeachBiConjunction, MonoConjunction)
}


def make_task(name: str, n_dims: int, batch_size: int, seed: int = 0, **options) -> Task:
    """Build a task by name (see :data:`TASKS`); unknown names are a ValueError listing the known ones."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](n_dims, batch_size, seed, **options)
