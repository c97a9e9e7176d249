"""Rerun one trial of a finished study from its report folder and check its numbers.

`vaebench replay results/<study>` reads manifest.json and trials.csv, reruns one trial
(default: the best) through vaebench.trial, not Optuna, in a temporary folder with the
recorded study, seed and torch thread count, and compares every recorded metric as MLflow
holds it. On the same CPU and versions the numbers match bit for bit ("identical");
otherwise it lists the differences, each beside the recorded changes (versions, hardware,
data) that can explain it. Timing metrics are not compared.
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import ValidationError

from vaebench import manifest, report, trial
from vaebench import tracking as tk
from vaebench.config import StudySpec, TrialConfig
from vaebench.errors import InputError
from vaebench.stores import short_reason
from vaebench.studyfile import format_validation_error
from vaebench.train import resolve_device
from vaebench.validate import device_problem

TIMING = ("train_seconds", "*_samples_per_s")  # differ on every run: never compared
EVERY_METRIC = ("torch", "numpy")  # they train and evaluate the model behind every number
# the packages that compute a score on top of the model's codes
SCORED_BY = {
    "*_nmi": ("scikit-learn",), "*_ari": ("scikit-learn",), "*_silhouette": ("scikit-learn",),
    "*_cluster_acc": ("scikit-learn", "scipy"), "*_probe_acc": ("scikit-learn", "scipy"),
    "*_mig": ("scikit-learn",), "*_dci_*": ("scikit-learn", "scipy"),
}
HARDWARE = ("device", "cpu", "machine", "torch_threads", "cuda_device", "cuda_version")  # what moves numbers


@dataclass(frozen=True)
class Change:
    """One difference between the recorded environment and this one; `package` names the
    package that changed (None: Python, vaebench, hardware or data, behind every metric)."""

    text: str
    package: str | None = None

    def explains(self, metric: str) -> bool:
        if self.package is None or self.package in EVERY_METRIC:
            return True
        return any(fnmatch.fnmatch(metric, pattern) and self.package in packages
                   for pattern, packages in SCORED_BY.items())


@dataclass
class Outcome:
    trial: int
    run_name: str
    differences: pd.DataFrame  # metric, recorded, replayed, difference, explained by
    compared: int
    changes: list[Change]

    @property
    def identical(self) -> bool:
        return self.differences.empty


def load(folder: Path) -> tuple[dict[str, Any], StudySpec, pd.DataFrame]:
    """The manifest, the study it records and trials.csv; one-line InputErrors otherwise."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such report folder")
    doc = manifest.read(folder)
    load_plugins(doc, folder / manifest.FILENAME)
    try:
        spec = StudySpec.model_validate(doc["study"])
    except ValidationError as exc:
        raise InputError(f"{folder / manifest.FILENAME}: study: not a valid study "
                         f"({format_validation_error(exc, doc['study'])})") from None
    path = folder / "trials.csv"
    try:  # as text: Python's float() reads every digit back exactly, as MLflow held it
        trials = pd.read_csv(path, dtype=str)
        trials["trial"] = trials["trial"].astype(int)
    except KeyError:
        raise InputError(f"{path}: trial: no such column") from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read ({short_reason(exc)})") from None
    if trials.empty:
        raise InputError(f"{path}: no trial rows")
    return doc, spec, trials


def load_plugins(doc: dict[str, Any], path: Path) -> None:
    """Run the plugin files the study ran (their models must be registered to rebuild the
    trial); one whose file is gone is bad input. A changed file is reported by `changes`."""
    from vaebench.models import plugins

    for file in doc.get("plugins") or {}:
        if not Path(file).is_file():
            raise InputError(f"{path}: plugins: {file}: no such file (the recorded study ran it)")
        plugins.load_file(file)


def pick(trials: pd.DataFrame, number: int | None, path: Path) -> pd.Series:
    """Trial `number`, or the best one (trials.csv is ranked best first)."""
    if number is None:
        return trials.iloc[0]
    rows = trials[trials["trial"] == number]
    if rows.empty:
        raise InputError(f"{path}: --trial {number}: no such finished trial (trials {', '.join(map(str, trials['trial']))})")
    return rows.iloc[0]


def trial_config(spec: StudySpec, row: pd.Series, path: Path) -> TrialConfig:
    """The trial's settings: the recorded study with the trial's sampled values, checked
    against every param the trial logged."""
    where = f"{path}: trial {row['trial']}"
    try:
        values = report.space_values(spec.search.model_dump()["space"], row)
    except KeyError as exc:
        raise InputError(f"{where}: param.{exc.args[0]}: missing or not a value of the study's search space") from None
    try:
        cfg = spec.with_params(values)
    except ValidationError as exc:
        raise InputError(f"{where}: not a valid trial of the manifest's study ({format_validation_error(exc)})") from None
    for key, value in cfg.flat().items():
        logged = row.get(f"param.{key}")
        if logged is not None and not pd.isna(logged) and not report.same_value(logged, value):
            raise InputError(f"{where}: param.{key}: {logged} in trials.csv but {value} from the manifest's study")
    return cfg


