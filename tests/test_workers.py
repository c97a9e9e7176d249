"""Workers that die, get stopped, or run side by side: nothing lost, nothing duplicated.

Each test runs real `python -m vaebench run` processes on a tiny study (digits, an MLP with
32 hidden units, a 2-d latent) in a temp folder, then reads what Optuna and MLflow hold. A
run that only has to finish the study runs in this process (`run_cli`): it spares the
seconds a new process spends importing torch and MLflow. The helpers here are shared with
test_failures.py.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage

from conftest import REPO
from vaebench import cli, report, search  # noqa: F401 - report: imported now, an in-process run starts at once
from vaebench.config import load_study
from vaebench.tracking import StudyTracker

TIMEOUT_S = 120


def write_study(folder: Path, name: str, space: dict[str, Any], *, epochs: int = 1, sampler: str = "grid",
                n_trials: int | None = None, lr: float = 3e-3, batch_size: int = 128) -> Path:
    """A tiny study file `folder/name.yaml`."""
    search: dict[str, Any] = {"sampler": sampler, "objective": "val_elbo", "space": space}
    if n_trials is not None:
        search["n_trials"] = n_trials
    spec = {
        "name": name,
        "dataset": {"name": "digits"},
        "model": {"arch": "mlp", "objective": "beta_vae", "latent_dim": 2, "likelihood": "bernoulli",
                  "hidden": [32]},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr},
        "search": search,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def user_env() -> dict[str, str]:
    """The environment of conftest.vaebench: no MLflow overrides, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def spawn(cwd: Path, *args: str) -> subprocess.Popen:
    """`python -m vaebench ARGS` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "vaebench", *args], cwd=cwd, env=user_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out, err


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated mlflow.db: copied into a test folder, it spares each run the ~5 s
    of MLflow's schema migrations. (The SQLite worker test starts from nothing on purpose.)"""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    with contextlib.chdir(path.parent):  # MLflow roots the Default experiment's artifacts here
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def seeded(folder: Path, template: Path) -> Path:
    """`folder` with a copy of the template mlflow.db, its Default experiment's artifacts
    (an absolute path MLflow wrote) moved into `folder/mlruns`."""
    shutil.copy(template, folder / "mlflow.db")
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as conn, conn:
        conn.execute("update experiments set artifact_location = ? where experiment_id = 0",
                     (str(folder / "mlruns" / "0"),))
    return folder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp current folder; MLflow's tracking URI and torch's threads (process-wide) are put
    back afterwards."""
    import torch
    from mlflow.tracking._tracking_service import utils

    before, threads = utils._tracking_uri, torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    mlflow.set_tracking_uri(before)
    torch.set_num_threads(threads)


def run_cli(folder: Path, study: Path | str, *flags: str) -> tuple[int, str, str]:
    """`vaebench run --threads 1` in this process with both stores in `folder` (the current
    folder, so the same stores as a worker started there with the defaults): (exit code,
    stdout, stderr). One thread, as the worker processes: two torch thread pools on two
    cores spin against each other and run many times slower."""
    out, err = io.StringIO(), io.StringIO()
    args = ["run", "--study", str(study), "--no-progress", "--threads", "1", "--storage",
            f"sqlite:///{folder / 'optuna.db'}", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", *flags]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(args)
    return code, out.getvalue(), err.getvalue()


def load(cwd: Path, study: str, storage: str | None = None) -> optuna.Study:
    if storage and storage.endswith(".journal"):
        return optuna.load_study(study_name=study, storage=JournalStorage(JournalFileBackend(str(cwd / storage))))
    return optuna.load_study(study_name=study, storage=storage or f"sqlite:///{cwd / 'optuna.db'}")


def mlflow_runs(cwd: Path, study: str) -> tuple[list, list]:
    """(parent runs, child runs) of a study that are not deleted."""
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("vaebench.role") == "study"]
    children = [r for r in runs if r.data.tags.get("vaebench.role") == "trial"]
    return parents, children


def children_by_trial(children: list) -> dict[int, Any]:
    numbers = [int(c.data.tags["vaebench.trial_number"]) for c in children]
    assert len(numbers) == len(set(numbers)), f"duplicate child runs for trials {sorted(numbers)}"
    return dict(zip(numbers, children))


def sql_rows(db: Path, query: str) -> list[tuple]:
    """Read optuna.db while a worker writes it (read-only, waiting on locks)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return conn.execute(query).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert proc.poll() is None, f"the worker ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def epochs_reported(db: Path, number: int) -> int:
    rows = sql_rows(db, "select count(*) from trial_intermediate_values v join trials t using (trial_id) "
                        f"where t.number = {number} and t.state = 'RUNNING'")
    return rows[0][0] if rows else 0


