"""Leaderboards and reports, rebuilt from what was tracked in MLflow alone (no retraining).

The study's latest parent run names the objective, its direction and the search space; its
child runs are the trials. A configuration is a trial's params with `seed` left out, so a
leaderboard row carries mean, standard deviation, n and a 95% Student-t confidence interval
over seeds. A metric a run lacks stays empty, never 0.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from vaebench import atomic, data, literature, manifest, significance, stages
from vaebench import tracking as tk
from vaebench.config import choice_label
from vaebench.errors import InputError
from vaebench.stats import ci95, fmt_ci
from vaebench.stores import redact, short_reason

TRIAL_ID_COLUMNS = ["rank", "trial", "run_name", "run_id", "state"]
CONFIG_ID_COLUMNS = ["rank", "config", "n_seeds", "seeds", "trials"]
HEADLINE = ["test_elbo", "test_recon", "test_kl", "test_nmi", "test_probe_acc", "train_samples_per_s"]
# in report.md's table too when a study measures them (IWAE likelihood, disentanglement)
OPTIONAL = ["test_iwae_ll", "test_active_units", "test_mig", "test_dci_disentanglement"]
STATS = ("mean", "std", "ci95", "n")
SHIPPED_STUDIES = Path(__file__).parent / "studies"
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


def _require_finished(record: StudyRecord) -> pd.DataFrame:
    done = record.finished
    if done.empty:
        raise InputError(f"--study {record.study}: no finished trial yet")
    return done


def per_trial(record: StudyRecord) -> pd.DataFrame:
    """One row per finished trial, best first by the objective (ties: lower trial number)."""
    done = _require_finished(record).drop(columns=[c for c in record.trials if c.startswith("tag.")])
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
    done = _require_finished(record)
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


def _versions(record: StudyRecord) -> list[str]:
    done = record.finished
    def tag_values(tag: str) -> str:
        col = f"tag.{tag}"
        return ", ".join(sorted(done[col].dropna().unique())) if col in done else "unknown"
    return [
        f"- vaebench {tag_values(tk.VERSION)}, torch {tag_values(tk.TORCH_VERSION)}, "
        f"mlflow {tag_values(tk.MLFLOW_VERSION)}, optuna {tag_values(tk.OPTUNA_VERSION)}, "
        f"python {tag_values(tk.PYTHON_VERSION)}",
        f"- device: {tag_values(tk.DEVICE)}; host: {tag_values(tk.HOST)}",
        f"- dataset fingerprint: {tag_values(tk.DATASET_FINGERPRINT)}",
        f"- tracking store: `{redact(record.tracking_uri)}`, parent run `{record.parent.info.run_id}`",
    ]


def space_values(space: dict[str, Any], row: pd.Series) -> dict[str, Any]:
    """The value each search dimension took in a trial, read from its logged `param.*`: the
    matching choice of a list, the number of a range (`space` as StudySpec dumps it to JSON).
    A KeyError names a dimension the row does not show."""
    def logged(key: str, choice: Any) -> bool:
        if isinstance(choice, dict):
            return all(same_value(row.get(f"param.{key}.{sub}"), v) for sub, v in choice.items())
        return same_value(row.get(f"param.{key}"), choice)

    def value(key: str, dom: Any) -> Any:
        if isinstance(dom, list):
            found = [c for c in dom if logged(key, c)]
            if not found:
                raise KeyError(key)
            return found[0]
        raw = row.get(f"param.{key}")
        if raw is None or pd.isna(raw):
            raise KeyError(key)
        return int(float(raw)) if dom.get("type") == "int" else float(raw)

    return {k: value(k, dom) for k, dom in space.items()}


def _optuna_study(record: StudyRecord) -> Any:
    """An in-memory Optuna study rebuilt from the tracked trials (so no Optuna storage is needed)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def distribution(dom: Any) -> Any:
        if isinstance(dom, list):
            return CategoricalDistribution([choice_label(c) for c in dom])
        if dom.get("type") == "int":
            return IntDistribution(int(dom["low"]), int(dom["high"]), log=dom.get("log", False))
        return FloatDistribution(dom["low"], dom["high"], log=dom.get("log", False))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=record.study, direction=record.direction)
    dists = {k: distribution(d) for k, d in record.space.items()}
    for _, row in record.finished.iterrows():
        if not math.isfinite(row.get(record.objective, math.nan)):
            continue
        params = {k: choice_label(v) if isinstance(record.space[k], list) else v
                  for k, v in space_values(record.space, row).items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=row[record.objective]))
    return study


