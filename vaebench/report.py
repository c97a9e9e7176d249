"""Leaderboards, read back from what was tracked in MLflow (never from memory or the YAML).

The study's latest parent run names the objective and its direction in its tags; its child
runs are the trials. Columns: rank, trial, run_name, run_id, state, the resolved config as
dotted param keys, then the metrics. A metric a run lacks is empty, never 0.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from vaebench import tracking as tk
from vaebench.errors import InputError

ID_COLUMNS = ["rank", "trial", "run_name", "run_id", "state"]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def study_parent(client: MlflowClient, study: str):
    """The most recent parent run of `study`, or an InputError saying what is missing."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise InputError(f"--study {study}: no such study in the tracking store {client.tracking_uri}")
    parents = client.search_runs(
        [experiment.experiment_id], f"tags.`{tk.ROLE}` = 'study'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not parents:
        raise InputError(f"--study {study}: the experiment has no study run in {client.tracking_uri}")
    return parents[0]


def trial_table(tracking_uri: str, study: str) -> tuple[pd.DataFrame, str, str]:
    """All child runs of the study's parent, one row each; plus the objective and direction."""
    client = MlflowClient(tracking_uri)
    parent = study_parent(client, study)
    objective = parent.data.tags.get(tk.OBJECTIVE, "val_elbo")
    direction = parent.data.tags.get(tk.DIRECTION, "maximize")
    runs = _search_all(client, parent.info.experiment_id, f"tags.`{tk.PARENT}` = '{parent.info.run_id}'")
    rows = []
    for run in runs:
        tags = run.data.tags
        rows.append({
            "trial": int(tags.get(tk.TRIAL, -1)),
            "run_name": run.info.run_name,
            "run_id": run.info.run_id,
            "state": tags.get(tk.STATE, run.info.status),
            **{f"param.{k}": v for k, v in sorted(run.data.params.items())},
            **dict(sorted(run.data.metrics.items())),
        })
    return pd.DataFrame(rows), objective, direction


def leaderboard(tracking_uri: str, study: str) -> pd.DataFrame:
    """One row per finished (COMPLETE) trial, best first by the study's objective."""
    table, objective, direction = trial_table(tracking_uri, study)
    if table.empty or not (table["state"] == "COMPLETE").any():
        raise InputError(f"--study {study}: no finished trial yet")
    done = table[table["state"] == "COMPLETE"].copy()
    done = done.sort_values([objective, "trial"], ascending=[direction == "minimize", True], na_position="last")
    done.insert(0, "rank", range(1, len(done) + 1))
    params = sorted(c for c in done.columns if c.startswith("param."))
    metrics = sorted(c for c in done.columns if c not in ID_COLUMNS and not c.startswith("param."))
    metrics.remove(objective)
    return done[ID_COLUMNS + params + [objective] + metrics].reset_index(drop=True)


def write_csv(df: pd.DataFrame, out: Path) -> Path:
    """Atomic: a reader (or a crash) never sees a half-written file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as fh:
        df.to_csv(fh, index=False)
    os.replace(tmp, out)
    return out
