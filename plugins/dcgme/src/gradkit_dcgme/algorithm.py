"""DCG-MAP-Elites (Faldor et al., GECCO 2023) and its baselines MAP-Elites and PGA-MAP-Elites.

One iteration (``QDAgent.step``):

1. **GA offspring** (iso+line-DD, Vassiliades & Mouret 2018): ``x' = x1 + σ_iso N(0, I) + σ_line N(0, 1)(x2 − x1)``
   with ``x1, x2`` uniform elites.
2. **PG offspring** (PGA-ME, DCG-ME): a parent uniform from the archive is copied and gets
   ``pg_steps`` Adam steps (lr ``policy_lr``) on ``−mean Q1(s, π(s) | d')`` over replay batches;
   DCG-ME conditions the critic on the parent's own normalised descriptor ``d' = d_parent``,
   PGA-ME uses an unconditioned critic (fitness-greedy) and also injects its TD3 actor.
3. Evaluate all offspring (episode return = fitness, descriptor from the trajectory), insert
   with MAP-Elites elitism per cell, store the transitions tagged ``(d_obs, d' = d_obs)``.
4. DCG-ME: roll out the descriptor-conditioned actor ``π_DC(s | d')`` for ``actor_episodes``
   episodes with ``d'`` drawn uniformly from the filled cells; store them with ``(d_obs, d')``.
   They train the critic only (not inserted; counted apart from the evaluations).
5. TD3 (``critic_steps`` steps; twin critics, target policy smoothing, delayed actor): DCG-ME
   scales rewards by the descriptor similarity ``S(d_obs, d') = exp(−‖d_obs − d'‖₂ / l)``, target
   ``y = S·r + γ (1 − done) min_i Q'_i(s', π'_DC(s' | d') + ε | d')``, and trains ``π_DC`` to
   maximise ``Q1(s, π_DC(s | d') | d')`` — the archive distilled into one policy.

Descriptors fed to networks are normalised to ``[−1, 1]`` with the env's descriptor bounds.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .archive import CVTArchive
from .evaluation import Evaluator, ParallelRollouts, resolve_env_id
from .networks import Actor, PolicyShape, TwinCritic, fold_descriptor, init_genomes, policy_forward

ALGORITHMS = ("dcg-me", "pga-me", "map-elites")


@dataclass
class QDConfig:
    """Hyperparameters; defaults are the GECCO paper's (``configs/algo/dcg_me_gecco.yaml``)."""

    n_cells: int = 1024
    n_init_cvt_samples: int = 50_000
    init_batch: int = 256
    ga_batch: int = 128
    pg_batch: int = 128
    actor_episodes: int = 64
    policy_hidden: Tuple[int, ...] = (128, 128)
    critic_hidden: Tuple[int, ...] = (256, 256)
    iso_sigma: float = 0.005
    line_sigma: float = 0.05
    critic_steps: int = 3000
    pg_steps: int = 150
    batch_size: int = 100
    replay_size: int = 1_000_000
    policy_lr: float = 5e-3
    critic_lr: float = 3e-4
    actor_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    lengthscale: float = 0.1
    reward_scaling: float = 1.0
    #: re-evaluate every elite every ``reeval_every`` iterations and keep running means (0: never).  For
    #: stochastic starts (``fixed_start=False`` tasks); with the default fixed start evaluations are exact.
    reeval_every: int = 0

    def __post_init__(self):
        self.policy_hidden = tuple(int(h) for h in self.policy_hidden)
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)
        for name in ("n_cells", "n_init_cvt_samples", "init_batch", "batch_size", "replay_size", "policy_delay"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("ga_batch", "pg_batch", "actor_episodes", "critic_steps", "pg_steps", "reeval_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.lengthscale <= 0:
            raise ValueError(f"lengthscale must be positive, got {self.lengthscale}")


def similarity(d_obs: torch.Tensor, d_target: torch.Tensor, lengthscale: float) -> torch.Tensor:
    """``S(d, d') = exp(−‖d − d'‖₂ / l)`` on normalised descriptors (rows)."""
    return torch.exp(-torch.linalg.vector_norm(d_obs - d_target, dim=-1) / lengthscale)


def iso_line(x1: np.ndarray, x2: np.ndarray, iso_sigma: float, line_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Iso+line-DD variation: ``x1 + σ_iso N(0, I) + σ_line N(0, 1) (x2 − x1)`` (one line scalar per child)."""
    iso = rng.standard_normal(x1.shape) * iso_sigma
    line = rng.standard_normal((x1.shape[0], 1)) * line_sigma
    return (x1 + iso + line * (x2 - x1)).astype(np.float32)


class ReplayBuffer:
    """FIFO buffer of transitions with their episode's normalised observed and target descriptors."""

    KEYS = ("obs", "action", "reward", "next_obs", "done", "desc", "desc_target")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, desc_dim: int):
        self.capacity = int(capacity)
        dims = {"obs": obs_dim, "action": act_dim, "reward": 0, "next_obs": obs_dim, "done": 0,
                "desc": desc_dim, "desc_target": desc_dim}
        self.data = {k: np.zeros((self.capacity, d) if d else self.capacity, dtype=np.float32) for k, d in dims.items()}
        self.pos = 0
        self.size = 0

    def add(self, **batch: np.ndarray) -> None:
        n = len(batch["reward"])
        if n > self.capacity:
            batch = {k: v[-self.capacity:] for k, v in batch.items()}
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        for k in self.KEYS:
            self.data[k][idx] = batch[k]
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, shape: Tuple[int, ...], rng: np.random.Generator) -> Dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, size=shape)
        return {k: torch.from_numpy(v[idx]) for k, v in self.data.items()}

    def state_dict(self) -> Dict[str, Any]:
        n = self.size
        order = (np.arange(n) + (self.pos if n == self.capacity else 0)) % self.capacity  # oldest first
        return {**{k: v[order] for k, v in self.data.items()}, "size": n}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        n = int(state["size"])
        for k in self.KEYS:
            self.data[k][:] = 0
            self.data[k][:n] = np.asarray(state[k])
        self.size, self.pos = n, n % self.capacity


