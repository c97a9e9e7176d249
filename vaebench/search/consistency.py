"""Before a run or a report: the Optuna storage and the MLflow store must tell the same story
about a study.

One store lost or emptied beside the other would otherwise go unnoticed: a deleted optuna.db
beside a tracked study re-runs every trial under a second parent run; a deleted mlflow.db
beside a finished Optuna study leaves trials pointing at runs that are gone. Both are refused
in one line that says what to do. Everything here reads; nothing is created (a store file
that is not there is read as empty, never opened).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from mlflow import MlflowClient

from vaebench import tracking as tk
from vaebench.errors import InputError
from vaebench.search.attrs import PARENT_ATTR, SETTINGS_ATTR
from vaebench.search.storage import journal_path, open_storage
from vaebench.stores import redact, short_reason, sqlite_path


@dataclass
class OptunaSide:
    """What the Optuna storage holds of a study: whether it exists, its trials, its parent run id,
    the settings it runs with (None: not recorded)."""

    exists: bool = False
    trials: int = 0
    parent_id: str | None = None
    settings: dict[str, Any] | None = None


def _missing_file(url: str) -> bool:
    """A local store file that is absent or empty: it holds nothing, and is not opened."""
    path = journal_path(url) or sqlite_path(url)
    return path is not None and (not path.exists() or path.stat().st_size == 0)


def optuna_side(storage_url: str, name: str) -> OptunaSide:
    if _missing_file(storage_url):
        return OptunaSide()
    storage = open_storage(storage_url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return OptunaSide()
    trials = len(storage.get_all_trials(study_id, deepcopy=False))
    attrs = storage.get_study_user_attrs(study_id)
    return OptunaSide(True, trials, attrs.get(PARENT_ATTR), attrs.get(SETTINGS_ATTR))


def mlflow_parents(tracking_uri: str, name: str) -> tuple[list[str], int]:
    """(ids of the study's parent runs, number of its trial runs) in the MLflow store; none
    when the store's file or the experiment is not there."""
    if _missing_file(tracking_uri):
        return [], 0
    try:
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            return [], 0
        runs = client.search_runs([experiment.experiment_id], f"tags.`{tk.STUDY}` = '{name}'", max_results=5000)
    except Exception as exc:  # noqa: BLE001 - a store MLflow cannot read is bad input
        raise InputError(f"tracking URI {redact(tracking_uri)}: cannot open ({short_reason(exc)})") from None
    parents = [r.info.run_id for r in runs if r.data.tags.get(tk.ROLE) == "study"]
    return parents, sum(r.data.tags.get(tk.ROLE) == "trial" for r in runs)


def check_before_run(name: str, storage_url: str, tracking_uri: str) -> OptunaSide:
    """Refuse a run that would duplicate tracked trials or nest them under a parent run that is
    gone. MLflow is read first: a worker creates the Optuna study before the parent run, so a
    parent seen there means its study was already in the storage."""
    parents, children = mlflow_parents(tracking_uri, name)
    side = optuna_side(storage_url, name)
    if not side.exists and parents:
        raise InputError(
            f"study {name}: the Optuna storage {redact(storage_url)} holds no trial of it, yet MLflow "
            f"({redact(tracking_uri)}) holds its parent run {parents[0]} and {children} trial runs (was the "
            f"Optuna storage deleted or emptied?); running it would repeat them: pass --fresh to start over "
            f"under a new parent run, or give the study a new name")
    if side.trials and side.parent_id and side.parent_id not in parents:
        # Read MLflow again: another worker may have made the parent run and its first trial
        # between the two reads, and it makes the run before it stores the run's id in Optuna.
        if side.parent_id not in mlflow_parents(tracking_uri, name)[0]:
            raise InputError(missing_parent(name, storage_url, tracking_uri, side)
                             + "; or pass --fresh to run it again from scratch (its Optuna trials are deleted)")
    return side


def missing_parent(name: str, storage_url: str, tracking_uri: str, side: OptunaSide) -> str:
    return (f"study {name}: the Optuna storage {redact(storage_url)} holds {side.trials} trials of it under "
            f"MLflow parent run {side.parent_id}, which {redact(tracking_uri)} does not hold (was mlflow.db "
            f"deleted, or is it another tracking URI?): pass the tracking URI the study ran with")


def check_tracked(name: str, storage_url: str, tracking_uri: str) -> None:
    """For a report: refuse, saying why, a study whose Optuna trials point at a parent run the
    MLflow store lacks. The Optuna storage only explains; one that cannot be read is skipped."""
    try:
        side = optuna_side(storage_url, name)
    except Exception:  # noqa: BLE001 - no Optuna storage to explain with: the report says what MLflow lacks
        return
    if side.trials and side.parent_id and side.parent_id not in mlflow_parents(tracking_uri, name)[0]:
        raise InputError(missing_parent(name, storage_url, tracking_uri, side)
                         + f", or run it again: vaebench run --study {name} --fresh")


def start_fresh(storage_url: str, name: str) -> None:
    """--fresh: delete the study's Optuna trials, so the run starts over under a new parent
    run (the old MLflow runs stay; reports read the newest parent run)."""
    if optuna_side(storage_url, name).exists:
        optuna.delete_study(study_name=name, storage=open_storage(storage_url))
