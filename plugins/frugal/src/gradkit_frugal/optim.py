"""FRUGAL: full-rank updates with gradient splitting (Zmushko, Beznosikov, Takáč, Horváth; arXiv 2411.07837).

For every *projectable* weight ``W`` (a 2-D matrix inside the network's blocks) with gradient ``G``:

1. every ``update_gap`` steps a projector ``P`` is chosen: whole weight blocks (``block``, BAdam-like), a set
   of columns or rows (``column``), random coordinates (``randk``) or the top-``r`` singular basis of ``G``
   (``svd``, GaLore-like).  ``density`` (ρ) is the share of the matrix that is state-full.
2. ``G_full = P(G)`` (low-dimensional coordinates), ``G_free = G − P⁻¹(G_full)``.
3. state-full part: Adam on ``G_full`` — ``m ← β₁m + (1−β₁)G_full``, ``v ← β₂v + (1−β₂)G_full²``,
   ``U_full = m̂ / (√v̂ + ε)`` with bias correction.
4. state-free part: ``U_free = sign(G_free)`` (``sign_sgd``), ``G_free`` (``sgd``) or ``0`` (``none``, which
   recovers GaLore / BAdam).
5. ``W ← W(1 − η·wd) − η·s_p·P⁻¹(U_full) − η·s_p·s_f·U_free`` with ``s_p = proj_lr_scale`` and
   ``s_f = state_free_lr_scale`` (the official code scales the state-free lr by both).

Every other parameter (embeddings, norms, biases, the output head) is trained with full AdamW.  The
weight decay is applied first, as ``torch.optim.AdamW`` does, so that FRUGAL with ``density=1`` (block,
column or randk projection) is exactly AdamW.

At a subspace switch the state-full moments are reset (``reset_state=True``, the default) or carried over
where the new subspace overlaps the old one (``reset_state=False``: surviving blocks / columns / coordinates
keep their moments; for ``svd`` the moments are kept as they are, as GaLore does).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn
from torch.optim import Optimizer

from gradkit_support.baselines import SignSGD  # noqa: F401  (shared baseline, re-exported)

PROJ_TYPES = ("block", "column", "randk", "svd")
STATE_FREE_RULES = ("sign_sgd", "sgd", "none")
BLOCK_ORDERS = ("random", "descending", "ascending")
PROJ_SIDES = ("auto", "right", "left")

#: module names (last dotted component) treated as output heads by :func:`frugal_param_groups`
HEAD_NAMES = ("head", "lm_head", "output", "logits", "classifier", "embed_out", "score")


def _n_selected(density: float, size: int) -> int:
    """How many of ``size`` units a density ``ρ`` selects: 0 for ρ = 0, at least 1 otherwise."""
    if density <= 0 or size == 0:
        return 0
    return min(size, max(1, int(round(density * size))))


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_hparams(h: Dict[str, Any]) -> None:
    lr = h["lr"]
    if not _finite_number(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    betas = h["betas"]
    if len(betas) != 2 or not all(_finite_number(float(b)) and 0.0 <= float(b) < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not _finite_number(h["eps"]) or not h["eps"] > 0:
        raise ValueError(f"eps must be a finite number > 0, got {h['eps']!r}")
    if not _finite_number(h["weight_decay"]) or h["weight_decay"] < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {h['weight_decay']!r}")
    if not _finite_number(h["density"]) or not 0.0 <= float(h["density"]) <= 1.0:
        raise ValueError(f"density must be a number in [0, 1] (share of each projectable matrix, or of the blocks, "
                         f"that is state-full), got {h['density']!r}")
    if not isinstance(h["update_gap"], int) or isinstance(h["update_gap"], bool) or h["update_gap"] < 1:
        raise ValueError(f"update_gap must be a positive int (steps between subspace refreshes), got {h['update_gap']!r}")
    for key, allowed in (("proj_type", PROJ_TYPES), ("state_free", STATE_FREE_RULES),
                         ("block_order", BLOCK_ORDERS), ("proj_side", PROJ_SIDES)):
        if h[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {h[key]!r}")
    for key in ("state_free_lr_scale", "proj_lr_scale"):
        if not _finite_number(h[key]) or h[key] < 0:
            raise ValueError(f"{key} must be a finite number >= 0, got {h[key]!r}")
    if h["projectable"] not in (None, True, False):
        raise ValueError(f"projectable must be None (auto: 2-D params), True or False, got {h['projectable']!r}")


def _right_side(side: str, shape) -> bool:
    """Whether the projection acts on the columns (``right``: ``G Q``) — ``auto`` picks the smaller dimension
    (right when rows >= columns), as the official code's ``proj_side='std'`` does."""
    if side == "auto":
        return shape[0] >= shape[1]
    return side == "right"