class QDAgent:
    """MAP-Elites family on a gradkit QD task.  ``algorithm`` is ``dcg-me``, ``pga-me`` or ``map-elites``.

    Agent API (stable-baselines3's signatures): ``learn(total_timesteps, callback=None)`` runs
    ``total_timesteps`` QD *iterations* (a QD agent's unit of training; each evaluates a batch of
    offspring); ``predict(obs, state=None, episode_start=None, deterministic=False, descriptor=None)``
    returns ``(action, state)``, acting with the distilled actor (DCG-ME, conditioned on
    ``descriptor``) or with the elite of the cell nearest ``descriptor`` (default: the fittest
    elite); the policies are deterministic, so ``deterministic`` changes nothing, and SB3's
    ``evaluate_policy`` works on the agent.  ``evaluate(n_episodes)`` returns the mean and std
    return of that policy; ``save`` / ``load`` use ``torch.save`` of tensors and plain
    containers, loaded with ``weights_only=True``; ``load`` never imports a module named in the
    file, and a broken file is a ``ValueError`` naming it and the problem.

    Rollouts: with ``jobs=1`` and no ``executor`` (the default) each generation's episodes run in
    this process.  ``jobs=N`` (and ``executor="local"``, ``"ray"`` with ``address`` for an existing
    cluster, ``"serial"``, or a :class:`gradkit_core.executors.Executor`) splits them into N chunks
    run in parallel by the executor's workers, which stay up until :meth:`close`; archives, replay
    buffers and every result are identical to the in-process ones for the same seed.
    """

    algorithm = "dcg-me"

    def __init__(self, env="gradkit/PointOmni-v0", seed: int = 0, env_kwargs: Optional[dict] = None, *,
                 jobs: int = 1, executor: Any = None, address: Optional[str] = None, **hp: Any):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        known = {f.name for f in fields(QDConfig)}
        unknown = set(hp) - known
        if unknown:
            raise TypeError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}")
        self.cfg = QDConfig(**hp)
        env_id, made_kwargs = resolve_env_id(env)
        self.env_id = env_id
        self.env_kwargs = {**made_kwargs, **(env_kwargs or {})}
        self.seed = int(seed)
        self.evaluator = Evaluator(env_id, self.env_kwargs)
        # each generation's rollouts: in this process (jobs=1, no executor), or in `jobs` chunks on an
        # executor (local processes, Ray) -- the same results either way (see ParallelRollouts)
        self.parallel = None
        if jobs != 1 or executor is not None:
            self.parallel = ParallelRollouts(env_id, self.env_kwargs, jobs, executor=executor, address=address)
        ev = self.evaluator
        self.desc_low, self.desc_high = ev.desc_low, ev.desc_high
        self.desc_dim = len(self.desc_low)
        self.shape = PolicyShape(ev.obs_dim, self.cfg.policy_hidden, ev.act_dim)
        self.rng = np.random.default_rng(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.archive = CVTArchive(self.cfg.n_cells, self.desc_low, self.desc_high, self.shape.n_params,
                                  n_init_samples=self.cfg.n_init_cvt_samples, seed=self.seed)
        self.uses_pg = self.algorithm in ("dcg-me", "pga-me")
        self.conditioned = self.algorithm == "dcg-me"
        dd = self.desc_dim if self.conditioned else 0
        c = self.cfg
        if self.uses_pg:
            self.buffer = ReplayBuffer(c.replay_size, ev.obs_dim, ev.act_dim, self.desc_dim)
            self.critic = TwinCritic(ev.obs_dim, ev.act_dim, c.critic_hidden, dd, self.gen)
            self.actor = Actor(ev.obs_dim, ev.act_dim, c.policy_hidden, dd, self.gen)
            self.critic_target = copy.deepcopy(self.critic)
            self.actor_target = copy.deepcopy(self.actor)
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, foreach=True)
            self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, foreach=True)
        self.iteration = 0
        self.td3_steps = 0
        self.n_evals = 0
        self.n_actor_episodes = 0
        self.n_reevals = 0
        self.history: List[Dict[str, float]] = []
        self._initialised = False

    # ------------------------------------------------------------------ helpers
    def normalize(self, desc: np.ndarray) -> np.ndarray:
        return 2.0 * (np.asarray(desc) - self.desc_low) / (self.desc_high - self.desc_low) - 1.0

    def _seed(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1))

    def _rollout(self, genomes: torch.Tensor, seed: int) -> Dict[str, np.ndarray]:
        if self.parallel is not None:
            return self.parallel.rollout(genomes, self.shape, seed)
        return self.evaluator.rollout(genomes, self.shape, seed)

    def _evaluate(self, genomes: torch.Tensor, desc_target: Optional[np.ndarray] = None, insert: bool = True):
        out = self._rollout(genomes, self._seed())
        added = None
        if insert:
            added = self.archive.add(genomes.numpy(), out["fitness"], out["descriptor"])
            self.n_evals += len(out["fitness"])
        if self.uses_pg:
            d_obs = self.normalize(out["descriptor"])
            d_tgt = d_obs if desc_target is None else desc_target
            ep = out["episode"]
            self.buffer.add(obs=out["obs"], action=out["action"], reward=out["reward"], next_obs=out["next_obs"],
                            done=out["terminated"].astype(np.float32), desc=d_obs[ep], desc_target=d_tgt[ep])
        return out, added

    def _initialise(self) -> None:
        g = init_genomes(self.shape, self.cfg.init_batch, self.gen)
        self._evaluate(g)
        self._initialised = True

    # ------------------------------------------------------------------ emitters
    def emit_ga(self, n: int) -> torch.Tensor:
        x1, _ = self.archive.sample(n, self.rng)
        x2, _ = self.archive.sample(n, self.rng)
        return torch.from_numpy(iso_line(x1, x2, self.cfg.iso_sigma, self.cfg.line_sigma, self.rng))

    def emit_pg(self, n: int) -> Tuple[torch.Tensor, np.ndarray]:
        """``n`` parents improved by ``pg_steps`` Adam steps on −Q1 (toward their own descriptor for DCG-ME)."""
        parents, parent_desc = self.archive.sample(n, self.rng)
        theta = torch.from_numpy(parents).clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=self.cfg.policy_lr)  # elementwise: one Adam per policy
        d_tgt = torch.as_tensor(self.normalize(parent_desc), dtype=torch.float32)
        for p in self.critic.parameters():
            p.requires_grad_(False)
        try:
            for _ in range(self.cfg.pg_steps):
                batch = self.buffer.sample((n, self.cfg.batch_size), self.rng)
                s = batch["obs"]
                a = policy_forward(theta, s, self.shape)
                cond = d_tgt[:, None, :].expand(n, self.cfg.batch_size, -1) if self.conditioned else None
                q = self.critic.first(s, a, cond)
                loss = -q.mean(dim=1).sum()  # sum over policies: each gets its own mean-Q gradient
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            for p in self.critic.parameters():
                p.requires_grad_(True)
        return theta.detach(), parent_desc

    # ------------------------------------------------------------------ TD3
    def td3_targets(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``y = r̃ + γ (1 − done) min_i Q'_i(s', clip(π'(s' | d') + ε) | d')`` with ``r̃ = S(d_obs, d') r`` for DCG-ME."""
        c = self.cfg
        a, r, s2, done = batch["action"], batch["reward"], batch["next_obs"], batch["done"]
        cond = batch["desc_target"] if self.conditioned else None
        if self.conditioned:
            r = similarity(batch["desc"], batch["desc_target"], c.lengthscale) * r
        r = r * c.reward_scaling
        with torch.no_grad():
            noise = (torch.randn(a.shape, generator=self.gen) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            a2 = (self.actor_target(s2, cond) + noise).clamp(-1.0, 1.0)
            q1_t, q2_t = self.critic_target(s2, a2, cond)
            return r + c.gamma * (1.0 - done) * torch.minimum(q1_t, q2_t)

    def td3_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        c = self.cfg
        s, a = batch["obs"], batch["action"]
        cond = batch["desc_target"] if self.conditioned else None
        y = self.td3_targets(batch)
        q1, q2 = self.critic(s, a, cond)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        _soft_update(self.critic_target, self.critic, c.tau)
        out = {"critic_loss": critic_loss.item()}
        if self.td3_steps % c.policy_delay == 0:
            for p in self.critic.parameters():
                p.requires_grad_(False)
            actor_loss = -self.critic.first(s, self.actor(s, cond), cond).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            for p in self.critic.parameters():
                p.requires_grad_(True)
            _soft_update(self.actor_target, self.actor, c.tau)
            out["actor_loss"] = actor_loss.item()
        self.td3_steps += 1
        return out

    def train_td3(self, steps: int) -> Dict[str, float]:
        last: Dict[str, float] = {}
        for _ in range(steps):
            last = {**last, **self.td3_step(self.buffer.sample((self.cfg.batch_size,), self.rng))}
        return last

    # ------------------------------------------------------------------ the loop
    def batch_sizes(self) -> Dict[str, int]:
        """Offspring per iteration: MAP-Elites spends the whole budget on GA."""
        c = self.cfg
        if self.algorithm == "map-elites":
            return {"ga": c.ga_batch + c.pg_batch, "pg": 0, "ai": 0}
        if self.algorithm == "pga-me":
            return {"ga": c.ga_batch, "pg": max(c.pg_batch - 1, 0), "ai": 1 if c.pg_batch else 0}
        return {"ga": c.ga_batch, "pg": c.pg_batch, "ai": 0}

    def step(self) -> Dict[str, float]:
        """One QD iteration; returns its metrics."""
        if not self._initialised:
            self._initialise()
        sizes = self.batch_sizes()
        offspring = []
        if sizes["ga"]:
            offspring.append(self.emit_ga(sizes["ga"]))
        if sizes["pg"]:
            offspring.append(self.emit_pg(sizes["pg"])[0])
        if sizes["ai"]:  # PGA-ME injects its greedy TD3 actor
            offspring.append(self.actor.to_genome().unsqueeze(0))
        self._evaluate(torch.cat(offspring))
        if self.conditioned and self.cfg.actor_episodes:
            _, d_prime = self.archive.sample(self.cfg.actor_episodes, self.rng)
            d_prime_n = self.normalize(d_prime)
            genomes = fold_descriptor(self.actor, torch.as_tensor(d_prime_n, dtype=torch.float32))
            self._evaluate(genomes, desc_target=d_prime_n, insert=False)
            self.n_actor_episodes += self.cfg.actor_episodes
        losses = self.train_td3(self.cfg.critic_steps) if self.uses_pg else {}
        self.iteration += 1
        if self.cfg.reeval_every and self.iteration % self.cfg.reeval_every == 0:
            self.reevaluate_elites()
        m = self.metrics()
        m.update(losses)
        self.history.append(m)
        return m

    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False) -> "QDAgent":
        """Run ``total_timesteps`` QD iterations; returns self.

        ``callback(agent)`` is called after every iteration and may return ``False`` to stop
        (a plain callable; stable-baselines3 ``BaseCallback`` objects are not supported).
        """
        if (isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, np.integer))
                or total_timesteps < 0):
            raise ValueError(f"total_timesteps (QD iterations) must be a non-negative integer, got {total_timesteps!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be a callable callback(agent) -> bool | None, got {type(callback).__name__}")
        from gradkit_core.results import progress as bar

        for _ in bar(range(int(total_timesteps)), desc=self.algorithm, enabled=progress_bar):
            self.step()
            if callback is not None and callback(self) is False:
                break
        return self

    def reevaluate_elites(self) -> int:
        """One more evaluation of every elite (fresh starts), folded into running means; see
        :meth:`CVTArchive.reevaluate`.  Counted in ``n_reevals`` (apart from the offspring evaluations);
        the transitions go to the replay buffer.  Returns how many elites were dropped."""
        idx = np.flatnonzero(self.archive.filled)
        out, _ = self._evaluate(torch.from_numpy(self.archive.genomes[idx].copy()), insert=False)
        self.n_reevals += len(idx)
        return self.archive.reevaluate(out["fitness"], out["descriptor"])

    def metrics(self) -> Dict[str, float]:
        a = self.archive
        return {"iteration": self.iteration, "evaluations": self.n_evals, "reevaluations": self.n_reevals,
                "qd_score": a.qd_score(),
                "coverage": a.coverage(), "max_fitness": a.max_fitness()}

    # ------------------------------------------------------------------ distilled actor
    def evaluate_dc_actor(self, targets: Optional[np.ndarray] = None) -> Dict[str, float]:
        """Run π_DC(s | d') once for the descriptor d' of every filled cell (or for each row of ``targets``).

        Returns the QD score / coverage of the archive its episodes fill (same tessellation) and the
        mean descriptor error ‖d_obs − d'‖₂ in normalised units (descriptor box mapped to [−1, 1]).
        """
        if not self.conditioned:
            raise ValueError(f"{self.algorithm} has no descriptor-conditioned actor")
        a = self.archive
        if targets is None:
            targets = a.descriptors[a.filled]
            if len(targets) == 0:
                raise ValueError("the archive is empty: run learn() first")
        else:
            targets = a.check_descriptors(np.atleast_2d(targets), "target descriptor")
        t_n = self.normalize(targets)
        genomes = fold_descriptor(self.actor, torch.as_tensor(t_n, dtype=torch.float32))
        out = self._rollout(genomes, self._eval_seed())
        fresh = CVTArchive(a.n_cells, a.low, a.high, a.genome_dim, centroids=a.centroids)
        fresh.add(genomes.numpy(), out["fitness"], out["descriptor"])
        err = np.linalg.norm(self.normalize(out["descriptor"]) - t_n, axis=1)
        return {"dc_qd_score": fresh.qd_score(), "dc_coverage": fresh.coverage(),
                "dc_desc_error": float(err.mean()), "dc_fitness": float(out["fitness"].mean())}

    def _eval_seed(self) -> int:
        # evaluation must not consume the training RNG (so evaluating never changes a run)
        return self.seed + 10_000 + self.iteration

    # ------------------------------------------------------------------ agent API
    def _check_target(self, descriptor) -> np.ndarray:
        d = np.asarray(descriptor, dtype=np.float64).reshape(1, -1)
        return self.archive.check_descriptors(d, "target descriptor")[0]

    def policy_genome(self, descriptor=None) -> torch.Tensor:
        """The plain policy for ``descriptor`` (distilled actor for DCG-ME, else the nearest elite)."""
        if not self._initialised:  # every run starts with this, so doing it now changes no result
            self._initialise()
        a = self.archive
        if descriptor is None:
            if self.conditioned:
                descriptor = a.descriptors[int(np.argmax(a.fitness))]
            else:
                return torch.from_numpy(a.genomes[int(np.argmax(a.fitness))]).unsqueeze(0)
        d = self._check_target(descriptor)
        if self.conditioned:
            return fold_descriptor(self.actor, torch.as_tensor(self.normalize(d)[None], dtype=torch.float32))
        filled = np.flatnonzero(a.filled)
        nearest = filled[np.argmin(((a.descriptors[filled] - d) ** 2).sum(1))]
        return torch.from_numpy(a.genomes[nearest]).unsqueeze(0)

    @torch.no_grad()
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False,
                descriptor=None) -> Tuple[np.ndarray, Any]:
        """``(action, state)`` for one observation or a batch; ``state`` is returned unchanged."""
        obs = np.asarray(observation, dtype=np.float32)
        if obs.ndim == 0 or obs.shape[-1] != self.shape.in_dim or not np.all(np.isfinite(obs)):
            raise ValueError(f"obs must be finite with last dimension {self.shape.in_dim}, got shape {obs.shape}")
        g = self.policy_genome(descriptor)
        batch = obs.reshape(1, -1, self.shape.in_dim)
        act = policy_forward(g, torch.from_numpy(batch), self.shape)[0].numpy()
        return act.reshape(*obs.shape[:-1], self.shape.out_dim), state

    def evaluate(self, n_episodes: int = 5, descriptor=None) -> Tuple[float, float]:
        """Mean and std return of :meth:`policy_genome` over ``n_episodes`` seeded episodes."""
        g = self.policy_genome(descriptor).expand(int(n_episodes), -1).contiguous()
        out = self._rollout(g, self._eval_seed())
        return float(out["fitness"].mean()), float(out["fitness"].std())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        t = torch.as_tensor
        state: Dict[str, Any] = {
            "format": "gradkit-dcgme/1",
            "algorithm": self.algorithm,
            "env_id": self.env_id,
            "env_kwargs_json": json.dumps(self.env_kwargs),
            "seed": self.seed,
            "config_json": json.dumps(asdict(self.cfg)),
            "counters": [self.iteration, self.td3_steps, self.n_evals, self.n_actor_episodes, int(self._initialised),
                         self.n_reevals],
            "archive": {k: t(v) for k, v in self.archive.state_dict().items()},
            "rng_json": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self.gen.get_state(),
            "history_json": json.dumps(self.history),
        }
        if self.uses_pg:
            state["buffer"] = {k: (t(v) if k != "size" else v) for k, v in self.buffer.state_dict().items()}
            for name in ("critic", "actor", "critic_target", "actor_target", "critic_opt", "actor_opt"):
                state[name] = getattr(self, name).state_dict()
        return state

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)
        return path

    _CKPT_KEYS = ("format", "algorithm", "env_id", "env_kwargs_json", "seed", "config_json", "counters", "archive",
                  "rng_json", "torch_rng", "history_json")
    _PG_KEYS = ("buffer", "critic", "actor", "critic_target", "actor_target", "critic_opt", "actor_opt")

    @classmethod
    def load(cls, path, env=None) -> "QDAgent":
        """Rebuild an agent from :meth:`save`'s file.

        ``env`` defaults to the stored env id, used only when it is already registered with gymnasium
        and names no module (gymnasium would import ``module`` for ``module:Name-v0``).
        """
        from gradkit_core.checkpoints import read_checkpoint

        state = read_checkpoint(path, "gradkit-dcgme/1", cls._CKPT_KEYS, "gradkit-dcgme")
        algo = state["algorithm"]
        klasses = {"dcg-me": DCGME, "pga-me": PGAME, "map-elites": MAPElites}
        if algo not in klasses:
            raise ValueError(f"{path}: unknown algorithm {algo!r} in the checkpoint; known: {sorted(klasses)}")
        klass = klasses[algo]
        if cls is not QDAgent and cls is not klass:
            raise ValueError(f"{path} holds a {algo} agent, not {cls.algorithm}")
        missing = [k for k in cls._PG_KEYS if k not in state] if algo != "map-elites" else []
        if missing:
            raise ValueError(f"{path}: the {algo} checkpoint lacks the key(s) {missing}")
        _check_finite_tree(state["archive"], path, "archive", filled=state["archive"].get("fitness"))
        for name in cls._PG_KEYS:
            if name in state:
                _check_finite_tree(state[name], path, name)
        if env is None:
            env = _verified_env_id(state["env_id"], path)
        try:
            cfg = json.loads(state["config_json"])
            env_kwargs = json.loads(state["env_kwargs_json"])
            if not isinstance(cfg, dict) or not isinstance(env_kwargs, dict):
                raise TypeError("config and env kwargs must be JSON objects")
            agent = klass(env, seed=state["seed"], env_kwargs=env_kwargs, **cfg)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: the checkpoint's settings are invalid: {exc}") from exc
        try:
            agent.archive.load_state_dict({k: v.numpy() for k, v in state["archive"].items()})
            counters = list(state["counters"])
            (agent.iteration, agent.td3_steps, agent.n_evals, agent.n_actor_episodes, init) = counters[:5]
            agent.n_reevals = int(counters[5]) if len(counters) > 5 else 0
            agent._initialised = bool(init)
            agent.rng.bit_generator.state = json.loads(state["rng_json"])
            agent.gen.set_state(state["torch_rng"])
            agent.history = json.loads(state["history_json"])
            if agent.uses_pg:
                agent.buffer.load_state_dict({k: (v.numpy() if torch.is_tensor(v) else v)
                                              for k, v in state["buffer"].items()})
                for name in ("critic", "actor", "critic_target", "actor_target", "critic_opt", "actor_opt"):
                    getattr(agent, name).load_state_dict(state[name])
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"{path}: the checkpoint does not match a {algo} agent with its stored settings "
                             f"({type(exc).__name__}: {exc})") from exc
        return agent

    def close(self) -> None:
        """Close the envs and stop the rollout workers (a local pool or a Ray instance this agent started)."""
        self.evaluator.close()
        if self.parallel is not None:
            self.parallel.close()


