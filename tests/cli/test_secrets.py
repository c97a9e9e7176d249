"""No password from a store URL (--storage, --tracking-uri) is written anywhere vaebench
records the command line (manifest.json, the parent run's manifest artifact, tags, params),
nor printed by MLflow's own "View run ... at:" lines."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import seeded, write_study
from vaebench import manifest, report, search, tracking
from vaebench.config import load_study
from vaebench.stores import redact

POSTGRES = "postgresql+psycopg://bench:s3cretpw@db.example.org:5432/optuna"
SERVER = "http://me:hunter2pw@127.0.0.1:5999"


@pytest.mark.parametrize("text, shown", [
    (POSTGRES, "postgresql+psycopg://bench:***@db.example.org:5432/optuna"),
    (f"--storage={POSTGRES}", "--storage=postgresql+psycopg://bench:***@db.example.org:5432/optuna"),
    ("https://:token@host/x", "https://:***@host/x"),
    ("http://u:p@ss@host:1/x", "http://u:***@host:1/x"),  # an unescaped @ in the password
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("ssh://git@host:22/repo", "ssh://git@host:22/repo"),
])
def test_redact_hides_every_password_in_a_text(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_the_recorded_command_line_holds_no_password(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    spec, path = load_study(str(write_study(folder, "tiny", {"seed": [0]})))
    command = ["vaebench", "run", "--study", "tiny.yaml", "--storage", POSTGRES, f"--tracking-uri={SERVER}"]
    tracking.quiet()
    result = search.run_study(spec, storage_url=f"sqlite:///{folder / 'optuna.db'}",
                              tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", study_path=str(path), command=command)
    assert result.finished == 1
    out = report.write_report(f"sqlite:///{folder / 'mlflow.db'}", "tiny", folder / "results")
    recorded = json.loads((out / manifest.FILENAME).read_text())["command"]
    assert recorded == ["vaebench", "run", "--study", "tiny.yaml", "--storage",
                        "postgresql+psycopg://bench:***@db.example.org:5432/optuna",
                        "--tracking-uri=http://me:***@127.0.0.1:5999"]
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    for run in client.search_runs([client.get_experiment_by_name("tiny").experiment_id]):
        everything = json.dumps([run.data.params, run.data.tags])
        if run.data.tags.get("vaebench.role") == "study":
            everything += json.dumps(client.download_artifacts(run.info.run_id, manifest.FILENAME, str(folder)))
            everything += (folder / manifest.FILENAME).read_text()
        assert "s3cretpw" not in everything and "hunter2pw" not in everything


def test_mlflow_prints_no_run_links_with_the_servers_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow writes "View run NAME at: URL" to stdout when a run on an HTTP server ends, URL
    from the tracking URI, password included: vaebench turns those lines off (it prints its
    own links, redacted). The server's answer is stood in for: no server is started."""
    from mlflow.entities import Run, RunData, RunInfo
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    client = TrackingServiceClient(SERVER)
    info = RunInfo("r1", "7", "me", "FINISHED", 0, 1, "active", run_name="trial-0")
    monkeypatch.setattr(type(client.store), "get_run", lambda self, run_id: Run(info, RunData()))
    out = io.StringIO()
    with redirect_stdout(out):
        client._log_url("r1")  # what set_terminated calls after ending the run
    assert "hunter2pw" in out.getvalue()  # MLflow's behaviour, unless told otherwise
    tracking.quiet()
    out = io.StringIO()
    with redirect_stdout(out):
        client._log_url("r1")
    assert out.getvalue() == ""
