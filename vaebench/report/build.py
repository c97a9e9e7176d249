"""results/<study>/: report.md, leaderboard.csv, trials.csv, figures/ and the manifest, built
from the MLflow record alone (no retraining) and swapped in whole."""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from vaebench import atomic, data, manifest
from vaebench.report import generation, literature
from vaebench.report import significance
from vaebench.report import stages
from vaebench import tracking as tk
from vaebench.config import choice_label
from vaebench.report.record import (
    BEST_RUN_PICTURES,
    HEADLINE,
    SHIPPED_STUDIES,
    StudyRecord,
    config_label,
    load_record,
    markdown_table,
    per_config,
    per_trial,
    require_finished,
    same_value,
    table_metrics,
    write_csv,
)
from vaebench.report.stats import fmt_ci
from vaebench.stores import redact


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


def _code_line(folder: Path, has_manifest: bool) -> list[str]:
    """The git commit of the vaebench that ran the study, from its manifest: a report rebuilt by
    a later vaebench shows numbers the recorded code computed, which a version string alone
    does not tell apart."""
    git = manifest.read(folder)["vaebench"].get("git") if has_manifest else None
    if not git:
        return []
    return [f"- run by vaebench at git commit `{git['commit']}`{' with uncommitted changes' if git.get('dirty') else ''}"]


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
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

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
    from vaebench.report import figures

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
        *generation.lines(board, record.finished, record.swept, record.tracking_uri, folder),
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
    lines += ["## Environment", "", *_versions(record), *_code_line(folder, has_manifest),
              f"- report built on: {platform.platform()}", "",
              *reproduce_lines(record.study, study_file, has_manifest,
                               bool(set(trials.get("param.dataset.name", [])) & set(data.FILES)))]
    (folder / "report.md").write_text("\n".join(lines))
    return sorted(p for p in folder.rglob("*") if p.is_file())


def write_report(tracking_uri: str, study: str, results: Path) -> Path:
    """Build into a temporary folder, then swap it in: an error leaves the old report untouched."""
    record = load_record(tracking_uri, study)
    require_finished(record)
    return atomic.write_folder(results, study, lambda folder: build_report(record, folder))