def _figures(record: StudyRecord, board: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """Study-level figures, the best run's pictures and Optuna's analysis; name -> path."""
    from vaebench import figures

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    done = record.finished
    colour_key = record.swept[0] if record.swept else "seed"
    colour = pd.to_numeric(done.get(f"param.{colour_key}"), errors="coerce").to_numpy()
    names = None
    if not np.isfinite(colour).any() and record.swept:  # e.g. objectives: one colour per configuration
        codes, names = pd.factorize(done.apply(config_label, axis=1, swept=record.swept), sort=True)
        colour, colour_key = codes.astype(float), "configuration"
    if {"test_kl", "test_recon"} <= set(done.columns) and np.isfinite(colour).any():
        out["Rate-distortion plane (every trial)"] = figures.rate_distortion(
            done["test_kl"].to_numpy(float), done["test_recon"].to_numpy(float), colour,
            colour_key.rsplit(".", 1)[-1], folder / "rate_distortion.png",
            log_colour=names is None and bool(np.nanmin(colour) > 0), colour_names=names)
    if record.swept:
        param = record.swept[0]
        x = board[f"param.{param}"].to_numpy()
        numeric = pd.to_numeric(pd.Series(x), errors="coerce")
        if numeric.notna().all():
            x = numeric.to_numpy()
        present = [m for m in HEADLINE if f"{m}_mean" in board]
        name = param.rsplit(".", 1)[-1]
        out[f"Headline metrics against {name} (mean ± 95% CI over seeds)"] = figures.metrics_vs_param(
            x, {m: board[f"{m}_mean"].to_numpy(float) for m in present},
            {m: board[f"{m}_ci95"].to_numpy(float) for m in present}, name, folder / f"metrics_vs_{name}.png",
            log_x=numeric.notna().all() and bool((numeric > 0).all()) and numeric.max() / numeric.min() >= 10)
    best = per_trial(record).iloc[0]
    client = MlflowClient(record.tracking_uri)
    available = {a.path for a in client.list_artifacts(best["run_id"])}
    for picture in BEST_RUN_PICTURES:
        if picture in available:
            local = client.download_artifacts(best["run_id"], picture, str(folder))
            target = folder / f"best_{picture}"
            os.replace(local, target)
            out[f"Best run ({best['run_name']}): {picture.removesuffix('.png').replace('_', ' ')}"] = target
    for path in figures.optuna_figures(_optuna_study(record), folder / "optuna", record.objective):
        if path.suffix == ".png":
            out[f"Optuna: {path.stem.replace('_', ' ')}"] = path
    return out


def leaderboard_lines(board: pd.DataFrame, trials: pd.DataFrame, objective: str, direction: str,
                      metrics: list[str]) -> list[str]:
    """The `## Leaderboard` and `## Best configuration` sections of report.md."""
    best = board.iloc[0]
    return [
        "## Leaderboard",
        "",
        "Mean ± 95% confidence half-width (Student t) over seeds; nats per example for likelihood terms. "
        "`vs best`: the difference to the best configuration in the objective, tested per configuration "
        "(paired t-test over seeds when the seeds match, Welch's otherwise) with Holm's correction at 5%; "
        "`tied` cannot be told apart from the best. "
        "Full columns (std, n, differences with their 95% CI and Holm p for the test metrics too) in "
        "[leaderboard.csv](leaderboard.csv), every trial in [trials.csv](trials.csv).",
        "",
        markdown_table(board, metrics, objective),
        "",
        "## Best configuration",
        "",
        f"**{best['config']}**: {objective} = {fmt_ci(best[f'{objective}_mean'], best[f'{objective}_ci95'])}"
        f" over {best['n_seeds']} seed(s) (trials {best['trials']}).",
        *significance.best_lines(board, trials, objective, direction),
        "",
    ]


def copy_manifest(record: StudyRecord, folder: Path) -> bool:
    """The parent run's manifest.json into `folder`; False for a study whose parent run has
    none (started before vaebench recorded manifests)."""
    client = MlflowClient(record.tracking_uri)
    run_id = record.parent.info.run_id
    if manifest.FILENAME not in {a.path for a in client.list_artifacts(run_id)}:
        return False
    client.download_artifacts(run_id, manifest.FILENAME, str(folder))
    return True


def reproduce_lines(study: str, study_file: str, has_manifest: bool, needs_data: bool = False) -> list[str]:
    """The `## Reproduce` section: the commands, and how to check the numbers. A study file
    named like a shipped study is given by name (the recorded path is the machine's it ran on);
    a dataset read from a data folder needs `--data-dir`."""
    shipped = Path(study_file).name == f"{study}.yaml" and (SHIPPED_STUDIES / f"{study}.yaml").is_file()
    data_dir = " --data-dir DIR" if needs_data else ""
    replay = ([f"python -m vaebench replay results/{study}{data_dir}   # reruns the best trial, compares its numbers"]
              if has_manifest else [])
    lines = ["## Reproduce", "", "```", f"python -m vaebench run --study {study if shipped else study_file}{data_dir}",
             f"python -m vaebench report --study {study}", *replay, "```", ""]
    if has_manifest:
        return lines + ["[manifest.json](manifest.json) records the resolved study, the command, the versions, "
                        "the hardware and the dataset fingerprints behind these numbers.", ""]
    return lines + ["This study's run recorded no manifest.json, so `vaebench replay` cannot check it; "
                    "the manifest comes with the next regenerated run.", ""]


def literature_lines(record: StudyRecord, board: pd.DataFrame, folder: Path) -> list[str]:
    """The comparison with the published numbers the study file names (literature.csv too)."""
    text = record.parent.data.tags.get(tk.LITERATURE)
    if not text:
        return []
    spec = literature.LiteratureSpec.from_json(text)
    table = literature.comparison(board, spec)
    if table.empty:
        return []
    write_csv(table, folder / "literature.csv")
    hosts = record.trials.get(f"tag.{tk.HOST}", pd.Series(dtype=str)).dropna().unique()
    devices = record.trials.get(f"tag.{tk.DEVICE}", pd.Series(dtype=str)).dropna().unique()
    return literature.markdown(table, spec, "; ".join([*map(str, devices), *map(str, hosts)]) or "unknown")


def stage_lines(record: StudyRecord, folder: Path) -> list[str]:
    """The schedule-stage curve (`stages`), when the trials logged one; stages.csv too."""
    done = record.finished
    if stages.METRIC not in done or done[stages.METRIC].isna().all():
        return []
    client = MlflowClient(record.tracking_uri)
    points = pd.DataFrame([
        {"config": config_label(trial, record.swept), "seed": trial.get("param.seed"), "trial": trial["trial"],
         "epoch": point.step, stages.METRIC: point.value}
        for _, trial in done.iterrows() for point in client.get_metric_history(trial["run_id"], stages.METRIC)
    ]).sort_values(["config", "epoch", "trial"])
    write_csv(points, folder / "stages.csv")
    first = done.iloc[0]
    return stages.markdown(stages.curve(points), first.get("param.eval.iwae_k", "?"),
                           first.get("param.eval.stage_points", "?"))


def build_report(record: StudyRecord, folder: Path) -> list[Path]:
    """Write leaderboard.csv, trials.csv, report.md, figures/ and the study's manifest.json
    into `folder` (which must be new)."""
    board = per_config(record)
    trials = per_trial(record)
    write_csv(board, folder / "leaderboard.csv")
    write_csv(trials, folder / "trials.csv")
    has_manifest = copy_manifest(record, folder)
    pictures = _figures(record, board, folder / "figures")
    params = record.parent.data.params
    metrics = table_metrics(board, record.objective)
    study_file = record.parent.data.tags.get(tk.STUDY_FILE, f"{record.study}")
    tags = record.parent.data.tags
    description = tags.get(tk.DESCRIPTION, tags.get(tk.NOTE, ""))  # a store from before the DESCRIPTION tag
    lines = [
        f"# {record.study}",
        "",
        f"> {description.strip() or 'No description.'}",
        "",
        "## Settings",
        "",
        f"- objective: `{record.objective}` ({record.direction}d"
        f"{' on validation' if record.objective.startswith('val_') else ''}; test metrics are reported, never optimised)",
        f"- search: sampler `{params.get('search.sampler')}`, pruner `{params.get('search.pruner')}`, "
        f"{len(record.finished)} finished of {len(record.trials)} trials",
        f"- space: `{json.dumps(record.space)}`",
        "- fixed settings (first trial): " + ", ".join(
            f"`{c.removeprefix('param.')}={trials.iloc[0][c]}`" for c in trials.columns
            if c.startswith("param.") and c.removeprefix("param.") not in [*record.space, *record.swept]
            and not pd.isna(trials.iloc[0][c])),
        "",
        *leaderboard_lines(board, record.finished, record.objective, record.direction, metrics),
        *literature_lines(record, board, folder),
        *stage_lines(record, folder),
        *significance.budget_lines(board, record.finished, record.objective, record.direction,
                                   params.get("search.sampler"), "seed" in record.space, folder),
        "## Figures",
        "",
    ]
    for title, path in pictures.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(folder).as_posix()})", ""]
    if (folder / "figures" / "optuna").is_dir():
        html = sorted((folder / "figures" / "optuna").glob("*.html"))
        lines += ["Interactive versions (plotly, loads plotly.js from its CDN): " + ", ".join(f"[{p.stem}]({p.relative_to(folder).as_posix()})" for p in html), ""]
    lines += ["## Environment", "", *_versions(record), f"- report built on: {platform.platform()}", "",
              *reproduce_lines(record.study, study_file, has_manifest,
                               bool(set(trials.get("param.dataset.name", [])) & set(data.FILES)))]
    (folder / "report.md").write_text("\n".join(lines))
    return sorted(p for p in folder.rglob("*") if p.is_file())


def write_report(tracking_uri: str, study: str, results: Path) -> Path:
    """Build into a temporary folder, then swap it in: an error leaves the old report untouched."""
    record = load_record(tracking_uri, study)
    _require_finished(record)
    return atomic.write_folder(results, study, lambda folder: build_report(record, folder))
