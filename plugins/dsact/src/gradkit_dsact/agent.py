"""DSAC-T (DSAC-v2), DSAC-v1, SAC and TD3 in one code base with stable-baselines3's agent API.

    agent = gk.create("dsac-t", "Pendulum-v1", seed=0, hidden=(64, 64))
    agent.learn(total_timesteps=20_000, progress_bar=True)
    action, _state = agent.predict(obs, deterministic=True)      # SB3: (action, state)
    agent.save("dsact.pt"); agent = DSACT.load("dsact.pt", env="Pendulum-v1")
    mean, std = agent.evaluate(10)
    stable_baselines3.common.evaluation.evaluate_policy(agent, env)   # works on gradkit agents

``load`` never imports a module named inside a checkpoint: the stored env id is used only
when it is an id already registered with gymnasium and has no ``module:`` prefix.  A file that
is empty, truncated, lacks a key, names an unknown algorithm or holds non-finite weights or
hyperparameters is a ``ValueError`` naming the file and the problem.

Equations (Duan et al., "Distributional Soft Actor-Critic with Three Refinements",
arXiv:2310.05858) are quoted next to the code that implements them; see the plugin
README for the full list and for the deviations.

Checkpoints are written with ``torch.save`` and read with ``torch.load(weights_only=True)``:
only tensors, numbers, strings, lists and dicts are stored (networks, optimizers, replay
buffer, random-generator state, counters).  Saving in the middle of an episode is
supported: the checkpoint records the episode's reset seed and its actions, and ``load``
replays them on the new env, so that training continues exactly as if uninterrupted
(envs are deterministic given a reset seed and actions; this is checked on load).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CKPT_FORMAT = "gradkit-dsact/1"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


# --------------------------------------------------------------------------- networks
def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Fully connected net with ``activation`` between layers and a linear output."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class DistributionalCritic(nn.Module):
    """Gaussian value distribution Z(s, a) ~ N(Q(s, a), sigma(s, a)^2); sigma = softplus(raw) > 0."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden, 2], activation)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.net(torch.cat([obs, act], dim=-1))
        return out[..., 0], F.softplus(out[..., 1])


class QCritic(nn.Module):
    """Scalar soft Q network (SAC)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *hidden, 1], activation)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1))[..., 0]


def tanh_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(tanh(u)) for u ~ N(mean, exp(log_std)^2), summed over action dimensions.

    log pi(a) = sum_k [ log N(u_k; mean_k, std_k) - log(1 - tanh(u_k)^2) ], with the
    Jacobian term in the stable form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """
    std = log_std.exp()
    normal = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (normal - log_det).sum(-1)


class TanhGaussianPolicy(nn.Module):
    """Stochastic policy a = tanh(u), u ~ N(mu(s), sigma(s)^2), log sigma clamped to [min, max]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str,
                 log_std_min: float = -20.0, log_std_max: float = 0.5):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 2 * act_dim], activation)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, obs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Reparameterised sample: returns (action in [-1, 1], log-prob)."""
        mean, log_std = self(obs)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        u = mean + log_std.exp() * noise
        return torch.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class DeterministicPolicy(nn.Module):
    """TD3's actor a = tanh(mu(s)); ``sample`` adds N(0, noise^2) exploration noise and clips to [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str, noise: float):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim], activation)
        self.noise = float(noise)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def sample(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Exploration action; the second value (a log-prob for stochastic policies) is ``None``."""
        a = self.deterministic(obs)
        eps = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        return (a + self.noise * eps).clamp(-1.0, 1.0), None


# --------------------------------------------------------------------------- losses
def update_sigma_bar(sigma_bar: Optional[float], std: torch.Tensor, tau_b: float) -> float:
    """Running batch-mean std: sigma_bar <- (1 - tau_b) sigma_bar + tau_b mean(std); first batch initialises."""
    batch_mean = float(std.detach().mean())
    if sigma_bar is None:
        return batch_mean
    return (1.0 - tau_b) * sigma_bar + tau_b * batch_mean


def dsact_critic_loss(q: torch.Tensor, std: torch.Tensor, y_mean: torch.Tensor, y_sample: torch.Tensor,
                      sigma_bar: float, eps_b: float = 0.1, td_bound_k: float = 3.0,
                      form: str = "paper") -> torch.Tensor:
    """DSAC-T critic loss of one critic (gradients flow through ``q`` and ``std`` only).

    ``form="paper"`` (arXiv:2310.05858, Eq. for the refined critic update)::

        y_b   = Q + clip(y_s - Q, -3 sigma_bar, 3 sigma_bar)          (Q detached)
        omega = sigma_bar^2 + eps_b
        L = omega * mean[ -(y_mean - Q)/(sigma^2 + eps_b) * Q
                          - ((Q - y_b)^2 - sigma^2)/(sigma^3 + eps_b) * sigma ]

    so dL/dQ_j = -omega (y_mean - Q_j)/(sigma_j^2 + eps_b)/B and
    dL/dsigma_j = -omega ((Q_j - y_b,j)^2 - sigma_j^2)/(sigma_j^3 + eps_b)/B, where every
    coefficient is evaluated at detached Q, sigma.

    ``form="v2025"`` is the official code after its July 2025 change: a per-sample ratio
    clamp(sigma_bar^2/(sigma^2 + eps_b), 0.1, 10), Huber(delta=50) in place of the squared
    error and denominator sigma + eps_b::

        L = mean[ ratio * ( huber(Q, y_mean) + sigma (sigma^2 - huber(Q, y_b))/(sigma + eps_b) ) ]
    """
    qd, sd = q.detach(), std.detach()
    bound = td_bound_k * sigma_bar
    y_b = (qd + (y_sample - qd).clamp(-bound, bound)).detach()
    y_mean = y_mean.detach()
    if form == "paper":
        omega = sigma_bar ** 2 + eps_b
        mean_term = -(y_mean - qd) / (sd.pow(2) + eps_b) * q
        std_term = -((qd - y_b).pow(2) - sd.pow(2)) / (sd.pow(3) + eps_b) * std
        return omega * (mean_term + std_term).mean()
    if form == "v2025":
        ratio = (sigma_bar ** 2 / (sd.pow(2) + eps_b)).clamp(0.1, 10.0)
        mean_term = F.huber_loss(q, y_mean, delta=50.0, reduction="none")
        std_term = std * (sd.pow(2) - F.huber_loss(qd, y_b, delta=50.0, reduction="none")) / (sd + eps_b)
        return (ratio * (mean_term + std_term)).mean()
    raise ValueError(f"critic_loss must be 'paper' or 'v2025', got {form!r}")


