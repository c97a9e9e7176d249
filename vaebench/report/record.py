"""A study read back from MLflow: its parent and trial runs, the per-trial table and the
leaderboard, one row per configuration.

The study's latest parent run names the objective, its direction and the search space; its
child runs are the trials. A configuration is a trial's params with `seed` left out, so a
leaderboard row carries mean, standard deviation, n and a 95% Student-t confidence interval
over seeds. A metric a run lacks stays empty, never 0.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from vaebench import atomic
from vaebench.metrics import sampling
from vaebench.report import significance
from vaebench import tracking as tk
from vaebench.errors import InputError
from vaebench.report.stats import ci95, fmt_ci
from vaebench.stores import redact, short_reason

TRIAL_ID_COLUMNS = ["rank", "trial", "run_name", "run_id", "state"]
CONFIG_ID_COLUMNS = ["rank", "config", "n_seeds", "seeds", "trials"]
HEADLINE = ["test_elbo", "test_recon", "test_kl", "test_nmi", "test_probe_acc", "train_samples_per_s"]
# in report.md's table too when a study measures them (IWAE likelihood, disentanglement)
OPTIONAL = ["test_iwae_ll", "test_active_units", "test_mig", "test_dci_disentanglement"]
STATS = ("mean", "std", "ci95", "n")
SHIPPED_STUDIES = Path(__file__).parents[1] / "studies"
BEST_RUN_PICTURES = ("reconstructions.png", "samples.png", "latent_pca.png", "traversals.png", "kl_per_dim.png")


@dataclass
class StudyRecord:
    """Everything tracked about one study: its trials as a table, and how it was searched."""

    study: str
    tracking_uri: str
    parent: Any  # mlflow.entities.Run
    trials: pd.DataFrame
    objective: str
    direction: str
    space: dict[str, Any]

    @property
    def swept(self) -> list[str]:
        """Searched settings other than `seed`: what distinguishes one configuration from
        another (a mapping choice under `model` sweeps `model.<each of its keys>`)."""
        keys: list[str] = []
        for k, dom in self.space.items():
            subs = [f"{k}.{sub}" for c in dom if isinstance(c, dict) for sub in c] if isinstance(dom, list) else []
            keys += list(dict.fromkeys(subs)) or ([k] if k != "seed" else [])
        return keys

    @property
    def finished(self) -> pd.DataFrame:
        if self.trials.empty:
            return self.trials
        return self.trials[self.trials["state"] == "COMPLETE"]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def study_parent(client: MlflowClient, study: str) -> Any:
    """The most recent parent run of `study`, or an InputError saying what is missing."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise InputError(f"--study {study}: no such study in the tracking store {client.tracking_uri}")
    parents = client.search_runs([experiment.experiment_id], f"tags.`{tk.ROLE}` = 'study'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise InputError(f"--study {study}: the experiment has no study run in {client.tracking_uri}")
    return parents[0]


def load_record(tracking_uri: str, study: str) -> StudyRecord:
    """Read one study back from MLflow: the parent run and one row per child run."""
    try:
        client = MlflowClient(tracking_uri)
        parent = study_parent(client, study)
        runs = _search_all(client, parent.info.experiment_id, f"tags.`{tk.PARENT}` = '{parent.info.run_id}'")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged store: whatever MLflow or its database raise
        raise InputError(f"tracking URI {redact(tracking_uri)}: cannot read ({short_reason(exc)})") from None
    rows = []
    for run in runs:
        tags = run.data.tags
        rows.append({
            "trial": int(tags.get(tk.TRIAL, -1)),
            "run_name": run.info.run_name,
            "run_id": run.info.run_id,
            "state": tags.get(tk.STATE, run.info.status),
            **{f"param.{k}": v for k, v in run.data.params.items()},
            **run.data.metrics,
            **{f"tag.{k}": v for k, v in tags.items() if k.startswith(tk.PREFIX)},
        })
    trials = pd.DataFrame(rows)
    if not trials.empty:
        trials = trials.sort_values("trial").reset_index(drop=True)
    space = json.loads(parent.data.params.get("search.space", "{}"))
    return StudyRecord(study, tracking_uri, parent, trials, parent.data.tags.get(tk.OBJECTIVE, "val_elbo"),
                       parent.data.tags.get(tk.DIRECTION, "maximize"), space)


def metric_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns
                  if c not in TRIAL_ID_COLUMNS and not c.startswith(("param.", "tag.")))


def require_finished(record: StudyRecord) -> pd.DataFrame:
    done = record.finished
    if done.empty:
        raise InputError(f"--study {record.study}: no finished trial yet")
    return done


def per_trial(record: StudyRecord) -> pd.DataFrame:
    """One row per finished trial, best first by the objective (ties: lower trial number)."""
    done = require_finished(record).drop(columns=[c for c in record.trials if c.startswith("tag.")])
    done = done.sort_values([record.objective, "trial"], ascending=[record.direction == "minimize", True],
                            na_position="last")
    done.insert(0, "rank", range(1, len(done) + 1))
    metrics = metric_columns(done)
    metrics.remove(record.objective)
    params = sorted(c for c in done.columns if c.startswith("param."))
    return done[TRIAL_ID_COLUMNS + params + [record.objective] + metrics].reset_index(drop=True)