def _verified_env_id(env_id: Any, path) -> str:
    """The stored env id if it is safe to make (see :func:`gradkit_core.checkpoints.verified_env_id`)."""
    from gradkit_core.checkpoints import verified_env_id

    return verified_env_id(env_id, path)


def _check_finite_tree(tree: Any, path, where: str, filled=None) -> None:
    """ValueError naming ``path`` and the entry when a floating tensor holds NaN/inf.

    In the archive, ``fitness`` is -inf for empty cells (never NaN or +inf) and only filled cells' genomes
    and descriptors are checked."""
    if torch.is_tensor(tree):
        if not tree.is_floating_point():
            return
        if where.endswith("archive.fitness"):
            bad = torch.isnan(tree) | (tree == float("inf"))
        elif filled is not None and where.split(".")[-1] in ("genomes", "descriptors"):
            mask = torch.isfinite(filled)
            bad = ~torch.isfinite(tree[mask]) if mask.any() else torch.zeros(0, dtype=torch.bool)
        else:
            bad = ~torch.isfinite(tree)
        if bool(bad.any()):
            raise ValueError(f"{path}: non-finite (NaN/inf) values in {where}; refusing a corrupted checkpoint")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            _check_finite_tree(v, path, f"{where}.{k}", filled)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _check_finite_tree(v, path, f"{where}[{i}]", filled)


def _soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class DCGME(QDAgent):
    """DCG-MAP-Elites: descriptor-conditioned critic + PG toward the parent's descriptor + distilled actor."""

    algorithm = "dcg-me"


class PGAME(QDAgent):
    """PGA-MAP-Elites: iso+line-DD GA + fitness-greedy TD3 policy gradients + actor injection."""

    algorithm = "pga-me"


class MAPElites(QDAgent):
    """CVT-MAP-Elites with iso+line-DD variation only."""

    algorithm = "map-elites"
