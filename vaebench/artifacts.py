"""What a trial leaves in its MLflow run besides metrics: pictures, its weights, the model.

Every trial gets the cheap part, written in line: image grids (reconstructions, prior samples,
latent traversals), the KL of each latent dimension as a CSV, and its weights
(`weights/state_dict.pt`, enough to rebuild the model from the run's params). The costly part,
matplotlib charts of the latent PCA and of the KL per dimension and an MLflow model, goes to
every trial by default too; a search hands it to a `Writer`, a process of its own, while the
next trial trains. A trial's model is the light one (vaebench.mlflow_model: its weights,
loaded by vaebench); the study's best trial gets the standalone `pt2` model (torch.export,
loads without vaebench) at the end, which replaces its light one. No pickle is ever written
or loaded. With `vaebench run --artifacts best` only the best trial gets the costly part,
rebuilt from its weights. benchmarks/README.md gives what each part costs.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import tempfile
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature
from safetensors.torch import save_file

from vaebench import __version__, data, figures, metrics, models
from vaebench.board import TensorBoardRun
from vaebench.tracking import MODEL_FORMAT, MODEL_URI, TrialRun, resolve_tracking_uri

WEIGHTS = "weights/state_dict.pt"
LIGHT_MODEL = Path(__file__).with_name("mlflow_model.py")  # MLflow runs it to load a light model (not imported here:
LIGHT_ARTIFACTS = ("weights", "config")  # it registers itself with MLflow); the names it reads its files by


def log_trial(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, board: TensorBoardRun | None = None, step: int = 0,
) -> np.ndarray | None:
    """The per-trial set: reconstructions, samples and traversals, KL per dimension (CSV), the
    weights. Returns the KL per dimension (None for a deterministic model), for `full_set`."""
    x, kl = ds.test.x, None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [figures.reconstructions(model, x, folder / "reconstructions.png")]
        if model.is_variational:
            files.append(figures.samples(model, folder / "samples.png"))
            files.append(figures.traversals(model, x[:1], folder / "traversals.png"))
            kl = metrics.kl_per_dim(model, x)
            table = folder / "kl_per_dim.csv"
            table.write_text("dim,kl_nats\n" + "".join(f"{d},{v:.6g}\n" for d, v in enumerate(kl)))
            files.append(table)
        for path in files:
            run.log_artifact(path)
            if board and path.suffix == ".png":
                board.log_picture(path, step)
        weights = folder / Path(WEIGHTS).name
        torch.save(model.state_dict(), weights)
        run.log_artifact(weights, Path(WEIGHTS).parent.as_posix())
    return kl


@dataclass(frozen=True)
class FullSet:
    """What the costly set of one trial needs, as plain data (the weights, not the module), so
    that another process can write it: the charts' arrays and the model to export."""

    tracking_uri: str
    run_id: str
    experiment_id: str
    name: str  # the logged model's name
    params: dict[str, str]  # the logged model's params
    step: int  # its output step (the last epoch)
    model: dict[str, Any]  # models.build(**model) rebuilds it
    weights: dict[str, np.ndarray]  # numpy: pickled by value (torch would pass shared memory)
    example: np.ndarray  # two test inputs: the model's input example
    means: np.ndarray  # test posterior means, for the PCA chart
    labels: np.ndarray
    kl: np.ndarray | None  # KL per dimension (None: a deterministic model)
    standalone: bool = False  # the `pt2` model (replacing a light one the run has), else the light model
    charts: bool = True  # False: the run has them already


def full_set(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, experiment_id: str, name: str = "model",
    params: dict[str, Any] | None = None, *, step: int = 0, kl: np.ndarray | None = None,
    standalone: bool = False, charts: bool = True,
) -> FullSet:
    """The costly set of `model`'s trial (its run `run`), a logged model of the study's
    experiment (not the process's active one) named `name`, with `params`, output at `step`.
    `kl`: `log_trial`'s result, not computed again."""
    x = ds.test.x
    if model.is_variational and kl is None:
        kl = metrics.kl_per_dim(model, x)
    return FullSet(
        tracking_uri=run.client.tracking_uri, run_id=run.run_id, experiment_id=experiment_id, name=name,
        params={k: str(v) for k, v in (params or {}).items()}, step=step, model=model.config,
        weights={k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()},
        example=x[:2].cpu().numpy().copy(), means=metrics.posterior_means(model, x), labels=ds.test.y.numpy(), kl=kl,
        standalone=standalone, charts=charts,
    )


