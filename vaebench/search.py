"""Optuna: build (or resume) the study, define the objective, run it.

A trial is: sample values -> TrialConfig -> data.load -> models.build -> train.fit ->
metrics.evaluate, tracked as one MLflow child run. The Optuna objective is a val_ or
train_ metric of the last epoch; test metrics are reported, never optimised.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlflow
import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from vaebench import __version__, data, figures, metrics, models, train
from vaebench.config import Range, StudySpec, TrialConfig
from vaebench.errors import DivergenceError, InputError
from vaebench.tracking import DIRECTION, OBJECTIVE, StudyTracker, TensorBoardRun, TrialRun

PARENT_ATTR = "mlflow_parent_run_id"
ENVIRONMENT = {
    "vaebench.version": __version__,
    "vaebench.torch_version": torch.__version__,
    "vaebench.mlflow_version": importlib.metadata.version("mlflow"),
    "vaebench.optuna_version": optuna.__version__,
    "vaebench.python_version": platform.python_version(),
    "vaebench.host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
}
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = 30  # a trial whose worker stops beating for GRACE_S is failed and retried once
GRACE_S = 120

SAMPLERS: dict[str, Callable[[StudySpec], optuna.samplers.BaseSampler]] = {
    "grid": lambda s: optuna.samplers.GridSampler(dict(s.search.space), seed=s.seed),
    "tpe": lambda s: optuna.samplers.TPESampler(seed=s.seed),
    "random": lambda s: optuna.samplers.RandomSampler(seed=s.seed),
}
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (`*.journal` or `journal:PATH`) or any SQLAlchemy URL (SQLite, PostgreSQL).

    RDB storages get Optuna's heartbeat, so a trial of a killed worker is failed and retried.
    """
    try:
        if url.startswith("journal:") or url.endswith(".journal"):
            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except Exception as exc:  # noqa: BLE001 - any driver error is a bad --storage
        raise InputError(f"--storage {url}: cannot open ({str(exc).splitlines()[0]})") from None


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=SAMPLERS[spec.search.sampler](spec),
        pruner=PRUNERS[spec.search.pruner](),
        direction=spec.search.direction,
        load_if_exists=True,
    )


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Lists are categorical choices (grid points); ranges are float/int distributions."""
    params: dict[str, Any] = {}
    for key, dom in spec.search.space.items():
        if isinstance(dom, Range):
            if dom.type == "int":
                params[key] = trial.suggest_int(key, int(dom.low), int(dom.high), log=dom.log)
            else:
                params[key] = trial.suggest_float(key, dom.low, dom.high, log=dom.log)
        else:
            params[key] = trial.suggest_categorical(key, dom)
    return params


def run_name(number: int, params: dict[str, Any]) -> str:
    """`t007 beta=4 seed=1`: the trial number and its sampled values, short keys."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join([f"t{number:03d}"] + [f"{k.rsplit('.', 1)[-1]}={fmt(v)}" for k, v in params.items()])


def build_model(cfg: TrialConfig, ds: data.Dataset) -> models.VAEModel:
    """Seeded so that the same config and seed give the same initial weights."""
    torch.manual_seed(cfg.seed)
    m = cfg.model
    return models.build(
        arch=m.arch, objective=m.objective, latent_dim=m.latent_dim, likelihood=m.likelihood,
        input_shape=ds.input_shape, **m.hparams(),
    )


def load_data(cfg: TrialConfig, data_dir: str | None = None) -> data.Dataset:
    d = cfg.dataset
    return data.load(d.name, seed=d.seed, binarize=d.binarize, val_fraction=d.val_fraction,
                     test_fraction=d.test_fraction, data_dir=data_dir)


def train_and_evaluate(
    cfg: TrialConfig, ds: data.Dataset, run: TrialRun, callbacks: list[train.EpochCallback],
    board: TensorBoardRun | None = None,
) -> dict[str, float]:
    """fit + evaluate one config, logging each epoch and the final scores to `run` (and `board`)."""
    model = build_model(cfg, ds)
    log_epoch = lambda epoch, m: run.log_metrics({k: v for k, v in m.items() if k != "epoch"}, step=epoch)  # noqa: E731
    loggers = [log_epoch] + ([board.log_epoch] if board else [])
    history = train.fit(
        model, ds, epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
        seed=cfg.seed, grad_clip=cfg.train.grad_clip, kl_warmup_epochs=cfg.train.kl_warmup_epochs,
        callbacks=[*loggers, *callbacks], device=cfg.device, eval_batch_size=cfg.eval.batch_size,
    )
    scores = metrics.evaluate(model, ds, split="test", batch_size=cfg.eval.batch_size,
                              seed=cfg.seed, iwae_k=cfg.eval.iwae_k)
    bad = [k for k, v in scores.items() if k.endswith(("_elbo", "_recon", "_kl")) and not math.isfinite(v)]
    if bad:
        raise DivergenceError(f"non-finite {', '.join(bad)} on the test split")
    final = scores | {
        "train_samples_per_s": history.train_samples_per_s,
        "train_seconds": history.train_seconds,
        "n_params": float(model.n_params),
    }
    run.log_metrics(final, step=cfg.train.epochs)  # the last epoch's val_* are logged already
    if board:
        board.log_epoch(cfg.train.epochs, final)
    log_trial_artifacts(model, ds, run, board, step=cfg.train.epochs)
    return history.last | final