def assert_study_complete(cwd: Path, name: str, total: int, storage: str | None = None) -> tuple[optuna.Study, dict]:
    """Exactly `total` COMPLETE trials, any FAIL trial accounted for, one parent run
    (FINISHED), one FINISHED child run per complete trial number, all under that parent."""
    study = load(cwd, name, storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == total, states
    assert set(states) <= {"COMPLETE", "FAIL"}, states
    parents, children = mlflow_runs(cwd, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert study.user_attrs["mlflow_parent_run_id"] == parents[0].info.run_id
    by_trial = children_by_trial(children)
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            run = by_trial[trial.number]
            assert run.info.status == "FINISHED" and run.data.tags["vaebench.state"] == "COMPLETE"
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert all(c.info.status != "RUNNING" for c in children)
    return study, by_trial


def assert_shared(study: optuna.Study, total: int) -> set[int]:
    """`total` distinct values, trials that never ran are marked so; the pids that ran trials."""
    for trial in study.trials:
        if trial.state.name == "FAIL":  # a trial one worker started when the other had filled the study
            assert trial.user_attrs["failure_reason"].startswith("not run:"), trial.user_attrs
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == total  # no values drawn twice
    return {t.user_attrs["vaebench.worker"]["pid"] for t in complete}


def test_two_workers_start_a_new_sqlite_study_at_once(tmp_path: Path) -> None:
    """From an empty folder: both race to create optuna.db and mlflow.db, then share the study."""
    write_study(tmp_path, "pair", {"model.beta": [0.5, 1.0], "seed": [0, 1]})
    workers = [spawn(tmp_path, "run", "--study", "pair.yaml", "--no-progress", "--threads", "1") for _ in range(2)]
    for code, _, err in [finish(w) for w in workers]:
        assert code == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
    study, _ = assert_study_complete(tmp_path, "pair", 4)
    assert_shared(study, 4)


def test_a_worker_process_and_this_one_share_a_journal_file(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    write_study(folder, "pair", {"model.beta": {"low": 0.5, "high": 4.0}}, sampler="random", n_trials=4,
                epochs=10, batch_size=32)
    flags = ("--storage", "pair.journal")
    other = spawn(folder, "run", "--study", "pair.yaml", "--no-progress", "--threads", "1", *flags)

    def training() -> bool:
        with contextlib.suppress(KeyError, FileNotFoundError):  # no study yet
            return any(t.state.name == "RUNNING" for t in load(folder, "pair", "pair.journal").trials)
        return False

    wait_until(other, training)
    code, _, err = run_cli(folder, "pair.yaml", *flags)
    assert code == 0, err
    code, _, err = finish(other)
    assert code == 0 and "Traceback" not in err, err
    study, _ = assert_study_complete(folder, "pair", 4, "pair.journal")
    assert assert_shared(study, 4) == {other.pid, os.getpid()}


def worker_in_trial(folder: Path, name: str, number: int) -> subprocess.Popen:
    """A worker on a 2-trial study (20 epochs of 40 steps each), once trial `number` has
    finished its first epoch."""
    write_study(folder, name, {"seed": [0, 1]}, epochs=20, batch_size=32)
    worker = spawn(folder, "run", "--study", f"{name}.yaml", "--no-progress", "--threads", "1")
    wait_until(worker, lambda: epochs_reported(folder / "optuna.db", number) >= 1)
    return worker


def test_kill_9_mid_trial_then_resume(folder: Path, mlflow_template: Path) -> None:
    tmp_path = seeded(folder, mlflow_template)
    worker = worker_in_trial(tmp_path, "killed", 0)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert [t.state.name for t in load(tmp_path, "killed").trials] == ["RUNNING"]
    assert [c.info.status for c in mlflow_runs(tmp_path, "killed")[1]] == ["RUNNING"]

    code, out, err = run_cli(tmp_path, "killed.yaml")
    assert code == 0, err
    assert "1 re-queued after their worker died" in out
    study, by_trial = assert_study_complete(tmp_path, "killed", 2)
    orphan, *rest = study.trials
    assert orphan.state.name == "FAIL"
    assert orphan.user_attrs["failure_reason"] == f"worker died ({socket.gethostname()}/{worker.pid})"
    assert by_trial[0].info.status == "FAILED"
    assert by_trial[0].data.tags["vaebench.failure_reason"].startswith("worker died (")
    retry = next(t for t in rest if t.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == orphan.params
    assert retry.system_attrs["retry_history"] == [0]
    assert len(study.trials) == 3  # the orphan, its one retry, the other grid point


def test_ctrl_c_stops_after_the_epoch_then_resumes(folder: Path, mlflow_template: Path) -> None:
    tmp_path = seeded(folder, mlflow_template)
    worker = worker_in_trial(tmp_path, "stopped", 1)
    worker.send_signal(signal.SIGINT)
    code, _, err = finish(worker)
    assert code == 130, err
    assert "stopping after this epoch; Ctrl-C again to stop now" in err
    assert "Traceback" not in err

    study = load(tmp_path, "stopped")
    first, stopped, queued = study.trials
    assert (first.state.name, stopped.state.name, queued.state.name) == ("COMPLETE", "FAIL", "WAITING")
    assert stopped.user_attrs["failure_reason"] == "interrupted (Ctrl-C)"
    assert len(stopped.intermediate_values) < 20  # it stopped at an epoch's end, not at the last
    assert queued.params == stopped.params
    parents, children = mlflow_runs(tmp_path, "stopped")
    assert parents[0].info.status == "KILLED"
    killed = children_by_trial(children)[1]
    assert killed.info.status == "KILLED" and killed.data.tags["vaebench.state"] == "INTERRUPTED"
    assert (tmp_path / "results" / "stopped" / "leaderboard.csv").is_file()  # the report covers trial 0

    code, _, err = run_cli(tmp_path, "stopped.yaml")
    assert code == 0, err
    study, by_trial = assert_study_complete(tmp_path, "stopped", 2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].params == stopped.params and sorted(by_trial) == [0, 1, 2]


def worker_on_journal(folder: Path, template: Path, name: str, parent: bool = True) -> search.Worker:
    """The parts of a `vaebench run` on a new 2-trial study in `folder` (a journal file), with
    no trial run: tests drive its methods."""
    seeded(folder, template)
    spec, path = load_study(str(write_study(folder, name, {"seed": [0, 1]})))
    study = search.create_study(spec, search.open_storage(str(folder / f"{name}.journal")))
    tracker = StudyTracker.open(f"sqlite:///{folder / 'mlflow.db'}", spec.name)
    parent_id = search.parent_run(spec, study, tracker, str(path)) if parent else ""
    return search.Worker(spec, study, tracker, parent_id, 2, search.Progress(), threading.Event())


def test_dead_worker_on_a_journal_file_is_failed_and_retried_once(tmp_path: Path, mlflow_template: Path) -> None:
    """A journal file has no heartbeat: vaebench itself sees that a worker of this host died."""
    worker = worker_on_journal(tmp_path, mlflow_template, "orphans")
    spec, study, tracker, parent = worker.spec, worker.study, worker.tracker, worker.parent_id
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = {"host": socket.gethostname(), "pid": gone.pid, "start": "1"}

    def orphan() -> optuna.trial.FrozenTrial:
        """Pop the next trial (a new one, else the queued retry) as the dead process would."""
        trial = study.ask()
        search.suggest(trial, spec)
        trial.set_user_attr(search.WORKER_ATTR, dead | {"trial": trial.number})
        tracker.start_trial(parent, trial.number, f"t{trial.number}", {})
        return study._storage.get_trial(trial._trial_id)

    first = orphan()
    worker.sweep()
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["failure_reason"] == f"worker died ({socket.gethostname()}/{gone.pid})"
    assert trials[1].params == first.params and trials[1].system_attrs["retry_history"] == [0]
    assert worker.retried == [0]
    _, children = mlflow_runs(tmp_path, "orphans")
    assert [(c.info.status, c.data.tags["vaebench.state"]) for c in children] == [("FAILED", "FAIL")]

    retry = orphan()  # the retry dies too: failed, not queued a second time
    assert retry.number == 1 and retry.params == first.params
    worker.sweep()
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]
    assert worker.retried == [0]

    alive = orphan()  # a live worker's trial (this process) is left alone
    me = vars(search.Process.current()) | {"trial": alive.number}
    study._storage.set_trial_user_attr(alive._trial_id, search.WORKER_ATTR, me)
    copied = orphan()  # a dead worker's record copied from the trial it re-runs: not this trial's worker
    study._storage.set_trial_user_attr(copied._trial_id, search.WORKER_ATTR, dead | {"trial": 0})
    worker.sweep()
    assert [t.state.name for t in study.get_trials()][-2:] == ["RUNNING", "RUNNING"]


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
