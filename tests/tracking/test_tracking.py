"""tracking.py on a real MLflow SQLite store: batched, buffered metric writes; the one owner of tag names."""
from __future__ import annotations

from pathlib import Path

import pytest

from vaebench import tracking


@pytest.fixture
def tracker(tmp_path: Path) -> tracking.StudyTracker:
    tracking.quiet()
    return tracking.StudyTracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "t")


def history(run: tracking.TrialRun, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in run.client.get_metric_history(run.run_id, key))


def test_buffered_epochs_are_written_together_with_their_steps(tracker: tracking.StudyTracker) -> None:
    parent = tracker.create_parent(tags={}, params={})
    run = tracker.start_trial(parent, 0, "t000", {})
    run.flush_s = 3600.0  # nothing is due before the trial ends
    run.log_metrics({"val_elbo": -120.0, "train_loss": 125.0}, step=1, buffered=True)
    run.log_metrics({"val_elbo": -110.0, "train_loss": float("nan")}, step=2, buffered=True)
    assert history(run, "val_elbo") == []  # held, not yet written
    run.finish("COMPLETE")
    assert history(run, "val_elbo") == [(1, -120.0), (2, -110.0)]
    assert history(run, "train_loss") == [(1, 125.0)]  # non-finite values are never logged
    assert run.client.get_run(run.run_id).info.status == "FINISHED"


def test_buffered_epochs_are_written_once_flush_s_has_passed(tracker: tracking.StudyTracker) -> None:
    run = tracker.start_trial(tracker.create_parent(tags={}, params={}), 0, "t000", {})
    run.flush_s = 0.0
    run.log_metrics({"val_elbo": -120.0}, step=1, buffered=True)
    assert history(run, "val_elbo") == [(1, -120.0)]


def test_an_unbuffered_call_writes_what_is_held_with_it(tracker: tracking.StudyTracker) -> None:
    run = tracker.start_trial(tracker.create_parent(tags={}, params={}), 0, "t000", {})
    run.flush_s = 3600.0
    run.log_metrics({"val_elbo": -120.0}, step=1, buffered=True)
    run.log_metrics({"test_elbo": -121.0}, step=1)
    assert history(run, "val_elbo") == [(1, -120.0)] and history(run, "test_elbo") == [(1, -121.0)]


def test_tag_names_and_mlflow_writes_live_in_tracking_only() -> None:
    """Every `vaebench.*` run tag is named in tracking/runs.py; no other module writes to MLflow."""
    import re

    package = Path(tracking.__file__).parents[1]
    for path in package.rglob("*.py"):
        if path.relative_to(package).as_posix() == "tracking/runs.py" or path.parent.name == "search" and path.name == "attrs.py":
            continue  # search/attrs.py names Optuna attributes, not MLflow tags
        text = "\n".join(line for line in path.read_text().splitlines() if "ENTRY_POINT_GROUP =" not in line)
        assert not re.search(r"[\"']vaebench\.[a-z_]+[\"']", text), path  # models/plugins.py's entry-point group is no tag
        writes = r"\b(client|mlflow(\.[a-z]+)*)\.(set_tags?|log_\w+|set_terminated|create_\w+|delete_run|update_run)\("
        assert not re.search(writes, text), path


def test_every_state_has_one_mlflow_status() -> None:
    assert set(tracking.STATUS.values()) == {"RUNNING", "FINISHED", "FAILED", "KILLED"}
    assert tracking.STATUS["PRUNED"] == tracking.STATUS["COMPLETE"] == "FINISHED"