def dsac_v1_critic_loss(q: torch.Tensor, std: torch.Tensor, y_sample: torch.Tensor,
                        td_bound: float, eps_b: float = 0.1) -> torch.Tensor:
    """DSAC-v1 critic loss: sampled target for the mean, fixed TD bound, no sigma_bar scaling::

        y_b = Q + clip(y_s - Q, -b, b)
        L = mean[ -(y_s - Q)/(sigma^2 + eps_b) * Q - ((Q - y_b)^2 - sigma^2)/(sigma^3 + eps_b) * sigma ]
    """
    qd, sd = q.detach(), std.detach()
    y_sample = y_sample.detach()
    y_b = (qd + (y_sample - qd).clamp(-td_bound, td_bound)).detach()
    mean_term = -(y_sample - qd) / (sd.pow(2) + eps_b) * q
    std_term = -((qd - y_b).pow(2) - sd.pow(2)) / (sd.pow(3) + eps_b) * std
    return (mean_term + std_term).mean()


@torch.no_grad()
def polyak(online: nn.Module, target: nn.Module, tau: float) -> None:
    """theta' <- (1 - tau) theta' + tau theta."""
    for p, pt in zip(online.parameters(), target.parameters()):
        pt.mul_(1.0 - tau).add_(p, alpha=tau)


# --------------------------------------------------------------------------- env helpers
def _make_env(env: Any):
    import gymnasium as gym

    if isinstance(env, str):
        try:
            return gym.make(env), env
        except Exception as exc:  # gymnasium raises its own error types
            raise ValueError(f"unknown or unusable gymnasium env id {env!r}: {exc}") from exc
    if isinstance(env, gym.Env):
        spec = getattr(env, "spec", None)
        return env, (spec.id if spec is not None else None)
    raise TypeError(f"env must be a gymnasium.Env or a registered env id string, got {type(env).__name__}")


def _verified_env_id(env_id: Any, path: Any) -> str:
    """The checkpoint's env id if it is safe to make (see :func:`gradkit_core.checkpoints.verified_env_id`)."""
    from gradkit_core.checkpoints import verified_env_id

    return verified_env_id(env_id, path)


def _check_spaces(env, algo: str) -> Tuple[int, int]:
    from gymnasium import spaces

    if not isinstance(env.action_space, spaces.Box):
        raise TypeError(
            f"{algo} needs a continuous gymnasium.spaces.Box action space; got {env.action_space!r} "
            "(discrete action spaces are not supported)"
        )
    low, high = env.action_space.low, env.action_space.high
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"{algo} needs a bounded Box action space; got low={low}, high={high}")
    if not isinstance(env.observation_space, spaces.Box):
        raise TypeError(f"{algo} needs a Box observation space; got {env.observation_space!r}")
    return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))


def _check_obs(obs: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(obs)):
        raise ValueError(f"non-finite observation {where}: {obs!r}; observations must be finite numbers")
    return obs