def compared(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite metrics that replay compares (timing left out)."""
    out = {}
    for name, value in metrics.items():
        if any(fnmatch.fnmatch(name, t) for t in TIMING):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[name] = number
    return out


def rerun(cfg: TrialConfig, objective: str, direction: str, data_dir: str | None) -> tuple[dict[str, float], str]:
    """Train and evaluate `cfg` through vaebench.trial into a throwaway MLflow store; its
    metrics as MLflow holds them (what trials.csv was read from) and the dataset fingerprint."""
    ds = trial.load_data(cfg, data_dir)  # here: the default data folder is relative (./data)
    with tempfile.TemporaryDirectory(prefix="vaebench-replay-") as tmp, contextlib.chdir(tmp):
        # MLflow puts artifacts under ./mlruns: inside the temporary folder
        tracker = tk.StudyTracker.open(f"sqlite:///{Path(tmp) / 'mlflow.db'}", cfg.name)
        parent = tracker.create_parent({tk.OBJECTIVE: objective, tk.DIRECTION: direction}, {})
        run = tracker.start_trial(parent, 0, "replay", trial.environment())
        run.log_params(cfg.flat())
        trial.train_and_evaluate(cfg, ds, run, [])
        run.finish("COMPLETE")
        return run.metrics(), ds.fingerprint


def changes(recorded: dict[str, Any], now: dict[str, Any], dataset: str) -> list[Change]:
    """What differs between the recorded manifest and this machine, as far as numbers go."""
    out = []
    for name in dict.fromkeys([*recorded["packages"], *now["packages"]]):  # full versions: torch's +cu130 too
        old, new = recorded["packages"].get(name), now["packages"].get(name)
        if old != new:
            out.append(Change(f"{name} {old} -> {new}", name))
    if recorded["python"].get("version") != now["python"]["version"]:
        out.append(Change(f"Python {recorded['python'].get('version')} -> {now['python']['version']}"))
    old_v, new_v = recorded["vaebench"], now["vaebench"]
    if old_v.get("version") != new_v["version"]:
        out.append(Change(f"vaebench {old_v.get('version')} -> {new_v['version']}"))
    old_git, new_git = old_v.get("git") or {}, new_v["git"] or {}
    if old_git.get("commit") and new_git.get("commit") and old_git["commit"] != new_git["commit"]:
        out.append(Change(f"vaebench commit {old_git['commit'][:10]} -> {new_git['commit'][:10]}"))
    for key in HARDWARE:
        old, new = recorded["hardware"].get(key), now["hardware"].get(key)
        if old != new:
            out.append(Change(f"{key.replace('_', ' ')} {old} -> {new}"))
    for file, old in (recorded.get("plugins") or {}).items():
        new = now.get("plugins", {}).get(file)
        if old != new:
            out.append(Change(f"plugin {file} sha256 {old[:12]} -> {(new or 'not loaded')[:12]} (the model's code)"))
    old_fp, new_fp = recorded["datasets"].get(dataset), now["datasets"][dataset]
    if old_fp != new_fp:
        out.append(Change(f"{dataset} fingerprint {old_fp} -> {new_fp} (other data)"))
    return out


def differences(recorded: dict[str, float], replayed: dict[str, float], found: list[Change]) -> pd.DataFrame:
    """One row per metric whose value is not bit for bit the recorded one."""
    rows = []
    for name in sorted(recorded.keys() | replayed.keys()):
        old, new = recorded.get(name, math.nan), replayed.get(name, math.nan)
        if old == new:
            continue
        why = [c.text for c in found if c.explains(name)]
        rows.append({"metric": name, "recorded": repr(old), "replayed": repr(new),
                     "difference": f"{new - old:+.3g}", "explained by": "; ".join(why) or "no recorded change"})
    return pd.DataFrame(rows, columns=["metric", "recorded", "replayed", "difference", "explained by"])


def replay(folder: Path, number: int | None = None, data_dir: str | None = None) -> Outcome:
    """Rerun trial `number` (default: the best) of the study reported in `folder`."""
    doc, spec, trials = load(folder)
    row = pick(trials, number, folder / "trials.csv")
    cfg = trial_config(spec, row, folder / "trials.csv")
    if problem := device_problem(cfg.device):
        raise InputError(f"{folder / 'trials.csv'}: trial {row['trial']}: param.device {cfg.device}: {problem}")
    trial.check_data(spec, folder / manifest.FILENAME, data_dir)  # missing or corrupt data files: bad input
    threads = doc["hardware"].get("torch_threads")
    before = torch.get_num_threads()
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)  # the recorded count: reductions split by thread count
    try:
        replayed, fingerprint = rerun(cfg, spec.search.objective, spec.search.direction, data_dir)
        now = manifest.collect({}, {cfg.dataset.name: fingerprint}, device=str(resolve_device(cfg.device)))
    finally:
        torch.set_num_threads(before)
    ids = set(report.TRIAL_ID_COLUMNS)
    recorded = compared({k: v for k, v in row.items() if k not in ids and not k.startswith(("param.", "tag."))})
    found = changes(doc, now, cfg.dataset.name)
    return Outcome(int(row["trial"]), str(row.get("run_name", "")), differences(recorded, compared(replayed), found),
                   len(recorded), found)


def summary(outcome: Outcome, folder: Path) -> str:
    """What `vaebench replay` prints."""
    head = f"replay of trial {outcome.trial} ({outcome.run_name}) from {folder}"
    if outcome.identical:
        return f"{head}: identical ({outcome.compared} metrics bit for bit; timing metrics not compared)"
    lines = [f"{head}: {len(outcome.differences)} of {outcome.compared} metrics differ (timing metrics not compared)",
             "changed since the recorded run: " + ("; ".join(c.text for c in outcome.changes) or
                                                   "nothing the manifest records (same versions, hardware and data)"),
             "", outcome.differences.to_string(index=False)]
    return "\n".join(lines)
