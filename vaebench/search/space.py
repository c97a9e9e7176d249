"""The search space in Optuna: registered samplers and pruners, and sampling one trial's values."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from vaebench.config import Range, StudySpec
from vaebench.search.attrs import DONE
from vaebench.search.internals import GridHook, grid_point, reseed


def _trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _PerTrialSeed:
    """Reseeds a sampler's random streams from (study seed, trial number) before each trial.

    Workers of one study share its seed: seeded once, they would all draw the same values.
    Seeded per trial, trial n draws the same values in every run and different ones from
    trial m (TPE still conditions on the trials finished so far).
    """

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)  # type: ignore[call-arg]
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reseed(self, _trial_seed(self._base_seed, trial.number))  # type: ignore[arg-type]
        super().before_trial(study, trial)  # type: ignore[misc]


class RandomSampler(_PerTrialSeed, optuna.samplers.RandomSampler):
    pass


class TPESampler(_PerTrialSeed, optuna.samplers.TPESampler):
    pass


class GridSampler(_PerTrialSeed, GridHook):
    """Optuna's GridSampler, but a grid point is free again when its trial failed elsewhere
    (a dead worker, Ctrl-C, a full disk in an earlier run), never when it failed in this
    process (it would fail again), and a queued (WAITING) re-run holds its point."""

    def __init__(self, space: dict[str, Any], seed: int) -> None:
        super().__init__(space, seed=seed)
        self.failed_here: set[int] = set()  # trial numbers that raised or diverged in this process

    def free_points(self, trials: list[FrozenTrial]) -> list[int]:
        """Grid points with no finished, running or queued trial, nor one failed here."""
        taken = set()
        for t in trials:
            if not self.same_grid(t):
                continue
            if t.state in (*DONE, TrialState.RUNNING, TrialState.WAITING) or t.number in self.failed_here:
                taken.add(grid_point(t))
        return sorted(set(range(self.n_points())) - taken)


class AnyPruner(optuna.pruners.BasePruner):
    """Prunes a trial when any of its pruners would: a lenient rule for the first epochs and a
    stricter one once the curves have settled (Optuna has no such combination built in)."""

    def __init__(self, *pruners: optuna.pruners.BasePruner) -> None:
        self.pruners = pruners

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return any(pruner.prune(study, trial) for pruner in self.pruners)


SAMPLERS: dict[str, Callable[[StudySpec], optuna.samplers.BaseSampler]] = {
    "grid": lambda s: GridSampler({k: list(s.search.choices(k)) for k in s.search.space}, seed=s.seed),
    "tpe": lambda s: TPESampler(seed=s.seed),
    "random": lambda s: RandomSampler(seed=s.seed),
}
# Trials report their val metric after every epoch, as step = epoch (1, 2, ...); the first
# trials run whole, so the pruner has curves to compare with. Optuna's median and percentile
# pruners compare a trial's best value so far with the finished (not pruned) trials' values
# at the same epoch.
PRUNERS: dict[str, Callable[[StudySpec], optuna.pruners.BasePruner]] = {
    "none": lambda s: optuna.pruners.NopPruner(),
    # after 5 finished trials, stop one below their median at the same epoch, from epoch 1
    "median": lambda s: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    # after 5 finished trials, stop one outside their best quarter at the same epoch, from
    # epoch 3: later and stricter than `median`, as early curves cross (large learning rates
    # lead after an epoch or two and end behind)
    "percentile": lambda s: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=3),
    # `median`, and from epoch 5 also one outside the finished trials' best third: as lenient
    # as `median` while early curves cross, stricter once they have settled
    "staged": lambda s: AnyPruner(
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        optuna.pruners.PercentilePruner(100 / 3, n_startup_trials=5, n_warmup_steps=5)),
    # successive halving in brackets of 1, 3, 9, ... epochs up to the study's epochs
    "hyperband": lambda s: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=s.train.epochs, reduction_factor=3),
}


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The study of `spec` in `storage`, created or loaded, with its sampler and pruner."""
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=SAMPLERS[spec.search.sampler](spec),
        pruner=PRUNERS[spec.search.pruner](spec),
        direction=spec.search.direction,
        load_if_exists=True,
    )


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Lists are categorical choices (grid points); ranges are float/int distributions."""
    params: dict[str, Any] = {}
    for key, dom in spec.search.space.items():
        if isinstance(dom, Range):
            if dom.type == "int":
                params[key] = trial.suggest_int(key, int(dom.low), int(dom.high), log=dom.log)
            else:
                params[key] = trial.suggest_float(key, dom.low, dom.high, log=dom.log)
        else:
            params[key] = trial.suggest_categorical(key, list(spec.search.choices(key)))
    return spec.search.values(params)