class ReplayBuffer:
    """Fixed-capacity ring buffer of (obs, act, rew, obs2, done); sampling uses a torch.Generator."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.obs2 = np.zeros((self.capacity, obs_dim), np.float32)
        self.act = np.zeros((self.capacity, act_dim), np.float32)
        self.rew = np.zeros(self.capacity, np.float32)
        self.done = np.zeros(self.capacity, np.float32)
        self.ptr, self.size = 0, 0

    def add(self, obs, act, rew, obs2, done) -> None:
        i = self.ptr
        self.obs[i], self.act[i], self.rew[i], self.obs2[i], self.done[i] = obs, act, rew, obs2, done
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator):
        idx = torch.randint(self.size, (batch_size,), generator=generator).numpy()
        return tuple(torch.from_numpy(a[idx]) for a in (self.obs, self.act, self.rew, self.obs2, self.done))

    def state_dict(self) -> Dict[str, Any]:
        n = self.size
        return {"ptr": self.ptr, "size": n,
                **{k: torch.from_numpy(getattr(self, k)[:n].copy()) for k in ("obs", "obs2", "act", "rew", "done")}}

    def load_state_dict(self, st: Dict[str, Any]) -> None:
        n = int(st["size"])
        for k in ("obs", "obs2", "act", "rew", "done"):
            getattr(self, k)[:n] = st[k].numpy()
        self.ptr, self.size = int(st["ptr"]), n


# --------------------------------------------------------------------------- agents
class _OffPolicyAgent:
    """Shared machinery: data schedule, replay, seeding, predict/evaluate/save/load.

    Data schedule (official DSAC-T trainer): the first ``warmup`` env steps use uniform
    random actions; afterwards the stochastic policy acts, and one gradient iteration is
    done after every ``env_steps_per_update`` env steps once ``warmup`` samples are stored.
    ``learn(total_timesteps)`` counts env steps and continues where the last call stopped.
    """

    algo = "off-policy"
    _DEFAULTS: Dict[str, Any] = {}

    def __init__(self, env: Any, seed: int = 0, **hp: Any):
        unknown = sorted(set(hp) - set(self._DEFAULTS))
        if unknown:
            raise TypeError(f"{self.algo}: unknown hyperparameter(s) {unknown}; valid: {sorted(self._DEFAULTS)}")
        self.hp = {**self._DEFAULTS, **hp}
        self.hp["hidden"] = tuple(int(h) for h in self.hp["hidden"])
        self._validate_hp()
        self.env, self.env_id = _make_env(env)
        self.obs_dim, self.act_dim = _check_spaces(self.env, self.algo)
        self._act_low = self.env.action_space.low.astype(np.float64).reshape(-1)
        self._act_high = self.env.action_space.high.astype(np.float64).reshape(-1)
        self.seed = int(seed)
        torch.manual_seed(self.seed)  # network initialisation only; all later randomness uses self.gen
        self.gen = torch.Generator().manual_seed(self.seed)
        # stochastic predict() draws from its own stream, so acting never changes a training run
        self._predict_gen = torch.Generator().manual_seed(self.seed + 7_919)
        te = self.hp.get("target_entropy")
        self.target_entropy = float(-self.act_dim if te is None else te)
        self._build()
        self.buffer = ReplayBuffer(self.hp["buffer_size"], self.obs_dim, self.act_dim)
        self.num_timesteps = 0
        self.n_updates = 0
        self.episode = 0  # index of the current training episode (its reset seed derives from it)
        self._obs: Optional[np.ndarray] = None
        self._ep_actions: list = []
        self._ep_return = 0.0
        self.episode_returns: list = []  # (num_timesteps at episode end, unscaled return)
        self.eval_history: list = []  # (num_timesteps, mean, std)
        self.logs: Dict[str, float] = {}

    # -- to be provided by subclasses
    def _build(self) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _update(self, batch) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _modules(self) -> Dict[str, nn.Module]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _extra_state(self) -> Dict[str, Any]:
        return {}

    def _load_extra_state(self, st: Dict[str, Any]) -> None:
        pass

    def _validate_hp(self) -> None:
        hp = self.hp
        for key, v in hp.items():
            if isinstance(v, bool) or v is None or isinstance(v, str):
                continue
            vals = v if isinstance(v, (tuple, list)) else (v,)
            for x in vals:
                if not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(float(x)):
                    raise ValueError(f"{self.algo}: hyperparameter {key} must be a finite number, got {v!r}")
        for key in ("lr_critic", "lr_actor", "lr_alpha", "reward_scale"):
            if key in hp and not hp[key] > 0:
                raise ValueError(f"{self.algo}: {key} must be > 0, got {hp[key]}")
        if any(h < 1 for h in hp["hidden"]):
            raise ValueError(f"{self.algo}: hidden sizes must be >= 1, got {hp['hidden']}")
        for key in ("batch_size", "buffer_size", "env_steps_per_update", "delay_update"):
            if key in hp and int(hp[key]) < 1:
                raise ValueError(f"{self.algo}: {key} must be >= 1, got {hp[key]}")
        if not 0 < hp["gamma"] <= 1:
            raise ValueError(f"{self.algo}: gamma must be in (0, 1], got {hp['gamma']}")
        if not 0 < hp["tau"] <= 1:
            raise ValueError(f"{self.algo}: tau must be in (0, 1], got {hp['tau']}")
        if hp["warmup"] < 0:
            raise ValueError(f"{self.algo}: warmup must be >= 0, got {hp['warmup']}")

    # -- helpers
    @property
    def alpha(self) -> float:
        if getattr(self, "log_alpha", None) is None:
            raise AttributeError(f"{self.algo} has no entropy temperature")
        return float(self.log_alpha.detach().exp())

    def _to_env_action(self, a: np.ndarray) -> np.ndarray:
        """Map a tanh action in [-1, 1] to the Box bounds."""
        a = np.asarray(a, np.float64)
        env_a = self._act_low + 0.5 * (a + 1.0) * (self._act_high - self._act_low)
        return np.clip(env_a, self._act_low, self._act_high).astype(self.env.action_space.dtype)

    def _flat_obs(self, obs: Any, where: str) -> np.ndarray:
        return _check_obs(np.asarray(obs, np.float32).reshape(-1), where)

    def _episode_seed(self, k: int) -> int:
        return self.seed * 1_000_003 + int(k)

    def _reset_env(self) -> None:
        obs, _ = self.env.reset(seed=self._episode_seed(self.episode))
        self._obs = self._flat_obs(obs, f"from env.reset() (episode {self.episode})")
        self._ep_actions, self._ep_return = [], 0.0

    # -- public API
    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False, *,
              eval_every: Optional[int] = None, eval_episodes: int = 5):
        """Run ``total_timesteps`` more env steps (gradient iterations per the data schedule); returns self.

        stable-baselines3's signature, except that training always continues where the last call
        stopped (SB3's ``reset_num_timesteps=False``) and ``callback`` is a plain callable
        ``callback(agent)``, called after every env step, that may return ``False`` to stop
        (SB3 ``BaseCallback`` objects are not supported).  ``eval_every`` (env steps) appends
        ``(num_timesteps, mean, std)`` of a deterministic evaluation to ``eval_history``.
        """
        from gradkit_core.results import progress as _progress

        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, np.integer)):
            raise TypeError(f"total_timesteps must be an integer number of env steps, got {total_timesteps!r}")
        total_steps = int(total_timesteps)
        if total_steps < 0:
            raise ValueError(f"total_timesteps must be >= 0, got {total_steps}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be a callable callback(agent) -> bool | None, got {type(callback).__name__}"
                            " (stable-baselines3 BaseCallback objects are not supported)")
        hp = self.hp
        k, warmup = int(hp["env_steps_per_update"]), int(hp["warmup"])
        bar = _progress(total=total_steps, desc=f"{self.algo} learn", enabled=progress_bar)
        try:
            for _ in range(total_steps):
                if self._obs is None:
                    self._reset_env()
                if self.num_timesteps < warmup:
                    a = (torch.rand(self.act_dim, generator=self.gen) * 2.0 - 1.0).numpy()
                else:
                    with torch.no_grad():
                        a, _ = self.policy.sample(torch.from_numpy(self._obs)[None], self.gen)
                    a = a[0].numpy()
                obs2, rew, term, trunc, _ = self.env.step(self._to_env_action(a).reshape(self.env.action_space.shape))
                obs2 = self._flat_obs(obs2, f"from env.step() at step {self.num_timesteps}")
                rew = float(rew)
                if not math.isfinite(rew):
                    raise ValueError(f"non-finite reward {rew} from env.step() at step {self.num_timesteps}")
                self.buffer.add(self._obs, a, rew * hp["reward_scale"], obs2, float(term))
                self._ep_actions.append(np.asarray(a, np.float32))
                self._ep_return += rew
                self._obs = obs2
                self.num_timesteps += 1
                if term or trunc:
                    self.episode_returns.append((self.num_timesteps, self._ep_return))
                    self.episode += 1
                    self._obs = None
                if (self.num_timesteps >= warmup and self.num_timesteps % k == 0
                        and self.buffer.size >= hp["batch_size"]):
                    self._update(self.buffer.sample(hp["batch_size"], self.gen))
                    self.n_updates += 1
                if eval_every and self.num_timesteps % int(eval_every) == 0:
                    m, s = self.evaluate(eval_episodes)
                    self.eval_history.append((self.num_timesteps, m, s))
                bar.update(1)
                if callback is not None and callback(self) is False:
                    break
        finally:
            bar.close()
        return self

    @torch.no_grad()
    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> Tuple[np.ndarray, Any]:
        """``(action, state)`` as in stable-baselines3, for one observation or a batch ``(N, *obs_shape)``.

        The action lies inside the Box bounds.  The policy is not recurrent: ``state`` is returned
        unchanged and ``episode_start`` is ignored.  ``deterministic=False`` (SB3's default) samples
        from the policy with a random stream of its own (training is not affected).
        """
        arr = np.asarray(observation, np.float32)
        shape = self.env.observation_space.shape
        single = arr.shape == tuple(shape)
        if not single and arr.shape[1:] != tuple(shape):
            raise ValueError(f"observation must have shape {tuple(shape)} or (N, *{tuple(shape)}), got {arr.shape}")
        flat = _check_obs(arr.reshape(1 if single else arr.shape[0], -1), "passed to predict()")
        x = torch.from_numpy(flat)
        a = self.policy.deterministic(x) if deterministic else self.policy.sample(x, self._predict_gen)[0]
        out = self._to_env_action(a.numpy()).reshape(-1, *self.env.action_space.shape)
        return (out[0] if single else out), state

    def _act(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        return self.predict(obs, deterministic=deterministic)[0]

    def _eval_env(self):
        import gymnasium as gym

        if self.env_id is not None:
            spec = getattr(self.env, "spec", None)
            return gym.make(spec if spec is not None else self.env_id)
        return None

    def evaluate(self, n_episodes: int = 10, deterministic: bool = True, return_episodes: bool = False):
        """Mean and std of the (unscaled) return over ``n_episodes`` on a separate env with fixed seeds."""
        if int(n_episodes) < 1:
            raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
        env = self._eval_env()
        own = env is not None
        if not own:
            env = self.env  # an unregistered env object: evaluate on it, then restart the training episode
        returns = []
        try:
            for i in range(int(n_episodes)):
                obs, _ = env.reset(seed=10_000_000 + self.seed * 1000 + i)
                done, ret = False, 0.0
                while not done:
                    obs, r, term, trunc, _ = env.step(self._act(obs, deterministic))
                    ret += float(r)
                    done = term or trunc
                returns.append(ret)
        finally:
            if own:
                env.close()
            else:
                self._replay_episode()
        mean, std = float(np.mean(returns)), float(np.std(returns))
        return (mean, std, returns) if return_episodes else (mean, std)

    @torch.no_grad()
    def q_value(self, obs: Any, act: Any) -> np.ndarray:
        """Estimated Q (critic mean; for twin critics the smaller one) for env-space obs/actions."""
        o = torch.as_tensor(np.asarray(obs, np.float32)).reshape(-1, self.obs_dim)
        a = np.asarray(act, np.float64).reshape(-1, self.act_dim)
        a = 2.0 * (a - self._act_low) / (self._act_high - self._act_low) - 1.0
        return self._q_mean(o, torch.as_tensor(a, dtype=torch.float32)).numpy()

    def q_bias(self, n_episodes: int = 5, horizon: Optional[int] = None) -> Dict[str, float]:
        """Q-estimation bias on evaluation rollouts (deterministic policy).

        For every visited (s_t, a_t): bias_t = Q(s_t, a_t)/reward_scale - G_t, G_t the discounted
        Monte-Carlo return to episode end; states whose remaining horizon is shorter than
        ``horizon`` (default: ~3/(1-gamma)) are dropped where the episode was truncated.
        Returns mean bias and mean bias normalised by mean |G|.
        """
        import gymnasium  # noqa: F401 - env creation

        gamma = self.hp["gamma"]
        horizon = int(horizon or min(1000, round(3.0 / (1.0 - gamma)))) if gamma < 1 else int(horizon or 1000)
        env = self._eval_env() or self.env
        biases, gs = [], []
        for i in range(int(n_episodes)):
            obs, _ = env.reset(seed=20_000_000 + self.seed * 1000 + i)
            O, A, R = [], [], []
            done, trunc = False, False
            while not done:
                a = self._act(obs, True)
                O.append(np.asarray(obs, np.float32).reshape(-1)); A.append(a)
                obs, r, term, trunc, _ = env.step(a)
                R.append(float(r))
                done = term or trunc
            G = np.zeros(len(R))
            acc = 0.0
            for t in range(len(R) - 1, -1, -1):
                acc = R[t] + gamma * acc
                G[t] = acc
            keep = len(R) if not trunc else max(0, len(R) - horizon)
            if keep == 0:
                keep = 1
            q = self.q_value(np.stack(O[:keep]), np.stack(A[:keep])) / self.hp["reward_scale"]
            biases.append(q - G[:keep]); gs.append(G[:keep])
        if env is self.env:
            self._replay_episode()
        b, g = np.concatenate(biases), np.concatenate(gs)
        return {"bias": float(b.mean()), "normalized_bias": float(b.mean() / max(np.abs(g).mean(), 1e-8))}

    # -- checkpoints
    def save(self, path) -> None:
        """Write a checkpoint readable with ``torch.load(path, weights_only=True)``."""
        hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.hp.items()}
        ckpt = {
            "format": CKPT_FORMAT,
            "algo": self.algo,
            "seed": self.seed,
            "env_id": self.env_id,
            "hp": hp,
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "log_alpha": (self.log_alpha.detach().clone() if getattr(self, "log_alpha", None) is not None
                          else torch.zeros(())),
            "gen": self.gen.get_state(),
            "predict_gen": self._predict_gen.get_state(),
            "buffer": self.buffer.state_dict(),
            "counters": {"num_timesteps": self.num_timesteps, "n_updates": self.n_updates, "episode": self.episode},
            "episode_state": {
                "in_episode": self._obs is not None,
                "actions": torch.from_numpy(np.stack(self._ep_actions)) if self._ep_actions
                else torch.zeros(0, self.act_dim),
                "obs": torch.from_numpy(self._obs.copy()) if self._obs is not None else torch.zeros(0),
                "ret": self._ep_return,
            },
            "episode_returns": [list(x) for x in self.episode_returns],
            "eval_history": [list(x) for x in self.eval_history],
            "extra": self._extra_state(),
        }
        torch.save(ckpt, path)

    _CKPT_KEYS = ("format", "algo", "seed", "env_id", "hp", "modules", "optimizers", "log_alpha", "gen", "buffer",
                  "counters", "episode_state", "episode_returns", "eval_history", "extra")

    @staticmethod
    def _read_checkpoint(path) -> Dict[str, Any]:
        """``torch.load(weights_only=True)`` with errors that name the file and the problem (the core's reader)."""
        from gradkit_core.checkpoints import read_checkpoint

        return read_checkpoint(path, CKPT_FORMAT, _OffPolicyAgent._CKPT_KEYS, "gradkit-dsact")

    @staticmethod
    def _check_finite(tree: Any, path, where: str) -> None:
        if torch.is_tensor(tree):
            if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
                raise ValueError(f"{path}: non-finite (NaN/inf) values in {where}; refusing a corrupted checkpoint")
        elif isinstance(tree, dict):
            for k, v in tree.items():
                _OffPolicyAgent._check_finite(v, path, f"{where}.{k}" if where else str(k))
        elif isinstance(tree, (list, tuple)):
            for i, v in enumerate(tree):
                _OffPolicyAgent._check_finite(v, path, f"{where}[{i}]")
        elif isinstance(tree, float) and not math.isfinite(tree):
            raise ValueError(f"{path}: non-finite value in {where}")

    @classmethod
    def load(cls, path, env: Any = None):
        """Rebuild an agent from :meth:`save`'s file (``torch.load(weights_only=True)``).

        ``env`` defaults to the env id stored in the checkpoint, used only if it is already registered
        with gymnasium and names no module (gymnasium would import it); pass an env object or id
        for anything else.
        """
        ckpt = cls._read_checkpoint(path)
        klass = _ALGOS.get(ckpt["algo"])
        if klass is None:
            raise ValueError(f"{path}: unknown algorithm {ckpt['algo']!r} in the checkpoint; known: {sorted(_ALGOS)}")
        if cls is not _OffPolicyAgent and not issubclass(klass, cls) and klass is not cls:
            raise TypeError(f"{path} holds a {ckpt['algo']!r} agent, not {cls.__name__}")
        for key in ("modules", "optimizers", "log_alpha", "buffer", "episode_state", "extra"):
            cls._check_finite(ckpt[key], path, key)
        if not isinstance(ckpt["hp"], dict):
            raise ValueError(f"{path}: the checkpoint's hyperparameters are not a dict")
        if env is None:
            env = _verified_env_id(ckpt["env_id"], path)
        try:
            agent = klass(env, seed=ckpt["seed"], **ckpt["hp"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: the checkpoint's settings are invalid: {exc}") from exc
        try:
            modules, optims = agent._modules(), agent._optimizers()
            for what, want, have in (("modules", modules, ckpt["modules"]), ("optimizers", optims, ckpt["optimizers"])):
                lacking = sorted(set(want) - set(have))
                if lacking:
                    raise ValueError(f"the checkpoint lacks {what} {lacking}")
            for k, m in modules.items():
                m.load_state_dict(ckpt["modules"][k])
            for k, o in optims.items():
                o.load_state_dict(ckpt["optimizers"][k])
            if getattr(agent, "log_alpha", None) is not None:
                with torch.no_grad():
                    agent.log_alpha.copy_(ckpt["log_alpha"])
            agent.gen.set_state(ckpt["gen"])
            if "predict_gen" in ckpt:
                agent._predict_gen.set_state(ckpt["predict_gen"])
            agent.buffer.load_state_dict(ckpt["buffer"])
            c = ckpt["counters"]
            agent.num_timesteps, agent.n_updates, agent.episode = (int(c["num_timesteps"]), int(c["n_updates"]),
                                                                   int(c["episode"]))
            agent.episode_returns = [tuple(x) for x in ckpt["episode_returns"]]
            agent.eval_history = [tuple(x) for x in ckpt["eval_history"]]
            agent._load_extra_state(ckpt["extra"])
            es = ckpt["episode_state"]
            in_episode, actions, ret, obs = es["in_episode"], es["actions"], es["ret"], es["obs"]
        except (KeyError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"{path}: the checkpoint does not match a {ckpt['algo']} agent with its stored "
                             f"settings ({type(exc).__name__}: {exc})") from exc
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if in_episode:
            agent._ep_actions = [a.numpy() for a in actions]
            agent._ep_return = float(ret)
            agent._replay_episode(expected_obs=obs.numpy())
        return agent

    def _replay_episode(self, expected_obs: Optional[np.ndarray] = None) -> None:
        """Restore the env to the current training episode: reset with its seed, replay its actions."""
        actions, ret = list(self._ep_actions), self._ep_return
        if expected_obs is None and self._obs is None:
            return
        expected = self._obs if expected_obs is None else expected_obs
        self._reset_env()
        for a in actions:
            obs, *_ = self.env.step(self._to_env_action(a).reshape(self.env.action_space.shape))
            self._obs = self._flat_obs(obs, "while replaying the saved episode")
        self._ep_actions, self._ep_return = actions, ret
        if not np.allclose(self._obs, expected, rtol=1e-5, atol=1e-6):
            warnings.warn("the env did not reproduce the saved episode (non-deterministic env?); "
                          "training continues from the replayed state", RuntimeWarning, stacklevel=3)


def _adam(params, lr):
    return torch.optim.Adam(params, lr=lr)


class DSACT(_OffPolicyAgent):
    """DSAC-T / DSAC-v2 (``version=2``, default) and DSAC-v1 (``version=1``).

    Hyperparameters (defaults = the official MuJoCo script): ``hidden=(256, 256, 256)``,
    ``activation="gelu"``, ``lr_critic=1e-4``, ``lr_actor=1e-4``, ``lr_alpha=3e-4``,
    ``gamma=0.99``, ``tau=0.005``, ``tau_b=None`` (= tau), ``td_bound_k=3`` (clip at
    ±3 sigma_bar), ``td_bound=10`` (DSAC-v1's fixed bound), ``eps_b=0.1``,
    ``delay_update=2``, ``batch_size=256``, ``buffer_size=1e6``, ``warmup=10_000``,
    ``env_steps_per_update=20``, ``critic_loss="paper" | "v2025"``, ``reward_scale=1``,
    ``init_log_alpha=1.0``, ``target_entropy=None`` (= -|A|), ``auto_alpha=True``,
    ``alpha=0.2`` (used when ``auto_alpha=False``).
    """

    algo = "dsac-t"
    _DEFAULTS = dict(
        hidden=(256, 256, 256), activation="gelu", lr_critic=1e-4, lr_actor=1e-4, lr_alpha=3e-4,
        gamma=0.99, tau=0.005, tau_b=None, td_bound_k=3.0, td_bound=10.0, eps_b=0.1, delay_update=2,
        batch_size=256, buffer_size=1_000_000, warmup=10_000, env_steps_per_update=20,
        critic_loss="paper", version=2, reward_scale=1.0, init_log_alpha=1.0, target_entropy=None,
        auto_alpha=True, alpha=0.2, log_std_min=-20.0, log_std_max=0.5,
    )

    def _validate_hp(self) -> None:
        super()._validate_hp()
        if self.hp["version"] not in (1, 2):
            raise ValueError(f"version must be 1 (DSAC-v1) or 2 (DSAC-T), got {self.hp['version']!r}")
        if self.hp["critic_loss"] not in ("paper", "v2025"):
            raise ValueError(f"critic_loss must be 'paper' or 'v2025', got {self.hp['critic_loss']!r}")
        if self.hp["version"] == 1:
            self.algo = "dsac-v1"

    def _build(self) -> None:
        hp = self.hp
        n = 2 if hp["version"] == 2 else 1
        mk = lambda: DistributionalCritic(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"])  # noqa: E731
        self.critics = nn.ModuleList([mk() for _ in range(n)])
        self.policy = TanhGaussianPolicy(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"],
                                         hp["log_std_min"], hp["log_std_max"])
        self.critics_target = nn.ModuleList([mk() for _ in range(n)])
        self.critics_target.load_state_dict(self.critics.state_dict())
        self.policy_target = TanhGaussianPolicy(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"],
                                                hp["log_std_min"], hp["log_std_max"])
        self.policy_target.load_state_dict(self.policy.state_dict())
        for p in [*self.critics_target.parameters(), *self.policy_target.parameters()]:
            p.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(hp["init_log_alpha"])))
        self.critic_opt = _adam(self.critics.parameters(), hp["lr_critic"])
        self.actor_opt = _adam(self.policy.parameters(), hp["lr_actor"])
        self.alpha_opt = _adam([self.log_alpha], hp["lr_alpha"])
        self.sigma_bar = [None] * n

    def _modules(self):
        return {"critics": self.critics, "critics_target": self.critics_target,
                "policy": self.policy, "policy_target": self.policy_target}

    def _optimizers(self):
        return {"critic": self.critic_opt, "actor": self.actor_opt, "alpha": self.alpha_opt}

    def _extra_state(self):
        return {"sigma_bar": [(-1.0 if s is None else float(s)) for s in self.sigma_bar]}

    def _load_extra_state(self, st):
        self.sigma_bar = [None if s < 0 else float(s) for s in st["sigma_bar"]]

    def _alpha_value(self) -> float:
        return float(self.log_alpha.detach().exp()) if self.hp["auto_alpha"] else float(self.hp["alpha"])

    @torch.no_grad()
    def _q_mean(self, obs, act):
        return torch.stack([c(obs, act)[0] for c in self.critics]).min(0).values

    @torch.no_grad()
    def q_distribution(self, obs: Any, act: Any) -> Tuple[np.ndarray, np.ndarray]:
        """(mean, std) of each critic's Gaussian value distribution, shape (n_critics, N)."""
        o = torch.as_tensor(np.asarray(obs, np.float32)).reshape(-1, self.obs_dim)
        a = np.asarray(act, np.float64).reshape(-1, self.act_dim)
        a = torch.as_tensor(2.0 * (a - self._act_low) / (self._act_high - self._act_low) - 1.0, dtype=torch.float32)
        out = [c(o, a) for c in self.critics]
        return torch.stack([m for m, _ in out]).numpy(), torch.stack([s for _, s in out]).numpy()

    def _targets(self, rew, obs2, done):
        """Returns (y_mean, y_sample) from the target policy and target critics (no grad)."""
        hp, g = self.hp, self.gen
        alpha = self._alpha_value()
        with torch.no_grad():
            a2, logp2 = self.policy_target.sample(obs2, g)  # a' ~ pi_phi'(s')  (target policy)
            means, samples = [], []
            for c in self.critics_target:
                m, s = c(obs2, a2)
                eps = torch.randn(m.shape, generator=g).clamp(-3.0, 3.0)
                means.append(m)
                samples.append(m + eps * s)  # z' = m' + clip(eps, -3, 3) sigma'
            if len(means) == 2:
                pick1 = means[0] < means[1]  # j = argmin_i m'_i  (twin value distribution learning)
                m_next = torch.where(pick1, means[0], means[1])
                z_next = torch.where(pick1, samples[0], samples[1])
            else:
                m_next, z_next = means[0], samples[0]
            cont = hp["gamma"] * (1.0 - done)
            y_mean = rew + cont * (m_next - alpha * logp2)
            y_sample = rew + cont * (z_next - alpha * logp2)
        return y_mean, y_sample

    def _update(self, batch) -> None:
        hp = self.hp
        obs, act, rew, obs2, done = batch
        it = self.n_updates + 1
        delayed = it % int(hp["delay_update"]) == 0
        y_mean, y_sample = self._targets(rew, obs2, done)

        outs = [c(obs, act) for c in self.critics]
        losses = []
        tau_b = hp["tau"] if hp["tau_b"] is None else hp["tau_b"]
        for i, (q, std) in enumerate(outs):
            if hp["version"] == 2:
                self.sigma_bar[i] = update_sigma_bar(self.sigma_bar[i], std, tau_b)
                losses.append(dsact_critic_loss(q, std, y_mean, y_sample, self.sigma_bar[i], hp["eps_b"],
                                                hp["td_bound_k"], hp["critic_loss"]))
            else:
                losses.append(dsac_v1_critic_loss(q, std, y_sample, hp["td_bound"], hp["eps_b"]))
        critic_loss = sum(losses)

        # actor and temperature gradients use the critics *before* this iteration's step (official order)
        actor_grads = None
        if delayed:
            a_new, logp = self.policy.sample(obs, self.gen)
            q_new = torch.stack([c(obs, a_new)[0] for c in self.critics]).min(0).values
            alpha = self._alpha_value()
            actor_loss = (alpha * logp - q_new).mean()
            actor_grads = torch.autograd.grad(actor_loss, list(self.policy.parameters()))
            alpha_loss = -self.log_alpha * (logp.detach() + self.target_entropy).mean()
            self.logs.update(actor_loss=float(actor_loss.detach()), entropy=float(-logp.detach().mean()))

        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if delayed:
            for p, gr in zip(self.policy.parameters(), actor_grads):
                p.grad = gr
            self.actor_opt.step()
            self.actor_opt.zero_grad(set_to_none=True)
            if hp["auto_alpha"]:
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
            for c, ct in zip(self.critics, self.critics_target):
                polyak(c, ct, hp["tau"])
            polyak(self.policy, self.policy_target, hp["tau"])
        self.logs.update(critic_loss=float(critic_loss.detach()), q_mean=float(outs[0][0].detach().mean()),
                         q_std=float(outs[0][1].detach().mean()), alpha=self._alpha_value())


class DSACv1(DSACT):
    """DSAC-v1: one distributional critic, sampled target for the mean, fixed TD bound ``td_bound``."""

    algo = "dsac-v1"
    _DEFAULTS = {**DSACT._DEFAULTS, "version": 1}

    def __init__(self, env: Any, seed: int = 0, **hp: Any):
        if hp.get("version", 1) != 1:
            raise ValueError("DSACv1 is version 1; use DSACT for version 2")
        super().__init__(env, seed=seed, **hp)


class SAC(_OffPolicyAgent):
    """Soft actor-critic (Haarnoja et al., 2018) with twin Q, target critics and automatic temperature.

    Same data schedule, replay, policy class and API as :class:`DSACT`.  Defaults follow
    stable-baselines3's SAC: ``hidden=(256, 256)`` ReLU, lr 3e-4 for everything,
    ``tau=0.005``, ``init_log_alpha=0`` (alpha=1), actor/temperature/targets updated
    every iteration (``delay_update=1``), a' from the online policy (no target policy).
    ``warmup`` / ``env_steps_per_update`` default to DSAC-T's schedule.
    """

    algo = "sac"
    _DEFAULTS = dict(
        hidden=(256, 256), activation="relu", lr_critic=3e-4, lr_actor=3e-4, lr_alpha=3e-4, gamma=0.99,
        tau=0.005, delay_update=1, batch_size=256, buffer_size=1_000_000, warmup=10_000,
        env_steps_per_update=20, reward_scale=1.0, init_log_alpha=0.0, target_entropy=None,
        auto_alpha=True, alpha=0.2, log_std_min=-20.0, log_std_max=2.0,
    )

    def _build(self) -> None:
        hp = self.hp
        mk = lambda: QCritic(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"])  # noqa: E731
        self.critics = nn.ModuleList([mk(), mk()])
        self.policy = TanhGaussianPolicy(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"],
                                         hp["log_std_min"], hp["log_std_max"])
        self.critics_target = nn.ModuleList([mk(), mk()])
        self.critics_target.load_state_dict(self.critics.state_dict())
        for p in self.critics_target.parameters():
            p.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(hp["init_log_alpha"])))
        self.critic_opt = _adam(self.critics.parameters(), hp["lr_critic"])
        self.actor_opt = _adam(self.policy.parameters(), hp["lr_actor"])
        self.alpha_opt = _adam([self.log_alpha], hp["lr_alpha"])

    def _modules(self):
        return {"critics": self.critics, "critics_target": self.critics_target, "policy": self.policy}

    def _optimizers(self):
        return {"critic": self.critic_opt, "actor": self.actor_opt, "alpha": self.alpha_opt}

    def _alpha_value(self) -> float:
        return float(self.log_alpha.detach().exp()) if self.hp["auto_alpha"] else float(self.hp["alpha"])

    @torch.no_grad()
    def _q_mean(self, obs, act):
        return torch.stack([c(obs, act) for c in self.critics]).min(0).values

    def _update(self, batch) -> None:
        hp = self.hp
        obs, act, rew, obs2, done = batch
        delayed = (self.n_updates + 1) % int(hp["delay_update"]) == 0
        alpha = self._alpha_value()
        with torch.no_grad():
            a2, logp2 = self.policy.sample(obs2, self.gen)
            q_next = torch.stack([c(obs2, a2) for c in self.critics_target]).min(0).values
            y = rew + hp["gamma"] * (1.0 - done) * (q_next - alpha * logp2)
        critic_loss = sum(0.5 * F.mse_loss(c(obs, act), y) for c in self.critics)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if delayed:
            a_new, logp = self.policy.sample(obs, self.gen)
            q_new = torch.stack([c(obs, a_new) for c in self.critics]).min(0).values
            actor_loss = (alpha * logp - q_new).mean()
            grads = torch.autograd.grad(actor_loss, list(self.policy.parameters()))
            for p, gr in zip(self.policy.parameters(), grads):
                p.grad = gr
            self.actor_opt.step()
            self.actor_opt.zero_grad(set_to_none=True)
            if hp["auto_alpha"]:
                alpha_loss = -self.log_alpha * (logp.detach() + self.target_entropy).mean()
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
            for c, ct in zip(self.critics, self.critics_target):
                polyak(c, ct, hp["tau"])
        self.logs.update(critic_loss=float(critic_loss.detach()), alpha=self._alpha_value())


class TD3(_OffPolicyAgent):
    """TD3 (Fujimoto et al., 2018): twin Q critics, target policy smoothing, delayed actor and target updates.

    Same data schedule, replay, critics (:class:`QCritic`), API and checkpoints as the other agents;
    the actor is :class:`DeterministicPolicy`.  Per gradient iteration::

        a' = clip(pi'(s') + clip(N(0, target_noise^2), -target_noise_clip, target_noise_clip), -1, 1)
        y  = r + gamma (1 - d) min_i Q'_i(s', a')
        L_Q = sum_i mean (Q_i(s, a) - y)^2                     (every iteration)
        L_pi = -mean Q_1(s, pi(s))                              (every ``delay_update`` iterations,
                                                                 then Polyak of critics and actor)

    Defaults are the TD3 paper's / stable-baselines3's: lr 1e-3, tau 0.005, ``delay_update=2``,
    target noise 0.2 clipped at 0.5, batch 256; exploration noise N(0, 0.1^2) in the tanh action
    space [-1, 1] (SB3 adds none by default; the paper uses 0.1); 2x256 ReLU networks (the authors'
    updated code; SB3 uses 400-300).  ``warmup`` / ``env_steps_per_update`` default to DSAC-T's schedule.
    """

    algo = "td3"
    _DEFAULTS = dict(
        hidden=(256, 256), activation="relu", lr_critic=1e-3, lr_actor=1e-3, gamma=0.99, tau=0.005,
        delay_update=2, batch_size=256, buffer_size=1_000_000, warmup=10_000, env_steps_per_update=20,
        reward_scale=1.0, action_noise=0.1, target_noise=0.2, target_noise_clip=0.5,
    )

    def _validate_hp(self) -> None:
        super()._validate_hp()
        for key in ("action_noise", "target_noise", "target_noise_clip"):
            if self.hp[key] < 0:
                raise ValueError(f"td3: {key} must be >= 0, got {self.hp[key]}")

    def _build(self) -> None:
        hp = self.hp
        mk = lambda: QCritic(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"])  # noqa: E731
        mkp = lambda: DeterministicPolicy(self.obs_dim, self.act_dim, hp["hidden"], hp["activation"],  # noqa: E731
                                          hp["action_noise"])
        self.critics = nn.ModuleList([mk(), mk()])
        self.policy = mkp()
        self.critics_target = nn.ModuleList([mk(), mk()])
        self.critics_target.load_state_dict(self.critics.state_dict())
        self.policy_target = mkp()
        self.policy_target.load_state_dict(self.policy.state_dict())
        for p in [*self.critics_target.parameters(), *self.policy_target.parameters()]:
            p.requires_grad_(False)
        self.log_alpha = None
        self.critic_opt = _adam(self.critics.parameters(), hp["lr_critic"])
        self.actor_opt = _adam(self.policy.parameters(), hp["lr_actor"])

    def _modules(self):
        return {"critics": self.critics, "critics_target": self.critics_target,
                "policy": self.policy, "policy_target": self.policy_target}

    def _optimizers(self):
        return {"critic": self.critic_opt, "actor": self.actor_opt}

    @torch.no_grad()
    def _q_mean(self, obs, act):
        return torch.stack([c(obs, act) for c in self.critics]).min(0).values

    @torch.no_grad()
    def _target(self, rew, obs2, done) -> torch.Tensor:
        hp = self.hp
        a = self.policy_target.deterministic(obs2)
        noise = (torch.randn(a.shape, generator=self.gen) * hp["target_noise"]).clamp(
            -hp["target_noise_clip"], hp["target_noise_clip"])
        a2 = (a + noise).clamp(-1.0, 1.0)
        q_next = torch.stack([c(obs2, a2) for c in self.critics_target]).min(0).values
        return rew + hp["gamma"] * (1.0 - done) * q_next

    def _update(self, batch) -> None:
        hp = self.hp
        obs, act, rew, obs2, done = batch
        delayed = (self.n_updates + 1) % int(hp["delay_update"]) == 0
        y = self._target(rew, obs2, done)
        critic_loss = sum(F.mse_loss(c(obs, act), y) for c in self.critics)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if delayed:
            actor_loss = -self.critics[0](obs, self.policy.deterministic(obs)).mean()
            grads = torch.autograd.grad(actor_loss, list(self.policy.parameters()))
            for p, gr in zip(self.policy.parameters(), grads):
                p.grad = gr
            self.actor_opt.step()
            self.actor_opt.zero_grad(set_to_none=True)
            for c, ct in zip(self.critics, self.critics_target):
                polyak(c, ct, hp["tau"])
            polyak(self.policy, self.policy_target, hp["tau"])
            self.logs.update(actor_loss=float(actor_loss.detach()))
        self.logs.update(critic_loss=float(critic_loss.detach()))


_ALGOS = {"dsac-t": DSACT, "dsac-v1": DSACv1, "sac": SAC, "td3": TD3}
Agent = _OffPolicyAgent
