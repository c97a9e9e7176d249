"""tracking.py on a real MLflow SQLite store: batched, buffered metric writes and URL redaction."""
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


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://me:s3cr:et@db.example:5432/optuna", "postgresql+psycopg://me:***@db.example:5432/optuna"),
    ("http://user:pw@mlflow.example:5000", "http://user:***@mlflow.example:5000"),
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("postgresql://me@db/optuna", "postgresql://me@db/optuna"),
    ("journal:runs/optuna.journal", "journal:runs/optuna.journal"),
])
def test_redact_hides_passwords_only(url: str, shown: str) -> None:
    assert tracking.redact(url) == shown


def test_store_errors_do_not_print_the_password() -> None:
    """A storage that cannot be reached is bad input; its message names the URL, password hidden."""
    from vaebench import search
    from vaebench.errors import InputError

    with pytest.raises(InputError) as info:
        search.check_storage("postgresql+psycopg://me:s3cret@127.0.0.1:1/optuna")
    assert "s3cret" not in str(info.value) and "me:***@127.0.0.1:1" in str(info.value)
    with pytest.raises(InputError) as info:
        tracking.check_tracking_uri("http://me:s3cret@127.0.0.1:1")
    assert "s3cret" not in str(info.value) and "me:***@127.0.0.1:1" in str(info.value)
