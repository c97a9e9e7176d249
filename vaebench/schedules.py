"""Learning-rate schedules by name: the learning rate of every epoch, from the study's `lr`.

A schedule is `fn(lr, **params) -> Schedule`; its keyword arguments (and their defaults) are
its parameters, set in a study file as `train.schedule: {name: staged, stages: 8}`. The
learning rate changes only between epochs, so a checkpoint at an epoch boundary (or inside
an epoch) resumes at the same rate: the epoch alone says where the schedule is.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Schedule:
    """Stages of (epochs, lr); the last stage of an open-ended schedule has epochs = None."""

    stages: tuple[tuple[int | None, float], ...]

    @property
    def total_epochs(self) -> int | None:
        """Epochs until the schedule ends; None when it never does (constant)."""
        if any(epochs is None for epochs, _ in self.stages):
            return None
        return sum(epochs for epochs, _ in self.stages)  # type: ignore[misc]

    def lr(self, epoch: int) -> float:
        """The learning rate of `epoch` (1-based)."""
        return self.stages[self.stage(epoch)][1]

    def stage(self, epoch: int) -> int:
        """The 0-based stage that `epoch` (1-based) belongs to."""
        end = 0
        for i, (epochs, _) in enumerate(self.stages):
            if epochs is None:
                return i
            end += epochs
            if epoch <= end:
                return i
        raise ValueError(f"epoch {epoch} is past the schedule's {end} epochs")

    def stage_ends(self, epochs: int) -> list[int]:
        """The epochs (1-based, at most `epochs`) that end a stage, and `epochs` itself."""
        ends, end = [], 0
        for n, _ in self.stages:
            if n is None:
                break
            end += n
            if end >= epochs:
                break
            ends.append(end)
        return ends + [epochs]


def constant(lr: float) -> Schedule:
    """The same learning rate for every epoch."""
    return Schedule(((None, lr),))


def staged(lr: float, stages: int = 8, growth: int = 3, decay: float = 10 ** (-1 / 7)) -> Schedule:
    """Stage i = 0 .. stages-1 runs growth**i epochs at lr * decay**i (Burda, Grosse &
    Salakhutdinov 2016: 3**i passes at 0.001 * 10**(-i/7), i = 0..7, 3,280 passes in all)."""
    if stages < 1 or growth < 1 or not 0 < decay <= 1:
        raise ValueError("staged needs stages >= 1, growth >= 1 and 0 < decay <= 1")
    return Schedule(tuple((growth**i, lr * decay**i) for i in range(stages)))


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "staged": staged,
}


def schedule_params(name: str) -> dict[str, Any]:
    """A schedule's parameters and their defaults, read from its signature."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}")
    params = inspect.signature(SCHEDULES[name]).parameters.values()
    return {p.name: p.default for p in params if p.name != "lr"}


def build(name: str, lr: float, **params: Any) -> Schedule:
    """The named schedule for base rate `lr`; unknown parameters are a ValueError."""
    known = schedule_params(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"schedule {name!r} takes {', '.join(sorted(known)) or 'no parameters'}, "
                         f"not {', '.join(unknown)}")
    schedule = SCHEDULES[name](lr, **params)
    if not all(math.isfinite(rate) and rate > 0 for _, rate in schedule.stages):
        raise ValueError(f"schedule {name!r} gives a learning rate that is not a positive number")
    return schedule