def log_trial_artifacts(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, board: TensorBoardRun | None = None, step: int = 0
) -> None:
    """Pictures of the trained model, its per-dimension KL, and the model itself (MLflow format)."""
    import mlflow.pytorch

    x = ds.test.x
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pictures = [figures.reconstructions(model, x, folder / "reconstructions.png")]
        means = metrics.posterior_means(model, x)
        pictures.append(figures.latent_pca(means, ds.test.y.numpy(), folder / "latent_pca.png"))
        if model.is_variational:
            pictures.append(figures.samples(model, folder / "samples.png"))
            pictures.append(figures.traversals(model, x[:1], folder / "traversals.png"))
            kl = metrics.kl_per_dim(model, x)
            pictures.append(figures.kl_per_dim(kl, folder / "kl_per_dim.png"))
            table = folder / "kl_per_dim.csv"
            table.write_text("dim,kl_nats\n" + "".join(f"{d},{v:.6g}\n" for d, v in enumerate(kl)))
            pictures.append(table)
        for path in pictures:
            run.log_artifact(path)
            if board and path.suffix == ".png":
                board.log_picture(path, step)
    model.eval()
    example = x[:2].to(next(model.parameters()).device)
    info = mlflow.pytorch.log_model(model, name="model", input_example=example.cpu().numpy(),
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                                    run_id=run.run_id)
    run.set_tags({"vaebench.model_uri": info.model_uri})


@dataclass
class Progress:
    """What the CLI's progress bar shows; search calls these hooks."""

    on_epoch: Callable[[int, int, int], None] = lambda trial, epoch, epochs: None
    on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] = lambda s, t: None


@dataclass
class StudyRun:
    study: optuna.Study
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    finished: int
    total: int
    failures: dict[int, str] = field(default_factory=dict)


def make_objective(
    spec: StudySpec, tracker: StudyTracker, parent_id: str, progress: Progress,
    failures: dict[int, str], data_dir: str | None = None, tensorboard_dir: str | None = None,
) -> Callable[[optuna.Trial], float]:
    objective_key = spec.search.objective

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, spec)
        cfg = spec.with_params(params)
        ds = load_data(cfg, data_dir)
        name = run_name(trial.number, params)
        run = tracker.start_trial(parent_id, trial.number, name, ENVIRONMENT | {
            "vaebench.dataset_fingerprint": ds.fingerprint,
            "vaebench.device": str(train.resolve_device(cfg.device)),
            "vaebench.seed": cfg.seed,
            "vaebench.optuna_trial_id": trial._trial_id,
        })
        run.log_params(cfg.flat())
        trial.set_user_attr("mlflow_run_id", run.run_id)

        def report(epoch: int, m: dict[str, float]) -> None:
            progress.on_epoch(trial.number, epoch, cfg.train.epochs)
            trial.report(m[objective_key], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        board = TensorBoardRun(Path(tensorboard_dir) / spec.name / name) if tensorboard_dir else None
        try:
            final = train_and_evaluate(cfg, ds, run, [report], board)
        except optuna.TrialPruned as exc:
            run.finish("PRUNED", str(exc))
            raise
        except KeyboardInterrupt:
            run.finish("INTERRUPTED", "interrupted by the user (SIGINT)")
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            failures[trial.number] = reason
            trial.set_user_attr("failure_reason", reason)
            run.finish("FAIL", reason + "\n" + traceback.format_exc(limit=5))
            raise
        finally:
            if board:
                board.close()
        run.finish("COMPLETE")
        return final[objective_key]

    return objective


def parent_run(spec: StudySpec, study: optuna.Study, tracker: StudyTracker, path: str) -> str:
    """The study's one parent run: created once, its id kept in the study's user attributes."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if tracker.has_run(run_id):
        return run_id
    run_id = tracker.create_parent(
        tags={OBJECTIVE: spec.search.objective, DIRECTION: spec.search.direction,
              "vaebench.study_file": path, "vaebench.sampler": spec.search.sampler,
              "mlflow.note.content": spec.description},
        params={f"search.{k}": v for k, v in spec.search.model_dump(exclude={"space"}).items()}
        | {"search.space": json.dumps(spec.search.model_dump()["space"])},
    )
    if path:
        tracker.client.log_artifact(run_id, path)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def count_done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


def run_study(
    spec: StudySpec, *, storage_url: str, tracking_uri: str, study_path: str = "",
    n_trials: int | None = None, progress: Progress | None = None, data_dir: str | None = None,
    tensorboard_dir: str | None = None,
) -> StudyRun:
    """Run (or resume) the study until it has `n_trials` finished (complete or pruned) trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri)  # log_model uses the global URI: keep it the study's
    progress = progress or Progress()
    total = n_trials or spec.search.total_trials
    study = create_study(spec, open_storage(storage_url))
    tracker = StudyTracker.open(tracking_uri, spec.name)
    parent_id = parent_run(spec, study, tracker, study_path)
    failures: dict[int, str] = {}
    remaining = total - count_done(study)
    if remaining > 0:
        study.optimize(
            make_objective(spec, tracker, parent_id, progress, failures, data_dir, tensorboard_dir),
            n_trials=remaining,
            catch=(Exception,),
            callbacks=[optuna.study.MaxTrialsCallback(total, states=DONE), progress.on_trial_end],
            gc_after_trial=False,
        )
    done = count_done(study)
    if done >= total:
        best = study.best_value if any(t.state == TrialState.COMPLETE for t in study.trials) else math.nan
        tracker.finish_parent(parent_id, {f"best_{spec.search.objective}": best, "n_trials_done": done})
    return StudyRun(study, parent_id, tracker.experiment_id, tracking_uri, done, total, failures)
