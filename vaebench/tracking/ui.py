"""What the MLflow UI shows of a study beyond params and metrics: the dataset input of each
trial, readable model names, descriptions, source tags, the parent's summary of the best
trial, the saved runs-page view (built by vaebench.tracking.view) and, on request, MLflow's
system metrics.

It decides what to write; tracking.py, which names every tag, writes it.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vaebench import data

from vaebench.tracking import view as mlflow_view
from vaebench.tracking import runs as tk
from vaebench.config import StudySpec


def log_dataset(run: tk.TrialRun, ds: data.Dataset, source: str, context: str = "training") -> tuple[str, str]:
    """Logs the run's dataset input (the Dataset column and filter of the runs page): its
    fingerprint as digest, where it came from, a tensor schema and each split's shape.
    Returns (name, digest), which the final metrics are linked to."""
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset
    from mlflow.types import Schema, TensorSpec

    schema = TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype("float32"), (-1, *ds.input_shape))]),
        targets=Schema([TensorSpec(np.dtype("int64"), (-1,))]),
    )
    profile = {f"{split}_shape": list(getattr(ds, split).x.shape) for split in data.SPLITS}
    dataset = Dataset(name=ds.name, digest=ds.fingerprint, source_type="local", source=json.dumps({"uri": source}),
                      schema=json.dumps(schema.to_dict()), profile=json.dumps(profile))
    run.log_input(dataset, context)
    return ds.name, ds.fingerprint


def logged_model_name(number: int, params: dict[str, Any]) -> str:
    """`t005-beta0p5-seed1`: unique in the study and readable; MLflow refuses dots (and / : %
    and quotes) in model names, so 0.5 is written 0p5 and -1 m1."""
    def part(key: str, value: Any) -> list[str]:
        if isinstance(value, dict):
            return [p for sub, v in value.items() for p in part(sub, v)]
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        text = re.sub(r"[^A-Za-z0-9_]+", "_", text.replace(".", "p").replace("-", "m")).strip("_")
        return [key.rsplit(".", 1)[-1] + text]

    return "-".join([f"t{number:03d}"] + [p for k, v in params.items() for p in part(k, v)])


def trial_summary(name: str, objective: str, metrics: dict[str, float]) -> str:
    """A child run's one-line description: `t003 beta=1 seed=0: val_elbo -32.49, test_elbo -32.55, ...`."""
    shown = [k for k in dict.fromkeys((objective, *mlflow_view.HEADLINE))
             if k in metrics and math.isfinite(metrics[k])]
    return f"{name}: " + ", ".join(f"{k} {metrics[k]:.4g}" for k in shown)


def describe_run(run: tk.TrialRun, text: str) -> None:
    run.set_tags({tk.NOTE: text})


def describe_experiment(tracker: tk.StudyTracker, text: str) -> None:
    if text:
        tracker.set_experiment_tag(tk.NOTE, text)


def summarize_parent(parent: tk.TrialRun, best_run_id: str, objective: str) -> None:
    """The parent run carries the best trial's objective and headline metrics under the same
    names, and a description (the study's, then a link to that trial)."""
    best = parent.client.get_run(best_run_id)
    keys = [k for k in dict.fromkeys((objective, *mlflow_view.HEADLINE)) if k in best.data.metrics]
    parent.log_final({k: best.data.metrics[k] for k in keys})
    link = f"[{best.info.run_name}](#/experiments/{best.info.experiment_id}/runs/{best_run_id})"
    values = ", ".join(f"{k} {best.data.metrics[k]:.4g}" for k in keys)
    study = parent.tags().get(tk.DESCRIPTION, "")
    describe_run(parent, (f"{study}\n\n" if study else "") + f"Best trial: {link} ({values}).")


def source_tags() -> dict[str, str]:
    """User, source and git tags as `mlflow.start_run` would set them (Source and User columns),
    for runs created through MlflowClient, which sets none."""
    from mlflow.tracking.context.registry import resolve_tags

    return {k: v for k, v in resolve_tags().items() if k.startswith(("mlflow.source.", "mlflow.user"))}


def save_view(tracker: tk.StudyTracker, spec: StudySpec, mlflow_version: str | None = None) -> bool:
    """Writes the study's saved runs-page view on its experiment, only for the MLflow versions
    whose UI is tested to load it; returns whether it did."""
    if not mlflow_view.view_supported(mlflow_version or importlib.metadata.version("mlflow")):
        return False
    key, value = mlflow_view.view_tag(spec, int(time.time() * 1000))
    tracker.set_experiment_tag(key, value)
    return True


SYSTEM_INTERVAL_S = 10.0  # MLflow's default; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it


def system_metrics_available() -> bool:
    return importlib.util.find_spec("psutil") is not None


@contextmanager
def system_metrics(run: tk.TrialRun, interval_s: float = SYSTEM_INTERVAL_S) -> Iterator[None]:
    """MLflow's system metrics monitor (CPU, memory, disk, network; GPU where nvidia-ml-py finds
    one) on `run` while the block runs: a sample every `interval_s` and one more at the end, so
    a trial shorter than the interval is measured too (psutil's CPU share since the last
    sample). A resumed run goes on from its last step."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=interval_s, resume_logging=True,
                                   tracking_uri=run.client.tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
