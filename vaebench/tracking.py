"""MLflow: one experiment per study, one parent run per study, one child run per trial.

Everything goes through MlflowClient with explicit run ids: MLflow's fluent active-run
stack is per thread, so `nested=True` alone breaks under threads and worker processes. A
child run is linked to its parent by the `mlflow.parentRunId` tag, which is exactly what
`mlflow.start_run(parent_run_id=...)` sets. Each epoch's metrics go in one log_batch call.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from vaebench.errors import InputError

# Tag names: the report reads only these (and params/metrics) back.
STUDY = "vaebench.study"
ROLE = "vaebench.role"  # "study" on the parent, "trial" on children
TRIAL = "vaebench.trial_number"
STATE = "vaebench.state"  # COMPLETE / PRUNED / FAIL / INTERRUPTED
REASON = "vaebench.failure_reason"
OBJECTIVE = "vaebench.objective"
DIRECTION = "vaebench.direction"
PARENT = "mlflow.parentRunId"

# How a trial's end maps onto MLflow's run status.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "INTERRUPTED": "KILLED"}
_MAX_BATCH = 100  # MLflow's limit of params per log_batch call
_MAX_METRICS = 1000  # and of metrics
FLUSH_S = 2.0  # longest a trial's per-epoch metrics wait before they are written


def quiet() -> None:
    """Keep MLflow's and its migrations' INFO chatter and download bars out of the progress bar."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def redact(url: str) -> str:
    """A store URL fit to print: `postgresql://me:secret@db/x` -> `postgresql://me:***@db/x`."""
    return re.sub(r"(://[^/@:]+:)[^/@]+@", r"\1***@", url)


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default (./mlflow.db)."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.get_tracking_uri()


def short_reason(exc: BaseException) -> str:
    """One line for an error message: the OS reason (`[Errno 111] Connection refused`) when the
    exception wraps one, else its first line."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    line = errno.group(0) if errno else (text.strip().splitlines() or [type(exc).__name__])[0]
    return line[:300]


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (relative to the current folder); None for anything else."""
    if not url.lower().startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def check_store_url(url: str, what: str) -> None:
    """Refuse, before anything is written, a database URL that cannot work: an SQLite file in a
    folder that does not exist (or that is not an SQLite file), or a server that does not answer.
    `what` names the flag in the message."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InputError(f"{what}: not a database URL ({short_reason(exc)})") from None
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite":
        if path is not None:
            _check_sqlite_file(path, what)
        return
    import sqlalchemy

    timeout = {"connect_timeout": 10} if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb") else {}
    engine = None
    try:
        engine = sqlalchemy.create_engine(url, connect_args=timeout)
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - missing driver, refused, bad credentials: all bad input
        raise InputError(f"{what}: cannot connect ({short_reason(exc)})") from None
    finally:
        if engine is not None:
            engine.dispose()


def check_file_location(path: Path, what: str) -> None:
    """A store file can be created or opened at `path`: its folder exists and is writable, and
    nothing but a file is there already."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{what}: folder {folder} is not writable")
    if path.exists() and not path.is_file():
        raise InputError(f"{what}: {path} is not a file")


def _check_sqlite_file(path: Path, what: str) -> None:
    check_file_location(path, what)
    if path.exists():
        with path.open("rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise InputError(f"{what}: {path} is not an SQLite database")


def check_tracking_uri(uri: str, what: str = "tracking URI") -> None:
    """Fail fast on a tracking URI that cannot work (MLflow itself would retry an HTTP server
    for minutes); nothing is written. Other schemes (file:, databricks) are left to MLflow."""
    scheme = uri.split(":", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=10)
        except requests.RequestException as exc:
            raise InputError(f"{what} {redact(uri)}: unreachable ({short_reason(exc)})") from None
    elif scheme.split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        check_store_url(uri, f"{what} {redact(uri)}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """A metric that could not be computed is left out (shown empty), never logged as 0 or NaN."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


@dataclass
class TrialRun:
    """One trial's child run."""

    client: MlflowClient
    run_id: str
    flush_s: float = FLUSH_S
    buffer: list[Metric] = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)

    def log_metrics(self, metrics: dict[str, float], step: int = 0, buffered: bool = False) -> None:
        """Logs in one batched call. `buffered` (per-epoch metrics) holds them until `flush_s`
        has passed since the last write, then writes all held epochs, steps and times kept,
        in one call: a write costs ~6 ms on SQLite, so one per epoch would be 3% of a
        flagship trial on its own. `finish` (and an unbuffered call) writes what is held."""
        ts = _now_ms()
        self.buffer += [Metric(k, v, ts, step) for k, v in _finite(metrics).items()]
        if not buffered or time.monotonic() - self.flushed_at >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.buffer), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=self.buffer[i : i + _MAX_METRICS])
        self.buffer, self.flushed_at = [], time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self, state: str, reason: str | None = None) -> None:
        self.flush()
        tags = {STATE: state} | ({REASON: reason[:4000]} if reason else {})
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=RUN_STATUS[state])