def write_full(job: FullSet) -> float:
    """Writes `job`: the PCA and KL charts and the model, then the run's MODEL_URI tag.
    Returns the CPU seconds it took (this process's)."""
    start = time.process_time()
    resolve_tracking_uri(job.tracking_uri)  # MLflow's model logging writes to the global store
    run = TrialRun(MlflowClient(job.tracking_uri), job.run_id)
    replaced = run.tags().get(MODEL_URI) if job.standalone else None
    model = models.build(**job.model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in job.weights.items()})
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if job.charts:
            run.log_artifact(figures.latent_pca(job.means, job.labels, folder / "latent_pca.png"))
            if job.kl is not None:
                run.log_artifact(figures.kl_per_dim(job.kl, folder / "kl_per_dim.png"))
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        if job.standalone:
            # validate_serving_input=False: MLflow would load the model back and run it on the
            # input example, a third of the cost; the tests load and run the models instead.
            uri = run.log_model(mlflow.pytorch, job.experiment_id, job.name, job.params, job.step,
                                pytorch_model=model, input_example=job.example, serialization_format="pt2",
                                validate_serving_input=False, pip_requirements=requirements)
        else:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "weights.safetensors")
            (folder / "config.json").write_text(json.dumps(job.model))
            with torch.no_grad():
                signature = infer_signature(job.example, model(torch.from_numpy(job.example)).numpy())
            with warnings.catch_warnings():  # the signature is given: an example would only be run
                warnings.filterwarnings("ignore", message=".*input example was not provided")
                uri = run.log_model(mlflow.pyfunc, job.experiment_id, job.name, job.params, job.step,
                                    python_model=str(LIGHT_MODEL), signature=signature,
                                    artifacts=dict(zip(LIGHT_ARTIFACTS, [str(folder / "weights.safetensors"),
                                                                          str(folder / "config.json")])),
                                    pip_requirements=[f"vaebench=={__version__}", *requirements])
    run.set_tags({MODEL_URI: uri, MODEL_FORMAT: "pt2" if job.standalone else "vaebench"})
    if replaced and replaced != uri:
        run.delete_model(replaced)  # one model per trial: the standalone one replaces the light one
    return time.process_time() - start


def log_full(model: models.VAEModel, ds: data.Dataset, run: TrialRun, experiment_id: str, name: str = "model",
             params: dict[str, Any] | None = None, *, step: int = 0, kl: np.ndarray | None = None,
             standalone: bool = False, charts: bool = True) -> None:
    """The costly set (see `full_set`), written here and now."""
    write_full(full_set(model, ds, run, experiment_id, name, params, step=step, kl=kl, standalone=standalone,
                        charts=charts))


def has_full(run: TrialRun, standalone: bool = False) -> bool:
    """Whether the run has the costly set (with its model in the `pt2` format, if `standalone`)."""
    tags = run.tags()
    return MODEL_URI in tags and (not standalone or tags.get(MODEL_FORMAT, "pt2") == "pt2")


def load_weights(run: TrialRun, model: models.VAEModel) -> models.VAEModel:
    """Loads a trial's logged weights into `model` (built from the same config)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = run.download(WEIGHTS, tmp)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


# --- the writer process --------------------------------------------------------------------


def _writer_started() -> None:
    """In the writer process: Ctrl-C is the worker's to handle (the writer finishes what it
    was given); one torch thread at a lower priority, so that it takes what training leaves
    of the cores; MLflow's chatter off."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):  # not on Windows
        os.nice(10)
    torch.set_num_threads(1)
    from vaebench.tracking import quiet

    quiet()


_pool: ProcessPoolExecutor | None = None


def _submit(job: FullSet) -> Future[float]:
    """To the one writer process of this Python process, started at its first job and shared
    by the studies it runs (its start, importing torch and MLflow, takes seconds); a new one
    if it died. Spawned, not forked: torch's thread pools do not survive a fork."""
    global _pool
    for _ in range(2):
        if _pool is None:
            _pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), initializer=_writer_started)
        try:
            return _pool.submit(write_full, job)
        except BrokenProcessPool:
            _pool = None
    raise BrokenProcessPool("the writer process cannot start")


class Writer:
    """Trials' costly sets, written in order by the writer process while the next trial
    trains. A process, not a thread: torch.export sets torch's process-wide "compiling" flag,
    under which a training thread's Adam step fails. `wait` returns once all are written."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, Future[float]]] = []
        self.cpu_s = 0.0  # the writer's CPU seconds for the jobs waited for

    def submit(self, job: FullSet) -> None:
        self.jobs.append((job.name, _submit(job)))

    def wait(self) -> list[str]:
        """Waits for every job submitted; returns the failures, one line each (`name: error`).
        Interrupted (a second Ctrl-C), the jobs not started are dropped."""
        jobs, self.jobs = self.jobs, []
        failures = []
        try:
            for name, job in jobs:
                try:
                    self.cpu_s += job.result()
                except Exception as exc:  # noqa: BLE001 - reported, the trial's numbers are safe
                    failures.append(f"{name}: charts and model not written: {type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            for _, job in jobs:
                job.cancel()
            raise
        return failures
