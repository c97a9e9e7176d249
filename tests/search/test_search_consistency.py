"""search.consistency: a study whose Optuna storage or MLflow store was lost or emptied is
refused in one line that says what to do, before anything is written; --fresh starts over."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import load, mlflow_runs, refused_line, run_cli, seeded, write_study
from vaebench import search


def finished_study(folder: Path, template: Path) -> Path:
    """A 2-trial study run to the end in `folder`; returns its study file."""
    seeded(folder, template)
    study_file = write_study(folder, "lost", {"seed": [0, 1]})
    code, _, err = run_cli(folder, study_file)
    assert code == 0, err
    return study_file


def runs(folder: Path) -> list[tuple[str, str, int]]:
    """(run id, status, end time) of every run of the study."""
    parents, children = mlflow_runs(folder, "lost")
    return sorted((r.info.run_id, r.info.status, r.info.end_time) for r in parents + children)


@pytest.mark.slow  # two studies trained in this process
@pytest.mark.parametrize("damage", ["delete", "empty"])
def test_a_lost_optuna_storage_does_not_rerun_a_tracked_study(
    folder: Path, mlflow_template: Path, damage: str
) -> None:
    study_file = finished_study(folder, mlflow_template)
    parents, _ = mlflow_runs(folder, "lost")
    tracked = runs(folder)
    (folder / "optuna.db").unlink()
    if damage == "empty":
        (folder / "optuna.db").write_bytes(b"")
    code, out, err = run_cli(folder, study_file)
    assert (code, out, len(err.splitlines())) == (2, "", 1), err
    assert f"MLflow (sqlite:///{folder / 'mlflow.db'}) holds its parent run {parents[0].info.run_id} and 2 trial runs" in err
    assert "pass --fresh to start over" in err
    assert (folder / "optuna.db").exists() == (damage == "empty")
    assert runs(folder) == tracked  # nothing tracked twice, nothing reopened

    code, _, err = run_cli(folder, study_file, "--fresh")
    assert code == 0, err
    new_parents, new_children = mlflow_runs(folder, "lost")
    assert len(new_parents) == 2 and len(new_children) == 4
    fresh = next(p.info.run_id for p in new_parents if p.info.run_id != parents[0].info.run_id)
    assert load(folder, "lost").user_attrs[search.PARENT_ATTR] == fresh
    assert sum(c.data.tags["mlflow.parentRunId"] == fresh for c in new_children) == 2


@pytest.mark.slow  # two studies trained in this process
def test_a_lost_mlflow_store_is_named_for_run_report_and_leaderboard(folder: Path, mlflow_template: Path) -> None:
    study_file = finished_study(folder, mlflow_template)
    parent = load(folder, "lost").user_attrs[search.PARENT_ATTR]
    shutil.rmtree(folder / "results")
    (folder / "mlflow.db").unlink()
    code, out, err = run_cli(folder, study_file)
    assert (code, out, len(err.splitlines())) == (2, "", 1), err
    assert f"holds 2 trials of it under MLflow parent run {parent}, which sqlite:///{folder / 'mlflow.db'} does not hold" in err
    assert "--fresh" in err and not (folder / "mlflow.db").exists()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    for command in ("report", "leaderboard"):
        line = refused_line(folder, command, "--study", "lost", "--tracking-uri", uri)
        assert f"MLflow parent run {parent}, which {uri} does not hold" in line, line
        assert "vaebench run --study lost --fresh" in line
    assert not (folder / "mlflow.db").exists() and not (folder / "results").exists()

    again = folder / "again"  # a new, empty store (new paths: this process keeps its MLflow stores open)
    again.mkdir()
    shutil.copy(folder / "optuna.db", again / "optuna.db")
    seeded(again, mlflow_template)
    assert "does not hold" in run_cli(again, study_file)[2]
    code, _, err = run_cli(again, study_file, "--fresh")
    assert code == 0, err
    parents, children = mlflow_runs(again, "lost")
    assert len(parents) == 1 and len(children) == 2
    assert [t.state.name for t in load(again, "lost").trials] == ["COMPLETE", "COMPLETE"]


def test_report_of_an_unknown_study_creates_no_store(folder: Path) -> None:
    for command in ("report", "leaderboard"):
        line = refused_line(folder, command, "--study", "nosuch", "--tracking-uri", "sqlite:///mlflow.db")
        assert line == "vaebench: error: --tracking-uri sqlite:///mlflow.db: no MLflow store there (mlflow.db does not exist)"
    assert list(folder.iterdir()) == []


def test_a_parent_run_made_between_the_two_reads_is_not_taken_for_lost(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that reads MLflow just before another worker makes the parent run and its first
    trial sees the trial in Optuna under a parent it did not see: it reads MLflow again."""
    from vaebench.search import consistency

    finished_study(folder, mlflow_template)
    real, reads = consistency.mlflow_parents, []

    def first_read_too_early(uri: str, name: str) -> tuple[list[str], int]:
        reads.append(name)
        return ([], 0) if len(reads) == 1 else real(uri, name)

    monkeypatch.setattr(consistency, "mlflow_parents", first_read_too_early)
    side = consistency.check_before_run("lost", f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}")
    assert side.trials == 2 and len(reads) == 2