def aggregate(trials: pd.DataFrame, config_columns: list[str], metrics: list[str]) -> pd.DataFrame:
    """Per configuration: each metric's mean, std (ddof=1), 95% CI half-width and n (non-missing)."""
    groups = trials.groupby(config_columns, dropna=False, sort=False) if config_columns else [((), trials)]
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(config_columns, key))
        seeds = sorted(group["param.seed"].astype(int)) if "param.seed" in group else []
        row |= {"n_seeds": len(group), "seeds": " ".join(map(str, seeds)),
                "trials": " ".join(map(str, sorted(group["trial"])))}
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").dropna() if m in group else pd.Series(dtype=float)
            n = len(values)
            mean = values.mean() if n else np.nan
            std = values.std(ddof=1) if n >= 2 else np.nan
            row |= {f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci95": float(ci95(std, n)), f"{m}_n": n}
        rows.append(row)
    return pd.DataFrame(rows)


def config_label(row: pd.Series, swept: list[str]) -> str:
    """`beta=0.5`: the swept values that define this configuration."""
    parts = [f"{k.rsplit('.', 1)[-1]}={_short(row.get(f'param.{k}'))}" for k in swept
             if not pd.isna(row.get(f"param.{k}"))]  # a key one mapping choice does not set
    return " ".join(parts) or "all"


def same_value(logged: Any, choice: Any) -> bool:
    """A param as MLflow logged it (a string) is this choice."""
    if isinstance(choice, (int, float)) and not isinstance(choice, bool):
        try:
            return float(logged) == float(choice)
        except (TypeError, ValueError):
            return False
    return str(logged) == str(choice)


def _short(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def per_config(record: StudyRecord) -> pd.DataFrame:
    """One row per configuration (trials that differ only in `seed`), best mean objective first."""
    done = require_finished(record)
    config_columns = sorted(c for c in done.columns if c.startswith("param.") and c != "param.seed")
    metrics = metric_columns(done)
    board = aggregate(done, config_columns, metrics)
    board.insert(0, "config", [config_label(r, record.swept) for _, r in board.iterrows()])
    key = f"{record.objective}_mean"
    board = board.sort_values([key, "config"], ascending=[record.direction == "minimize", True], na_position="last")
    board.insert(0, "rank", range(1, len(board) + 1))
    ordered = [record.objective] + [m for m in metrics if m != record.objective]
    stat_columns = [f"{m}_{s}" for m in ordered for s in STATS]
    board = board[CONFIG_ID_COLUMNS + config_columns + stat_columns].reset_index(drop=True)
    tested = [m for m in table_metrics(board, record.objective) if m.startswith("test_") and f"{m}_mean" in board]
    tested += [m for m in sampling.METRICS if f"{m}_mean" in board]  # report.md's generation section
    return significance.add_columns(board, done, record.objective, record.direction, tested)


def table_metrics(board: pd.DataFrame, objective: str) -> list[str]:
    """The metrics of report.md's table: the objective, the OPTIONAL ones measured, HEADLINE."""
    measured = [m for m in OPTIONAL if board.get(f"{m}_mean", pd.Series(dtype=float)).notna().any()]
    return [objective] + [m for m in measured + HEADLINE if m != objective]


def leaderboard(tracking_uri: str, study: str, per_trial_rows: bool = False) -> pd.DataFrame:
    record = load_record(tracking_uri, study)
    return per_trial(record) if per_trial_rows else per_config(record)


def write_csv(df: pd.DataFrame, out: Path) -> Path:
    """Atomic: a reader (or a crash) never sees a half-written file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    atomic.default_mode(tmp)
    with os.fdopen(fd, "w", newline="") as fh:
        df.to_csv(fh, index=False)
    os.replace(tmp, out)
    return out


# --- report.md ---------------------------------------------------------------------------

def markdown_table(board: pd.DataFrame, metrics: list[str], objective: str | None = None) -> str:
    """The leaderboard as a GitHub Markdown table: mean ± 95% CI half-width per metric, and
    (given the objective) whether each row can be told apart from the best."""
    present = [m for m in metrics if f"{m}_mean" in board]
    versus = objective is not None and "tied_with_best" in board
    head = ["rank", "config", "seeds"] + ["vs best"] * versus + present
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in board.iterrows():
        cells = [str(row["rank"]), row["config"], str(row["n_seeds"])]
        cells += [significance.verdict(row, objective)] * versus
        cells += [fmt_ci(row[f"{m}_mean"], row[f"{m}_ci95"]) for m in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_markdown_table(text: str) -> pd.DataFrame:
    """Read a table written by markdown_table back (the inverse used by the tests and users)."""
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return pd.DataFrame(rows, columns=head)
