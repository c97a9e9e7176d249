"""Helpers shared by the test modules: tiny study files, vaebench run in this process or as
worker processes, and reading back what Optuna and MLflow hold."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage

from vaebench import cli, search
from vaebench.config import load_study
from vaebench.tracking import StudyTracker

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120


def vaebench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m vaebench ARGS` in `cwd`, as a user would run it (no MLflow env overrides)."""
    return subprocess.run([sys.executable, "-m", "vaebench", *args], cwd=cwd, env=user_env(),
                          capture_output=True, text=True, timeout=600)


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
    """A user's environment: no MLflow overrides, this checkout importable."""
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


def seeded(folder: Path, template: Path) -> Path:
    """`folder` with a copy of the template mlflow.db, its Default experiment's artifacts
    (an absolute path MLflow wrote) moved into `folder/mlruns`."""
    shutil.copy(template, folder / "mlflow.db")
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as conn, conn:
        conn.execute("update experiments set artifact_location = ? where experiment_id = 0",
                     (str(folder / "mlruns" / "0"),))
    return folder


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


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def refused_line(folder: Path, *argv: str) -> str:
    """The CLI in `folder` exits 2 with one line on stderr, writing no file."""
    before = snapshot(folder)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    lines = err.getvalue().splitlines()
    assert (code, len(lines)) == (2, 1), (code, lines)
    assert snapshot(folder) == before
    return lines[0]


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


def worker_on_journal(folder: Path, template: Path, name: str, parent: bool = True) -> search.Worker:
    """The parts of a `vaebench run` on a new 2-trial study in `folder` (a journal file), with
    no trial run: tests drive its methods."""
    seeded(folder, template)
    spec, path = load_study(str(write_study(folder, name, {"seed": [0, 1]})))
    storage = search.open_storage(str(folder / f"{name}.journal"))
    study = search.create_study(spec, storage)
    tracker = StudyTracker.open(f"sqlite:///{folder / 'mlflow.db'}", spec.name)
    parent_id = search.parent_run(spec, study, tracker, str(path)) if parent else ""
    return search.Worker(spec, study, tracker, parent_id, 2, search.Progress(), threading.Event(),
                         heartbeat=search.heartbeat_enabled(storage))
