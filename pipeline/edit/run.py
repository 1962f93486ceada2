"""Per-call plumbing of a task: the clock, progress counted across stages, and the context (:class:`Run`) through
which a task inverts, measures curves, builds directions and windows, and runs the loop."""

from __future__ import annotations

import time

import torch

from ..ddim import Trajectory, invert
from ..progress import ProgressFn, report
from ..protocols import DiffusionOps
from ..rates import patch_directions
from .configs import EditConfig, check_for_model
from .curves import trajectory_curves
from .loop import MatchOutput, MatchPlan, match_curves
from .regions import seeded_subset


class _Clock:
    """Wall time per named stage."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.last
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.t0


class _Progress:
    """Counts units of work across stages (a stage is ``num_steps`` units, or a multiple) for the caller's callback."""

    def __init__(self, progress: ProgressFn | None, stages: int, steps: int) -> None:
        self.progress, self.total, self.steps, self.base = progress, stages * steps, steps, 0

    def stage(self, stages: int = 1) -> ProgressFn:
        base, self.base = self.base, self.base + stages * self.steps
        return lambda done, _total, desc: report(self.progress, base + done, self.total, desc)


class Run:
    """Per-call context: model, config, progress, cancel flag, clock."""

    def __init__(self, model: DiffusionOps, cfg: EditConfig, progress, cancel, inversions: int,
                 matches: int = 1) -> None:
        check_for_model(cfg, model)
        self.model, self.cfg, self.cancel = model, cfg, cancel
        self.clock = _Clock()
        passes = (1 + int(cfg.exact or cfg.relative)) * matches  # generation passes of the match_curves calls
        self.prog = _Progress(progress, inversions + passes + int(cfg.measure_curves), cfg.num_steps)
        self.gen = torch.Generator().manual_seed(int(cfg.seed))

    def invert(self, x0: torch.Tensor, desc: str = "DDIM inversion") -> Trajectory:
        traj = invert(self.model, x0, t_end=self.cfg.t_edit, num_steps=self.cfg.num_steps,
                      method=self.cfg.inversion, progress=_described(self.prog.stage(), desc), cancel=self.cancel,
                      return_trajectory=True)
        self.clock.lap("invert")
        return traj

    def curves(self, traj: Trajectory, v: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        c = trajectory_curves(self.model, traj, v, steps=steps)
        self.clock.lap("curves")
        return c

    def directions(self, idx: torch.Tensor) -> torch.Tensor:
        s, c = self.model.sample_size, self.model.channels
        return patch_directions((c, s, s), self.cfg.patch_size, indices=idx, dtype=self.model.dtype,
                                device=self.model.device)

    def subset(self, idx: torch.Tensor, k: int) -> torch.Tensor:
        return idx[seeded_subset(idx.numel(), k, self.gen)]

    def window(self, grid: torch.Tensor, default: tuple[int, int]) -> torch.Tensor:
        """(S+1,) {0, 1}: grid steps inside the active window (k = 0, the clean image, never)."""
        lo, hi = self.cfg.window if self.cfg.window is not None else default
        on = ((grid >= lo) & (grid <= hi)).to(self.model.dtype).to(self.model.device)
        on[0] = 0
        return on

    def match(self, plan: MatchPlan, round_trip: torch.Tensor | None = None) -> MatchOutput:
        out = match_curves(self.model, plan, self.cfg,
                           progress=self.prog.stage(1 + int(self.cfg.exact or self.cfg.relative)), cancel=self.cancel,
                           round_trip=round_trip)
        self.clock.lap("generate")
        return out


def _described(fn: ProgressFn, desc: str) -> ProgressFn:
    return lambda done, total, _desc: fn(done, total, desc)