@dataclass
class StudyTracker:
    """The study's experiment; creates the parent run and the trials' child runs."""

    client: MlflowClient
    experiment_id: str
    study: str

    @classmethod
    def open(cls, tracking_uri: str, study: str) -> StudyTracker:
        try:
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name(study)
        except Exception as exc:  # noqa: BLE001 - a store MLflow cannot open is a bad --tracking-uri
            raise InputError(f"tracking URI {redact(tracking_uri)}: cannot open ({short_reason(exc)})") from None
        if experiment is None:
            try:
                return cls(client, client.create_experiment(study), study)
            except MlflowException:  # another worker created it first
                experiment = client.get_experiment_by_name(study)
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return cls(client, experiment.experiment_id, study)

    def has_run(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except MlflowException:
            return False

    def create_parent(self, tags: dict[str, Any], params: dict[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study,
            tags={STUDY: self.study, ROLE: "study"} | {k: str(v) for k, v in tags.items()},
        )
        TrialRun(self.client, run.info.run_id).log_params(params)
        return run.info.run_id

    def resolve_parent(self, mine: str, window_s: float) -> str:
        """Of the parent runs started up to `window_s` before `mine` and not ended (a state tag
        other than RUNNING: a finished study of the same name), the earliest by (start_time,
        run_id): workers that raced to create the study's parent run all pick the same one, on
        any machine, with no lock."""
        start = self.client.get_run(mine).info.start_time
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{ROLE}` = 'study' and attributes.start_time >= {start - int(window_s * 1000)}",
            max_results=1000,
        )
        live = [(r.info.start_time, r.info.run_id) for r in found if r.data.tags.get(STATE, "RUNNING") == "RUNNING"]
        return min(live + [(start, mine)])[1]

    def reopen(self, run_id: str) -> None:
        """A resumed study's parent run is RUNNING again while a worker works on it."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            TrialRun(self.client, run_id).set_tags({STATE: "RUNNING"})

    def end_parent(self, run_id: str, state: str, summary: dict[str, float]) -> None:
        """COMPLETE -> FINISHED, INTERRUPTED -> KILLED, INCOMPLETE (trials failed) -> FAILED."""
        status = {"COMPLETE": "FINISHED", "INTERRUPTED": "KILLED", "INCOMPLETE": "FAILED"}[state]
        parent = TrialRun(self.client, run_id)
        parent.log_metrics(summary)
        parent.set_tags({STATE: state})
        self.client.set_terminated(run_id, status=status)

    def running_children(self, parent_id: str) -> list[Any]:
        """Child runs of `parent_id` still marked RUNNING (live trials, or orphans of dead workers)."""
        return self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT}` = '{parent_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )

    def start_trial(self, parent_id: str, number: int, name: str, tags: dict[str, Any]) -> TrialRun:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={STUDY: self.study, ROLE: "trial", TRIAL: str(number), PARENT: parent_id}
            | {k: str(v) for k, v in tags.items()},
        )
        return TrialRun(self.client, run.info.run_id)


class TensorBoardRun:
    """The same per-epoch scalars and pictures as MLflow, as TensorBoard event files."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in _finite(metrics).items():
            if name != "epoch":
                self.writer.add_scalar(name, value, epoch)

    def log_picture(self, path: Path, step: int) -> None:
        from torchvision.io import ImageReadMode, read_image

        self.writer.add_image(path.stem, read_image(str(path), ImageReadMode.RGB), step)

    def close(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


# -- what the MLflow UI shows: dataset, linked final metrics, model names, notes, colours ----

NOTE = "mlflow.note.content"  # the description of an experiment or a run (markdown)
DESCRIPTION = "vaebench.description"  # the study file's description, on the parent (its note adds the best trial)
RUN_COLOR = "mlflow.runColor"  # a run's colour in the runs table and charts
DATA_CONTEXT = "mlflow.data.context"  # the dataset input's role: training, evaluation


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as MLflow names it: final metrics are linked to it by name and digest."""

    name: str
    digest: str


def log_dataset(
    client: MlflowClient, run_id: str, name: str, digest: str, source: str, shapes: dict[str, tuple[int, ...]],
    context: str = "training",
) -> DatasetRef:
    """Logs the run's dataset input (the Dataset column and filter of the runs page): its
    fingerprint as digest, where it came from, a tensor schema and each split's shape."""
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    example = next(iter(shapes.values()))
    schema = TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype("float32"), (-1, *example[1:]))]),
        targets=Schema([TensorSpec(np.dtype("int64"), (-1,))]),
    )
    profile = {f"{split}_shape": list(shape) for split, shape in shapes.items()}
    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                      schema=json.dumps(schema.to_dict()), profile=json.dumps(profile))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag(DATA_CONTEXT, context)])])
    return DatasetRef(name, digest)


def log_final_metrics(
    client: MlflowClient, run_id: str, metrics: dict[str, float], model_id: str | None = None,
    dataset: DatasetRef | None = None,
) -> None:
    """A trial's final scores at step 0 (bars in the chart view, not a dot at the last epoch
    of a line), linked to its dataset and to `model_id`. `mlflow.<flavor>.log_model` links a
    run's step-0 metrics to the model it logs by itself (the Models tab's metric columns):
    give `model_id` only for a model logged otherwise, or the same metric is linked twice."""
    ts = _now_ms()
    link = {"model_id": model_id} | ({"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset else {})
    items = [Metric(k, v, ts, 0, **link) for k, v in _finite(metrics).items()]
    for i in range(0, len(items), _MAX_METRICS):
        client.log_batch(run_id, metrics=items[i : i + _MAX_METRICS])


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


def create_model(client: MlflowClient, experiment_id: str, run_id: str, name: str, params: dict[str, Any]) -> str:
    """A logged model for the run, named and with the trial's params; returns its id, for
    `log_final_metrics` and for `mlflow.pytorch.log_model(model_id=...)`."""
    model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                       params={k: str(v) for k, v in params.items()})
    return model.model_id


def describe_experiment(client: MlflowClient, experiment_id: str, text: str) -> None:
    if text:
        client.set_experiment_tag(experiment_id, NOTE, text)


def describe_run(client: MlflowClient, run_id: str, text: str) -> None:
    client.set_tag(run_id, NOTE, text)


def trial_summary(name: str, objective: str, metrics: dict[str, float], headline: tuple[str, ...]) -> str:
    """A child run's one-line description: `t003 beta=1 seed=0: val_elbo -32.49, test_elbo -32.55, ...`."""
    shown = [k for k in dict.fromkeys((objective, *headline)) if k in _finite(metrics)]
    return f"{name}: " + ", ".join(f"{k} {metrics[k]:.4g}" for k in shown)


def summarize_parent(
    client: MlflowClient, parent_id: str, best_run_id: str, objective: str, headline: tuple[str, ...],
) -> None:
    """The parent run carries the best trial's objective and headline metrics under the same
    names, and a description (the study's, then a link to that trial)."""
    best = client.get_run(best_run_id)
    keys = [k for k in dict.fromkeys((objective, *headline)) if k in best.data.metrics]
    log_final_metrics(client, parent_id, {k: best.data.metrics[k] for k in keys})
    link = f"[{best.info.run_name}](#/experiments/{best.info.experiment_id}/runs/{best_run_id})"
    values = ", ".join(f"{k} {best.data.metrics[k]:.4g}" for k in keys)
    study = client.get_run(parent_id).data.tags.get(DESCRIPTION, "")
    describe_run(client, parent_id, (f"{study}\n\n" if study else "") + f"Best trial: {link} ({values}).")


def source_tags() -> dict[str, str]:
    """User, source and git tags as `mlflow.start_run` would set them (Source and User columns),
    for runs created through MlflowClient, which sets none."""
    from mlflow.tracking.context.registry import resolve_tags

    return {k: v for k, v in resolve_tags().items() if k.startswith(("mlflow.source.", "mlflow.user"))}


def save_view(client: MlflowClient, experiment_id: str, spec: Any, mlflow_version: str | None = None) -> bool:
    """Writes the study's saved runs-page view (vaebench.mlflow_view) on its experiment, only
    for the MLflow versions whose UI is tested to load it; returns whether it did."""
    import importlib.metadata

    from vaebench import mlflow_view

    if not mlflow_view.view_supported(mlflow_version or importlib.metadata.version("mlflow")):
        return False
    key, value = mlflow_view.view_tag(spec, _now_ms())
    client.set_experiment_tag(experiment_id, key, value)
    return True