def _n_blocks(density: float, n_blocks: int) -> int:
    """Number of state-full blocks: ``round(ρ·L)`` (Python rounding), as the official BlockOptimizer."""
    return min(n_blocks, int(round(density * n_blocks)))


def _adam_direction(st: Dict[str, Any], g: torch.Tensor, beta1: float, beta2: float, eps: float) -> torch.Tensor:
    """One Adam moment update on ``g`` (in place in ``st``); returns ``m̂ / (√v̂ + ε)``."""
    st["step"] += 1
    t = st["step"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bc1 = 1 - beta1 ** t
    bc2_sqrt = math.sqrt(1 - beta2 ** t)
    denom = v.sqrt().div_(bc2_sqrt).add_(eps)
    return denom.reciprocal_().mul_(m).div_(bc1)


def _free_direction(g_free: torch.Tensor, rule: str, scale: float = 1.0, fresh: bool = False) -> Optional[torch.Tensor]:
    """``scale · U_free`` (a new tensor unless ``fresh`` says ``g_free`` may be overwritten); ``None`` for 'none'."""
    if rule == "sign_sgd":
        out = torch.sign(g_free, out=g_free) if fresh else torch.sign(g_free)
    elif rule == "sgd":
        out = g_free if fresh else g_free.clone()
    else:
        return None
    return out.mul_(scale) if scale != 1.0 else out


class FRUGAL(Optimizer):
    """FRUGAL optimizer (state-full AdamW in a ρ-dense subspace + state-free signSGD/SGD on the rest).

    Args:
        params: parameters or param groups.  A group's ``projectable`` key says whether its parameters are
            split (``True``, 2-D only), always full AdamW (``False``) or decided per tensor (``None``, the
            default: 2-D tensors are projectable).  Build the groups with :func:`frugal_param_groups` to keep
            embeddings, norms and the output head on AdamW as the paper does.
        lr, betas, eps, weight_decay: AdamW hyperparameters (decoupled weight decay).
        density: ρ, share of every projectable matrix (or of the blocks, for ``block``) that is state-full.
        update_gap: T, steps between subspace refreshes.
        proj_type: ``block`` | ``column`` | ``randk`` | ``svd``.
        proj_side: ``auto`` (default: ``right`` when rows >= columns, else ``left``, so the projected side is the
            smaller one, as the official code's ``std``), ``right`` (columns / right singular vectors) or ``left``
            (rows / left singular vectors).  Used by ``column`` and ``svd``.
        state_free: ``sign_sgd`` | ``sgd`` | ``none`` — the rule on the complement of the subspace.
        state_free_lr_scale, proj_lr_scale: lr multipliers: the state-full part runs at ``lr·proj_lr_scale``, the
            state-free part at ``lr·proj_lr_scale·state_free_lr_scale`` (the official code's convention).
        block_order: how ``block`` projection picks its ``round(ρ·L)`` state-full blocks among the group's ``L``
            projectable matrices: ``random`` (default: uniformly, a fresh draw at every refresh), ``descending``
            (BAdam: last block first, cycling) or ``ascending``.
        reset_state: reset the state-full moments at a subspace switch (default) or carry over the overlap.
        seed: seed of the optimizer's own generator that draws subspaces (saved in ``state_dict``), so every
            data-parallel replica picks the same subspace.
        check_finite: raise on NaN/inf gradients (one reduction per parameter per step).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, density: float = 0.25, update_gap: int = 200, proj_type: str = "block",
                 proj_side: str = "auto", state_free: str = "sign_sgd", state_free_lr_scale: float = 1.0,
                 proj_lr_scale: float = 1.0, block_order: str = "random", reset_state: bool = True,
                 projectable: Optional[bool] = None, seed: int = 0, check_finite: bool = True):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, density=density,
                        update_gap=update_gap, proj_type=proj_type, proj_side=proj_side, state_free=state_free,
                        state_free_lr_scale=state_free_lr_scale, proj_lr_scale=proj_lr_scale,
                        block_order=block_order, reset_state=bool(reset_state), projectable=projectable)
        _check_hparams(defaults)
        self._seed = int(seed)
        self.check_finite = bool(check_finite)
        self._gx: List[Dict[str, Any]] = []
        self._idx_cache: Dict[torch.Tensor, Any] = {}
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ groups / bookkeeping
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_hparams(group)
        gi = len(self.param_groups) - 1
        for i, p in enumerate(group["params"]):
            if p.is_complex():
                raise TypeError(f"FRUGAL does not support complex parameters: {self._pname(gi, i)} has dtype "
                                f"{p.dtype}; expected a real floating-point tensor (view it with torch.view_as_real)")
            if not p.is_floating_point():
                raise TypeError(f"FRUGAL needs floating-point parameters: {self._pname(gi, i)} has dtype {p.dtype}")
            if group["projectable"] is True and p.dim() != 2:
                raise ValueError(f"projectable parameters must be 2-D matrices; {self._pname(gi, i)} has shape "
                                 f"{tuple(p.shape)} (put it in a group with projectable=False)")

    def _pname(self, gi: int, i: int) -> str:
        group = self.param_groups[gi]
        names = group.get("param_names")
        shape = tuple(group["params"][i].shape)
        if names is not None:
            return f"parameter {names[i]!r} (shape {shape})"
        return f"param_groups[{gi}]['params'][{i}] (shape {shape})"

    def _group_extra(self, gi: int) -> Dict[str, Any]:
        while len(self._gx) <= gi:
            g = torch.Generator()
            g.manual_seed(self._seed + 1_000_003 * len(self._gx))
            self._gx.append({"k": 0, "active": None, "cursor": 0, "gen": g})
        return self._gx[gi]

    def _is_projectable(self, group: Dict[str, Any], p: torch.Tensor) -> bool:
        flag = group["projectable"]
        return p.dim() == 2 if flag is None else bool(flag)

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd["frugal"] = [
            {"k": gx["k"], "active": None if gx["active"] is None else sorted(gx["active"]),
             "cursor": gx["cursor"], "rng": gx["gen"].get_state()}
            for gx in self._gx
        ]
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("frugal", None)
        super().load_state_dict(state_dict)
        for st in self.state.values():  # torch casts every state tensor to the parameter's dtype
            if isinstance(st.get("cols"), torch.Tensor):
                st["cols"] = st["cols"].long()
        self._gx = []
        for gi, e in enumerate(extra or []):
            gx = self._group_extra(gi)
            gx["k"], gx["cursor"] = int(e["k"]), int(e["cursor"])
            gx["active"] = None if e["active"] is None else set(int(i) for i in e["active"])
            gx["gen"].set_state(e["rng"])

    def state_bytes(self, params: Optional[Iterable[torch.Tensor]] = None) -> int:
        """Bytes of the per-parameter state tensors (optionally only for ``params``)."""
        keys = None if params is None else {id(p) for p in params}
        total = 0
        for p, st in self.state.items():
            if keys is not None and id(p) not in keys:
                continue
            for v in st.values():
                if isinstance(v, torch.Tensor):
                    total += v.numel() * v.element_size()
            hit = self._idx_cache.get(p)
            if hit is not None:  # randk's cached coordinates
                total += hit[1].numel() * hit[1].element_size()
        return total

    # ------------------------------------------------------------------ step
    def _validate(self, gi: int, i: int, p: torch.Tensor) -> None:
        g = p.grad
        if g.is_sparse:
            raise TypeError(f"FRUGAL does not support sparse gradients: {self._pname(gi, i)} has a sparse grad; "
                            "expected a dense gradient (e.g. nn.Embedding(..., sparse=False))")
        if g.is_complex():
            raise TypeError(f"FRUGAL does not support complex gradients ({self._pname(gi, i)})")
        if g.shape != p.shape:
            raise ValueError(f"gradient of {self._pname(gi, i)} has shape {tuple(g.shape)}, expected {tuple(p.shape)}")
        # the sum is finite iff every entry is (short of a float overflow, re-checked entry-wise): one pass, no
        # gradient-sized temporary
        if self.check_finite and not torch.isfinite(g.sum()) and not torch.isfinite(g).all():
            raise ValueError(f"non-finite gradient (nan/inf) in {self._pname(gi, i)}; expected finite values "
                             "(check the loss scale or clip/skip this step)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # validate every gradient before changing anything
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    self._validate(gi, i, p)
        for gi, group in enumerate(self.param_groups):
            with_grad = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not with_grad:
                continue
            gx = self._group_extra(gi)
            k, T = gx["k"], group["update_gap"]
            # a refresh is due at the first step and every T steps; at density 1 the subspace is everything
            # and never changes, so only the first "refresh" happens
            refresh = k == 0 or (k % T == 0 and group["density"] < 1.0)
            proj_idx = [i for i, p in enumerate(group["params"]) if self._is_projectable(group, p)]
            proj_set = set(proj_idx)
            if group["proj_type"] == "block" and (refresh or gx["active"] is None):
                self._select_blocks(group, gx, proj_idx, first=gx["active"] is None)
            for i in with_grad:
                p = group["params"][i]
                if i in proj_set:
                    self._projected_update(group, gx, i, p, refresh)
                else:
                    self._adamw_update(group, p)
            gx["k"] = k + 1
        return loss

    # ------------------------------------------------------------------ full AdamW
    def _adamw_update(self, group: Dict[str, Any], p: torch.Tensor) -> None:
        st = self.state[p]
        if "exp_avg" not in st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        u = _adam_direction(st, p.grad, beta1, beta2, group["eps"])
        if group["weight_decay"]:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(u, alpha=-lr)

    # ------------------------------------------------------------------ subspaces
    def _select_blocks(self, group, gx, proj_idx: List[int], first: bool) -> None:
        # round(ρ·L) of the group's L projectable blocks are state-full, as in the official BlockOptimizer:
        # ``random`` draws them uniformly (every block has the same chance, whatever its size), ``ascending`` /
        # ``descending`` take the next round(ρ·L) blocks of a cycle (BAdam's order is descending)
        L = len(proj_idx)
        n = _n_blocks(group["density"], L)
        order = group["block_order"]
        if n == 0:
            chosen: List[int] = []
        elif order == "random":
            chosen = [proj_idx[j] for j in torch.randperm(L, generator=gx["gen"])[:n].tolist()]
        else:
            start = gx["cursor"]
            if order == "ascending":
                chosen = [proj_idx[(start + t) % L] for t in range(n)]
            else:
                chosen = [proj_idx[(L - 1 - (start + t)) % L] for t in range(n)]
            gx["cursor"] = (start + n) % L
        new_active = set(chosen)
        old_active = gx["active"] or set()
        for i in proj_idx:
            p = group["params"][i]
            st = self.state.get(p)
            if not st:
                continue
            leaving = i not in new_active
            if leaving or (group["reset_state"] and not first):
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    st.pop(key, None)
        gx["active"] = new_active
        del old_active

    def _new_moments(self, st: Dict[str, Any], like: torch.Tensor, shape) -> None:
        st["step"] = 0
        st["exp_avg"] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        st["exp_avg_sq"] = torch.zeros(shape, dtype=like.dtype, device=like.device)

    def _randk_cached(self, p: torch.Tensor, st: Dict[str, Any]) -> torch.Tensor:
        """The coordinates of ``p``'s current randk subspace, regenerated from the seed in its state and kept in
        a transient cache (not state: it is rebuilt after ``load_state_dict``; counted by :meth:`state_bytes`)."""
        hit = self._idx_cache.get(p)
        if hit is None or hit[0] != st["seed"]:
            idx = self._randk_indices(p.numel(), st["exp_avg"].numel(), st["seed"], p.device)
            hit = (st["seed"], idx)
            self._idx_cache[p] = hit
        return hit[1]

    @staticmethod
    def _randk_indices(numel: int, k: int, seed: int, device) -> torch.Tensor:
        g = torch.Generator()
        g.manual_seed(seed)
        idx = torch.randperm(numel, generator=g)[:k]
        return (idx.int() if numel < 2**31 else idx).to(device)

    def _refresh_subspace(self, group, gx, p: torch.Tensor, st: Dict[str, Any], first: bool) -> None:
        """Choose a new projector for ``p`` and reset or carry over its moments."""
        kind, rho = group["proj_type"], group["density"]
        keep = not group["reset_state"] and not first
        G = p.grad
        if kind == "column":
            dim = 1 if _right_side(group["proj_side"], p.shape) else 0
            d = p.shape[dim]
            k = _n_selected(rho, d)
            cols = torch.randperm(d, generator=gx["gen"])[:k].sort().values.to(p.device)
            old_cols = st.get("cols")
            shape = (p.shape[0], k) if dim == 1 else (k, p.shape[1])
            if keep and old_cols is not None and "exp_avg" in st and k:
                pos = torch.full((d,), -1, dtype=torch.long, device=p.device)
                pos[old_cols] = torch.arange(len(old_cols), device=p.device)
                src = pos[cols]
                hit = src >= 0
                m_old, v_old = st["exp_avg"], st["exp_avg_sq"]
                step = st["step"]
                self._new_moments(st, p, shape)
                st["step"] = step
                st["exp_avg"].index_copy_(dim, hit.nonzero().flatten(), m_old.index_select(dim, src[hit]))
                st["exp_avg_sq"].index_copy_(dim, hit.nonzero().flatten(), v_old.index_select(dim, src[hit]))
            elif k:
                self._new_moments(st, p, shape)
            else:
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    st.pop(key, None)
            st["cols"] = cols
        elif kind == "randk":
            n = p.numel()
            k = _n_selected(rho, n)
            seed = int(torch.randint(0, 2**62, (1,), generator=gx["gen"]))
            if keep and "seed" in st and "exp_avg" in st and k:
                old_idx = self._randk_indices(n, k, st["seed"], p.device)
                idx = self._randk_indices(n, k, seed, p.device)
                pos = torch.full((n,), -1, dtype=torch.long, device=p.device)
                pos[old_idx] = torch.arange(k, device=p.device)
                src = pos[idx]
                hit = src >= 0
                m_old, v_old, step = st["exp_avg"], st["exp_avg_sq"], st["step"]
                self._new_moments(st, p, (k,))
                st["step"] = step
                st["exp_avg"][hit] = m_old[src[hit]]
                st["exp_avg_sq"][hit] = v_old[src[hit]]
            elif k:
                self._new_moments(st, p, (k,))
            else:
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    st.pop(key, None)
            st["seed"] = seed  # the state keeps only the seed; the indices are regenerated (and cached) from it
        elif kind == "svd":
            right = _right_side(group["proj_side"], p.shape)
            d = p.shape[1] if right else p.shape[0]
            r = min(_n_selected(rho, d), min(p.shape))
            if r == 0:
                for key in ("exp_avg", "exp_avg_sq", "step", "Q"):
                    st.pop(key, None)
                st["rank"] = 0
                return
            U, _, Vh = torch.linalg.svd(G.float(), full_matrices=False)
            Q = (Vh[:r].T if right else U[:, :r]).to(p.dtype).contiguous()
            shape = (p.shape[0], r) if right else (r, p.shape[1])
            st["Q"] = Q
            st["rank"] = r
            if not (keep and "exp_avg" in st and tuple(st["exp_avg"].shape) == shape):
                self._new_moments(st, p, shape)
        else:  # pragma: no cover - guarded by _check_hparams
            raise ValueError(kind)

    def _projected_update(self, group, gx, i: int, p: torch.Tensor, refresh: bool) -> None:
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps, rule = group["eps"], group["state_free"]
        # the state-free part runs at lr·proj_lr_scale·state_free_lr_scale, as in the official code (its
        # ``inactive_lr = lr · proj_params_lr_scale · inactive_lr_scale``)
        ps = group["proj_lr_scale"]
        fs = ps * group["state_free_lr_scale"]
        G = p.grad
        kind = group["proj_type"]
        st = self.state[p]
        if kind == "block":
            if i in gx["active"]:
                if "exp_avg" not in st:
                    self._new_moments(st, p, p.shape)
                upd = _adam_direction(st, G, beta1, beta2, eps).mul_(ps)
            else:
                upd = _free_direction(G, rule, fs)
        else:
            marker = {"column": "cols", "randk": "seed", "svd": "rank"}[kind]
            if refresh or marker not in st:
                self._refresh_subspace(group, gx, p, st, first=marker not in st)
            if kind == "column":
                dim = 1 if _right_side(group["proj_side"], p.shape) else 0
                cols = st["cols"]
                free = _free_direction(G, rule, fs)
                upd = torch.zeros_like(G) if free is None else free
                if len(cols):
                    u = _adam_direction(st, G.index_select(dim, cols), beta1, beta2, eps)
                    upd.index_copy_(dim, cols, u.mul_(ps))
            elif kind == "randk":
                free = _free_direction(G, rule, fs)
                upd = torch.zeros_like(G) if free is None else free
                if "exp_avg" in st:
                    idx = self._randk_cached(p, st)
                    u = _adam_direction(st, G.reshape(-1)[idx], beta1, beta2, eps)
                    upd.view(-1)[idx] = u.mul_(ps)
            else:  # svd
                if st["rank"] == 0:
                    upd = _free_direction(G, rule, fs)
                else:
                    Q = st["Q"]
                    right = _right_side(group["proj_side"], p.shape)
                    low = G @ Q if right else Q.T @ G
                    back = low @ Q.T if right else Q @ low
                    u = _adam_direction(st, low, beta1, beta2, eps)
                    upd = (u @ Q.T if right else Q @ u).mul_(ps)
                    free = _free_direction(G - back, rule, fs, fresh=True)
                    if free is not None:
                        upd.add_(free)
        if group["weight_decay"]:
            p.mul_(1 - lr * group["weight_decay"])
        if upd is not None:
            p.add_(upd, alpha=-lr)


# ---------------------------------------------------------------------- baselines
def galore_style(params: Iterable, lr: float = 1e-3, density: float = 0.25, update_gap: int = 200,
                 proj_side: str = "auto", **kwargs) -> FRUGAL:
    """GaLore-style baseline: AdamW in the top-``r`` SVD subspace of each projectable matrix
    (``r = ρ·d``), nothing outside it — FRUGAL with ``proj_type='svd'`` and ``state_free='none'``.
    ``proj_lr_scale`` plays the role of GaLore's ``scale`` α."""
    for key in ("proj_type", "state_free"):
        if key in kwargs:
            raise TypeError(f"galore_style fixes {key}; use FRUGAL directly to change it")
    return FRUGAL(params, lr=lr, density=density, update_gap=update_gap, proj_side=proj_side, proj_type="svd",
                  state_free="none", **kwargs)


def badam_style(params: Iterable, lr: float = 1e-3, density: float = 0.25, update_gap: int = 200,
                block_order: str = "descending", **kwargs) -> FRUGAL:
    """BAdam-style baseline: AdamW on a rotating ρ share of the projectable weight blocks, the other blocks
    frozen — FRUGAL with ``proj_type='block'`` and ``state_free='none'`` (state reset at every switch)."""
    for key in ("proj_type", "state_free"):
        if key in kwargs:
            raise TypeError(f"badam_style fixes {key}; use FRUGAL directly to change it")
    return FRUGAL(params, lr=lr, density=density, update_gap=update_gap, block_order=block_order, proj_type="block",
                  state_free="none", **kwargs)


# ---------------------------------------------------------------------- param groups
def frugal_param_groups(model: nn.Module, exclude: Sequence[str] = HEAD_NAMES, **group_kwargs) -> List[Dict[str, Any]]:
    """Param groups for :class:`FRUGAL` from a model, with parameter names.

    Projectable (``projectable=True``): the weights of ``nn.Linear`` layers (and the packed q/k/v
    ``in_proj_weight`` of ``nn.MultiheadAttention``) — the matrices inside the network's blocks.
    Not projectable (``projectable=False``, full AdamW): embeddings (and any Linear weight tied to one, e.g. a
    tied LM head), Linear layers whose own name is an output head (``exclude``: ``head``, ``lm_head``, …),
    norms, biases and everything else.  Parameters with ``requires_grad=False`` are skipped.
    ``group_kwargs`` (e.g. ``weight_decay``) are set on both groups.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"frugal_param_groups expects an nn.Module, got {type(model).__name__}")
    excluded = set(exclude)
    embed_ids = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            embed_ids.add(id(mod.weight))
    proj_ids = set()
    for name, mod in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in excluded:
            continue
        cands = []
        if isinstance(mod, nn.Linear):
            cands.append(mod.weight)
        if isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
            cands.append(mod.in_proj_weight)
        for w in cands:
            if w is not None and w.dim() == 2 and id(w) not in embed_ids:
                proj_ids.add(id(w))
    proj, rest, seen = [], [], set()
    for name, p in model.named_parameters():  # named_parameters dedupes tied weights
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (proj if id(p) in proj_ids else rest).append((name, p))
    groups = []
    if proj:
        groups.append({"params": proj, "projectable": True, **group_kwargs})
    if rest:
        groups.append({"params": rest, "projectable": False, **group_kwargs})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups
