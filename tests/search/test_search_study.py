"""search.study: the one parent run that all workers of a study nest their trials under."""
from __future__ import annotations

from pathlib import Path

from helpers import mlflow_runs, worker_on_journal
from vaebench import search


def test_workers_racing_to_create_the_parent_run_converge_on_one(folder: Path, mlflow_template: Path) -> None:
    """Across machines no lock helps: a worker that created its parent run after a rival did
    (the rival has not stored its id yet) adopts the rival's run and deletes its own."""
    worker = worker_on_journal(folder, mlflow_template, "race", parent=False)
    spec, study, tracker = worker.spec, worker.study, worker.tracker
    rival = tracker.create_parent(tags={}, params={})
    assert search.parent_run(spec, study, tracker, "race.yaml") == rival
    assert study.user_attrs[search.PARENT_ATTR] == rival
    parents, _ = mlflow_runs(folder, "race")
    assert [p.info.run_id for p in parents] == [rival]
    assert search.parent_run(spec, study, tracker, "race.yaml") == rival  # the rival, resuming, keeps it
