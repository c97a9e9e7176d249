"""Every use of Optuna's private names (a leading underscore), and of the system-attribute
keys Optuna writes, in one place: Optuna may rename them in any minor release, so each
access says why no public API does the job. The range tested is in pyproject.toml.
"""
from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState


def reseed(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    """Reseed a sampler's random streams with `seed`. The public `reseed_rng()` draws a fresh
    random seed; reproducible draws per trial need a chosen one. Optuna's samplers keep a
    LazyRandomState in `_rng`; TPE draws its start-up trials from a `_random_sampler` of its own."""
    for holder in (sampler, getattr(sampler, "_random_sampler", None)):
        lazy = getattr(holder, "_rng", None)
        if lazy is not None:
            lazy.rng.seed(seed)


class GridHook(optuna.samplers.GridSampler):
    """GridSampler with its choice of free grid points replaced by `free_points`.

    `_get_unvisited_grid_ids` is the one place GridSampler decides which points are left (both
    when sampling and when deciding to stop the study); there is no public hook for it.
    """

    def free_points(self, trials: list[FrozenTrial]) -> list[int]:
        raise NotImplementedError

    def n_points(self) -> int:
        # `_n_min_trials`: the number of grid points, which GridSampler keeps only privately
        return self._n_min_trials

    def same_grid(self, trial: FrozenTrial) -> bool:
        """`trial` has a point of this sampler's grid. GridSampler records the grid a trial was
        drawn from in the system attribute "search_space" and compares it with
        `_same_search_space` (NaN-aware), which has no public counterpart."""
        return "grid_id" in trial.system_attrs and self._same_search_space(trial.system_attrs.get("search_space", {}))

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        # `study._storage.get_all_trials(study._study_id)`, as GridSampler itself reads them:
        # `study.get_trials()` is filtered on the study HyperbandPruner hands to the sampler
        return self.free_points(study._storage.get_all_trials(study._study_id, deepcopy=False))


def grid_point(trial: FrozenTrial) -> int | None:
    """The grid point of `trial`: GridSampler keeps it in the system attribute "grid_id" and has
    no public reader."""
    return trial.system_attrs.get("grid_id")


# GridSampler's system attributes: a re-run of a trial keeps its grid point
_GRID_KEYS = ("grid_id", "search_space")


def _experimental(call: Any, *args: Any) -> Any:
    """A public but experimental Optuna call, its ExperimentalWarning muted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return call(*args)


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials `trial` re-runs after their workers died, oldest first."""
    return list(_experimental(RetryHeartbeatStaleTrialCallback.retry_history, trial))


def retried_trial_number(trial: FrozenTrial) -> int | None:
    """The number of the trial that `trial` re-runs after its worker died; None if none."""
    return _experimental(RetryHeartbeatStaleTrialCallback.retried_trial_number, trial)


def queue_copy(study: optuna.Study, trial: FrozenTrial, user_attrs: dict[str, Any], *, max_retry: int | None) -> bool:
    """Queue a WAITING copy of `trial` (same values, same grid point) with `user_attrs`.

    `max_retry` set: a retry after a dead worker, counted in the retry history as Optuna's
    heartbeat (RetryHeartbeatStaleTrialCallback) counts it, at most `max_retry` times (False:
    not queued). None: a re-run that does not count (Ctrl-C), the history carried over.

    The history is read with the callback's public readers but written under its keys
    ("failed_trial", "retry_history") by hand: the callback itself always counts a retry and
    copies the trial's user attributes (the dead worker's record, its failure reason) onto
    the re-run.
    """
    history = retry_history(trial)
    system = {k: trial.system_attrs[k] for k in _GRID_KEYS if k in trial.system_attrs}
    if max_retry is not None:
        if len(history) >= max_retry:
            return False
        history.append(trial.number)
    if history:
        first = retried_trial_number(trial)
        system |= {"failed_trial": trial.number if first is None else first, "retry_history": history}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs=system, user_attrs=user_attrs,
    ))
    return True


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (`_trial_id`): what the storage is addressed by, and the
    `vaebench.optuna_trial_id` tag that finds a trial's row in the database."""
    return trial._trial_id


def fail(study: optuna.Study, trial: FrozenTrial, key: str, reason: str) -> bool:
    """Mark a RUNNING trial of any process FAIL, with `reason` in user attribute `key`; False if
    another process finished it first. Through `study._storage`: `Trial.set_user_attr` exists
    only on the process's own live Trial, and `study.tell` would also run the sampler's
    `after_trial`, which may stop this process's `optimize` (GridSampler does when the grid
    looks exhausted); Optuna's own `fail_stale_trials` writes the storage directly too."""
    try:
        study._storage.set_trial_user_attr(trial_id(trial), key, reason)
        return bool(study._storage.set_trial_state_values(trial_id(trial), TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False
