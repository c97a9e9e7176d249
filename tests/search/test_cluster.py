"""A study on a cluster: workers on any number of machines against ONE PostgreSQL Optuna
storage and ONE MLflow tracking server (backend store in PostgreSQL, artifacts served by
the server). Everything here is real: a throwaway PostgreSQL server (Debian's postgresql
package; `.ci/run` installs it), an `mlflow server` subprocess, and `python -m vaebench run`
worker processes, each in its own folder as if on its own machine.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback

from helpers import children_by_trial, finish, spawn, write_study
from vaebench import report, search

pytestmark = pytest.mark.slow  # a PostgreSQL server, an MLflow server and worker processes

SKIP_REASON = "PostgreSQL server binaries not installed (apt-get install postgresql)"
START_TIMEOUT_S = 90


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready: Any, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not start in {START_TIMEOUT_S} s: {log.read_text()[-3000:] if log else ''}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Cluster:
    optuna_url: str  # postgresql+psycopg://postgres@127.0.0.1:PORT/optuna
    mlflow_db_url: str  # the MLflow server's backend store
    tracking_uri: str  # http://127.0.0.1:PORT
    artifacts: Path


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with a throwaway data folder and databases `optuna`
    and `mlflow`; yields the server's URL prefix. Stopped (immediate) whatever happens."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip(SKIP_REASON)
    import psycopg  # the `postgres` extra (in `dev`)

    # Not under pytest's tmp folder: that is private to this user, and as root the server
    # must run as `postgres` (initdb refuses root), which must be able to reach its folder.
    base = Path(tempfile.mkdtemp(prefix="vaebench-pg-"))
    datadir, log = base / "data", base / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    started = False
    try:
        subprocess.run([*as_user, initdb, "-D", str(datadir), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, text=True, timeout=120)
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = True
        subprocess.run([*as_user, pg_ctl, "-D", str(datadir), "-l", str(log), "-o", options, "-w", "-t", "60",
                        "start"], check=True, capture_output=True, text=True, timeout=90)
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            for name in ("optuna", "mlflow"):
                conn.execute(f"CREATE DATABASE {name}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{exc.cmd[len(as_user)]} failed: {exc.stderr}{log.read_text() if log.exists() else ''}")
    finally:
        if started:
            subprocess.run([*as_user, pg_ctl, "-D", str(datadir), "stop", "-m", "immediate", "-w"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`mlflow server` on 127.0.0.1: runs in PostgreSQL, artifacts uploaded through the server."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts, log = folder / "artifacts", folder / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no GenAI job runners: 7 fewer processes to start
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{postgres}/mlflow",
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{uri}/health", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for("mlflow server", healthy, server, log)
        yield Cluster(f"{postgres}/optuna", f"{postgres}/mlflow", uri, artifacts)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and its uvicorn workers
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def workers(tmp_path: Path, cluster: Cluster, study: Path, n: int) -> list[subprocess.Popen]:
    """`n` workers started at once, each in its own folder (its own "machine")."""
    procs = []
    for i in range(n):
        home = tmp_path / f"machine{i}"
        home.mkdir()
        procs.append(spawn(home, "run", "--study", str(study), "--storage", cluster.optuna_url,
                           "--tracking-uri", cluster.tracking_uri, "--no-progress", "--threads", "1"))
    return procs


def optuna_trials(cluster: Cluster, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(cluster.optuna_url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def test_three_workers_one_killed_mid_trial_finish_exactly_n_trials(tmp_path: Path, cluster: Cluster) -> None:
    """Three workers at once on an empty PostgreSQL database and a fresh MLflow server; one is
    killed with SIGKILL in the middle of a trial. The two others finish the study: exactly
    n_trials COMPLETE trials, one parent run, one child run per trial, the killed trial FAIL
    and run again once with the same values."""
    total = 6
    study = write_study(tmp_path, "cluster", {"model.beta": {"low": 0.5, "high": 4.0}}, sampler="random",
                        n_trials=total, epochs=30)
    procs = workers(tmp_path, cluster, study, 3)
    by_pid = {p.pid: p for p in procs}
    deadline = time.monotonic() + START_TIMEOUT_S
    while (training := training_now(cluster, "cluster", set(by_pid))) is None:
        assert all(p.poll() is None for p in procs), [finish(p) for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "no trial started training"
        time.sleep(0.05)
    killed, pid = training
    by_pid[pid].send_signal(signal.SIGKILL)
    by_pid[pid].wait()
    for proc in procs:
        if proc.pid != pid:
            code, _, err = finish(proc)
            assert code == 0, err
            assert "Traceback" not in err, err

    # Optuna: exactly `total` COMPLETE; the killed trial FAIL, run again once with its values
    trials = optuna_trials(cluster, "cluster")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == total, [(t.number, t.state.name, t.user_attrs) for t in trials]
    dead = trials[killed]
    assert dead.state.name == "FAIL" and dead.user_attrs["failure_reason"] == f"worker died ({socket.gethostname()}/{pid})"
    retry = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == dead.params
    for trial in trials:  # any other trial that did not finish was one the study no longer needed
        if trial.state.name != "COMPLETE" and trial.number != killed:
            assert trial.state.name == "FAIL" and trial.user_attrs["failure_reason"].startswith("not run:")

    # MLflow, through the server: one parent run, one child run per trial that ran, under it
    client = MlflowClient(cluster.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("vaebench.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [p.info for p in parents]
    by_trial = children_by_trial([r for r in runs if r.data.tags.get("vaebench.role") == "trial"])
    assert set(by_trial) == {t.number for t in complete} | {killed}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in by_trial.values())
    assert by_trial[killed].info.status == "FAILED"  # closed by a survivor, not left RUNNING
    for trial in complete:
        run = by_trial[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["vaebench.state"] == "COMPLETE"
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        # artifacts were uploaded through the server into its artifact store
        assert any(cluster.artifacts.rglob(f"{run.info.run_id}/artifacts/reconstructions.png"))
    assert not any(tmp_path.glob("machine*/mlruns")) and not any(tmp_path.glob("machine*/mlflow.db"))

    # the leaderboard read through the server equals the one read from its database
    through_server = report.leaderboard(cluster.tracking_uri, "cluster", per_trial_rows=True)
    assert len(through_server) == total
    pd.testing.assert_frame_equal(through_server, report.leaderboard(cluster.mlflow_db_url, "cluster", True))
    pd.testing.assert_frame_equal(report.leaderboard(cluster.tracking_uri, "cluster"),
                                  report.leaderboard(cluster.mlflow_db_url, "cluster"))


def training_now(cluster: Cluster, name: str, pids: set[int]) -> tuple[int, int] | None:
    """(trial number, worker pid) of a trial in the middle of training (an epoch reported, a
    child run open) on one of `pids`; read with plain SQL, so this test never creates tables."""
    import psycopg

    query = """
        select t.number, w.value_json from trials t join studies s using (study_id)
        join trial_user_attributes w on w.trial_id = t.trial_id and w.key = %s
        where s.study_name = %s and t.state = 'RUNNING'
          and exists (select 1 from trial_intermediate_values v where v.trial_id = t.trial_id)
          and exists (select 1 from trial_user_attributes r where r.trial_id = t.trial_id and r.key = 'mlflow_run_id')
    """
    try:
        with psycopg.connect(cluster.optuna_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            rows = conn.execute(query, (search.WORKER_ATTR, name)).fetchall()
    except psycopg.errors.UndefinedTable:  # the first worker has not created Optuna's tables yet
        return None
    for number, owner in rows:
        pid = json.loads(owner).get("pid")
        if pid in pids:
            return number, pid
    return None
