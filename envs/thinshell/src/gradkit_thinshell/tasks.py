"""Manipulation tasks: a scene, a horizon and a differentiable reward of the state trajectory.

* ``separate`` - two stacked sheets on the table; a spherical pad presses the top sheet and drags it.
  Reward (ThinShellLab "separating"): mean x-displacement of the top sheet minus that of the bottom sheet.
* ``lift`` - a sheet held at two opposite edges by two grippers carries a block; reward = minus the
  distance of the block's centre to a target (its start + ``target_offset``).
* ``fold`` - a sheet on the table; a gripper holds one edge; reward = minus the mean squared error of
  the signed dihedral angles on the middle crease row to a target angle (negative = the held edge folds
  up and over; with bending plasticity, the
  crease stays after the gripper lets go).
* ``sliding`` - a sheet thrown along the table decelerates by friction (inverse design of ``mu_table``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

from .mesh import DTYPE, make_block, make_sheet
from .sim import START_CLEARANCE, Pad, Scene, State, ThinShellSim


@dataclass
class Task:
    name: str
    sim: ThinShellSim
    horizon: int
    reward_fn: Callable[["Task", List[State]], torch.Tensor]
    info: dict = field(default_factory=dict)

    def reward(self, states: List[State]) -> torch.Tensor:
        return self.reward_fn(self, states)

    @property
    def action_dim(self) -> int:
        return self.sim.action_dim

    def rollout_reward(self, actions: torch.Tensor, params=None, state: Optional[State] = None) -> torch.Tensor:
        """Differentiable reward of the rollout under ``actions`` (horizon, n_pads, 3) in metres."""
        return self.reward(self.sim.rollout(actions, state=state, params=params))


def _sim_kwargs(defaults: dict, kw: dict) -> dict:
    out = dict(defaults)
    out.update(kw)
    return out


#: horizontal offset (in cells) of a body resting on a sheet, chosen so that vertices project into triangle interiors
TIE_SHIFT = (0.13, 0.31)


# ----------------------------------------------------------------------------- separate
def _separate_reward(task, states):
    bot, top = task.info["bottom"], task.info["top"]
    x0, xT = states[0].x, states[-1].x
    return (xT[top, 0] - x0[top, 0]).mean() - (xT[bot, 0] - x0[bot, 0]).mean()


def separate_task(n: int = 6, size: float = 0.04, horizon: int = 30, radius: float = 0.012, gap: float = 1e-3,
                  press: Optional[float] = None, **sim_kw) -> Task:
    """``gap``: the pad starts this far above the top sheet's contact band (no contact: the reward's gradient at the
    zero trajectory is exactly 0).  ``press`` (m, replaces ``gap``): the pad starts in contact instead, lowered until
    the top-sheet vertex nearest to it is ``press`` inside the contact distance."""
    eps = sim_kw.get("eps_contact", 4e-4) + START_CLEARANCE  # off the contact kink (see sim.START_CLEARANCE)
    bottom = make_sheet(n, size, origin=(0.0, 0.0, eps), name="bottom")
    # the top sheet is shifted by a fraction of a cell so that no vertex lies exactly over a vertex or an edge of the
    # other sheet (there the nearest-face choice is a tie and the rollout is not differentiable)
    dx = size / (n - 1)
    top = make_sheet(n, size, origin=(TIE_SHIFT[0] * dx, TIE_SHIFT[1] * dx, 2 * eps), name="top")
    cx, cy = size / 2 + TIE_SHIFT[0] * dx, size / 2 + TIE_SHIFT[1] * dx  # over the top sheet's centre
    zc = 2 * eps + eps + radius + gap
    if press is not None:
        eps_c = sim_kw.get("eps_contact", 4e-4)
        if not (isinstance(press, (int, float)) and 0 < press < eps_c):
            raise ValueError(f"press must be in (0, eps_contact={eps_c}), got {press!r}")
        rho = float((top.X[:, :2] - torch.tensor([cx, cy], dtype=DTYPE)).norm(dim=1).min())
        reach = radius + eps_c - press
        if rho >= reach:
            raise ValueError(f"a pad of radius {radius} cannot reach the top sheet (nearest vertex {rho:.4f} m away)")
        zc = 2 * eps + (reach**2 - rho**2) ** 0.5
    pad = Pad("sphere", (cx, cy, zc), radius)
    # the pad touches the top sheet only: with vertex-based pad contact it could otherwise pass between the coarse top
    # sheet's vertices and press the bottom sheet directly
    scene = Scene(bodies=[bottom, top], pads=[pad], contacts=[(0, 1, "mu_cloth")], pad_contacts=[(0, 1)])
    sim = ThinShellSim(scene, **_sim_kwargs(dict(mu_pad=1.0, mu_cloth=0.1, mu_table=0.6), sim_kw))
    info = dict(bottom=sim.body_verts[0], top=sim.body_verts[1])
    return Task("separate", sim, horizon, _separate_reward, info)


# ----------------------------------------------------------------------------- lift
def _lift_reward(task, states):
    blk = task.info["block"]
    c0 = states[0].x[blk].mean(0)
    cT = states[-1].x[blk].mean(0)
    target = c0 + torch.as_tensor(task.info["target_offset"], dtype=DTYPE)
    return -torch.linalg.vector_norm(cT - target)


def lift_task(n: int = 6, size: float = 0.04, horizon: int = 30, target_offset=(0.0, 0.0, 0.01),
              block_size=(0.012, 0.012, 0.006), block_res=(3, 3, 2), **sim_kw) -> Task:
    eps = sim_kw.get("eps_contact", 4e-4) + START_CLEARANCE
    sheet = make_sheet(n, size, origin=(0.0, 0.0, eps), name="sheet")
    bz = eps + eps + block_size[2] / 2
    dx = size / (n - 1)  # off-centre by a fraction of a cell: no block vertex over a sheet vertex or edge
    block = make_block(block_size, block_res, center=(size / 2 + TIE_SHIFT[0] * dx, size / 2 + TIE_SHIFT[1] * dx, bz),
                       name="block")
    hw = 0.003
    pads = [Pad("box", (0.0, size / 2, eps), (hw, size / 2, hw)), Pad("box", (size, size / 2, eps), (hw, size / 2, hw))]
    left = [iy * n for iy in range(n)]
    right = [iy * n + n - 1 for iy in range(n)]
    scene = Scene(bodies=[sheet, block], pads=pads, attachments=[(0, left, 0), (0, right, 1)],
                  contacts=[(0, 1, "mu_obj")])
    sim = ThinShellSim(scene, **_sim_kwargs(dict(mu_obj=1.0, mu_table=0.3, mu_pad=0.0), sim_kw))
    return Task("lift", sim, horizon, _lift_reward, dict(block=sim.body_verts[1], target_offset=target_offset))


# ----------------------------------------------------------------------------- fold
def _fold_reward(task, states):
    th = task.sim.hinge_angles(states[-1].x)[task.info["crease"]]
    return -((th - task.info["target_angle"]) ** 2).mean()


def fold_task(n: int = 7, size: float = 0.04, horizon: int = 30, target_angle: float = -1.2,
              yield_angle: Optional[float] = 0.3, **sim_kw) -> Task:
    if n % 2 == 0:
        raise ValueError(f"fold task needs an odd n so that a vertex row lies on the crease, got {n}")
    eps = sim_kw.get("eps_contact", 4e-4) + START_CLEARANCE
    sheet = make_sheet(n, size, origin=(0.0, 0.0, eps), name="sheet")
    hw = 0.003
    pad = Pad("box", (size, size / 2, eps), (hw, size / 2, hw))
    right = [iy * n + n - 1 for iy in range(n)]
    scene = Scene(bodies=[sheet], pads=[pad], attachments=[(0, right, 0)])
    sim = ThinShellSim(scene, **_sim_kwargs(dict(Kb=20.0, mu_table=0.5, mu_pad=0.0, yield_angle=yield_angle), sim_kw))
    # hinges on the crease column x = size / 2 (both endpoints on it)
    X = sim.X0
    mid = size / 2
    e = sim.hinge_idx[:, :2]
    on = ((X[e[:, 0], 0] - mid).abs() < 1e-9) & ((X[e[:, 1], 0] - mid).abs() < 1e-9)
    crease = torch.nonzero(on).reshape(-1)
    return Task("fold", sim, horizon, _fold_reward, dict(crease=crease, target_angle=target_angle))


# ----------------------------------------------------------------------------- sliding (inverse design)
def sliding_task(n: int = 4, size: float = 0.03, horizon: int = 20, v0=(0.3, 0.0, 0.0), **sim_kw) -> Task:
    eps = sim_kw.get("eps_contact", 4e-4) + START_CLEARANCE
    sheet = make_sheet(n, size, origin=(0.0, 0.0, eps), name="sheet")
    sim = ThinShellSim(Scene(bodies=[sheet]), **_sim_kwargs(dict(mu_table=0.4), sim_kw))
    v = torch.tensor(v0, dtype=DTYPE).expand(sim.n_vertices, 3).clone()

    def reward(task, states):
        return (states[-1].x[:, 0] - states[0].x[:, 0]).mean()

    task = Task("sliding", sim, horizon, reward, dict(v0=v))
    return task


def sliding_initial_state(task: Task) -> State:
    s = task.sim.initial_state()
    return State(s.x, task.info["v0"].clone(), s.theta_bar, s.pads)


TASKS = {"separate": separate_task, "lift": lift_task, "fold": fold_task, "sliding": sliding_task}


def make_task(name: str, **kw) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown thin-shell task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](**kw)
