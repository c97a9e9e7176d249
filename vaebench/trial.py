"""One trial without Optuna: data -> model -> fit -> evaluate -> a tracked MLflow run.

What the search runs for every trial, and what notebooks and benchmarks call to train one
configuration the way a study would (same seeding, same metrics, same run contents).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from vaebench import __version__, checkpoint, data, manifest, metrics, models, train

from vaebench.metrics import sampling
from vaebench.tracking import artifacts
from vaebench import tracking as tk
from vaebench.config import StudySpec, TrialConfig, choice_label
from vaebench.errors import DivergenceError, InputError
from vaebench.stores import short_reason
from vaebench.tracking.tensorboard import TensorBoardRun
from vaebench.tracking import TrialRun


def environment() -> dict[str, str]:
    """Versions and host, tagged on every child run (threads as set by --threads): the values
    the study's manifest records."""
    versions = manifest.package_versions(("torch", "mlflow", "optuna"))
    hw = manifest.hardware()
    return {
        tk.VERSION: __version__,
        tk.TORCH_VERSION: str(versions["torch"]),
        tk.MLFLOW_VERSION: str(versions["mlflow"]),
        tk.OPTUNA_VERSION: str(versions["optuna"]),
        tk.PYTHON_VERSION: manifest.python()["version"],
        tk.HOST: f"{hw['system']} {hw['machine']}, {hw['cpu_count']} CPUs, {hw['torch_threads']} torch threads",
    }


def run_name(number: int, params: dict[str, Any]) -> str:
    """`t007 beta=4 seed=1`: the trial number and its sampled values, short keys."""
    def fmt(k: str, v: Any) -> str:
        if isinstance(v, dict):  # a mapping choice: its keys
            return " ".join(fmt(sub, x) for sub, x in v.items())
        return f"{k.rsplit('.', 1)[-1]}=" + (f"{v:.4g}" if isinstance(v, float) else str(choice_label(v)))

    return " ".join([f"t{number:03d}"] + [fmt(k, v) for k, v in params.items()])


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


def check_data(spec: StudySpec, path: Path, data_dir: str | None) -> dict[str, str]:
    """Load every dataset the study can use now (it is cached for the trials): missing or
    corrupt files are bad input, reported before anything is written. Returns each dataset's
    fingerprint by name."""
    names = [spec.dataset.name]
    choices = spec.search.space.get("dataset.name")
    if isinstance(choices, list):
        names += [str(c) for c in choices]
    d = spec.dataset
    fingerprints = {}
    for name in dict.fromkeys(names):
        try:
            fingerprints[name] = data.load(name, seed=d.seed, binarize=d.binarize, val_fraction=d.val_fraction,
                      test_fraction=d.test_fraction, data_dir=data_dir, download=d.download).fingerprint
        except (InputError, NameError, AttributeError, TypeError, AssertionError):
            raise  # bad input said already, or a bug: not the files' fault
        except Exception as exc:  # noqa: BLE001 - whatever a loader raises on missing or corrupt files
            raise InputError(f"{path}: dataset.name: {name}: cannot load ({short_reason(exc)})") from None
    return fingerprints


def stage_evaluation(cfg: TrialConfig, model: models.VAEModel, ds: data.Dataset,
                     log: Callable[[dict[str, float], int], None]) -> train.EpochCallback | None:
    """`test_iwae_ll_subset` (k = eval.iwae_k, on the first eval.stage_points test examples) at
    the end of every learning-rate stage and of training, so a long schedule's curve shows
    where it heads. Evaluation only: its noise comes from its own seeded generators, so
    training runs the same with or without it."""
    if not cfg.eval.stage_points:
        return None
    ends = set(cfg.train.schedule.build(cfg.train.lr).stage_ends(cfg.train.epochs))
    x = ds.test.x[: cfg.eval.stage_points]

    def at_stage_end(epoch: int, _: dict[str, float]) -> None:
        if epoch in ends:
            value = metrics.iwae_log_likelihood(model, x, cfg.eval.iwae_k, seed=cfg.seed).mean()
            log({"test_iwae_ll_subset": float(value)}, epoch)

    return at_stage_end


def fit_settings(cfg: TrialConfig) -> dict[str, Any]:
    """The config's arguments to train.fit: written once, for the tracked trial and the benchmarks."""
    t = cfg.train
    return {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "seed": cfg.seed, "adam_eps": t.adam_eps,
            "schedule": t.schedule.build(t.lr), "grad_clip": t.grad_clip, "kl_warmup_epochs": t.kl_warmup_epochs,
            "device": cfg.device, "eval_batch_size": cfg.eval.batch_size, "step": t.step}


def evaluate_settings(cfg: TrialConfig) -> dict[str, Any]:
    """The config's arguments to metrics.evaluate on the test split."""
    return {"split": "test", "batch_size": cfg.eval.batch_size, "seed": cfg.seed, "iwae_k": cfg.eval.iwae_k}


def generation_settings(cfg: TrialConfig) -> dict[str, Any]:
    """The config's arguments to sampling.generation_scores."""
    e = cfg.eval
    return {"n": e.generation_samples, "seed": e.generation_seed, "batch_size": e.batch_size}


def train_and_evaluate(
    cfg: TrialConfig, ds: data.Dataset, run: TrialRun, callbacks: list[train.EpochCallback],
    board: TensorBoardRun | None = None, full_artifacts_in: str | None = None,
    ckpt: checkpoint.TrialCheckpoint | None = None, ckpt_options: checkpoint.Options | None = None,
    resume: dict[str, Any] | None = None, model_name: str = "model",
) -> dict[str, float]:
    """fit + evaluate one config, logging each epoch, the final scores (at step 0) and the
    per-trial artifacts to `run` (and `board`); the full set too when given the experiment to
    put it in, its light MLflow model named `model_name`.
    With `ckpt`, training state is saved as `ckpt_options` say (the run's buffered metrics are
    written first, so MLflow holds every epoch the checkpoint holds); `resume` continues."""
    model = build_model(cfg, ds)
    log_epoch = lambda epoch, m: run.log_metrics({k: v for k, v in m.items() if k != "epoch"}, step=epoch, buffered=True)  # noqa: E731
    stage = stage_evaluation(cfg, model, ds, lambda m, step: run.log_metrics(m, step=step, buffered=True))
    loggers = [log_epoch] + ([stage] if stage else []) + ([board.log_epoch] if board else [])
    checkpointing = None
    if ckpt is not None:
        options = ckpt_options or checkpoint.Options(ckpt.path.parent)

        def save(state: dict[str, Any]) -> None:
            run.flush()
            ckpt.save(state)

        checkpointing = train.Checkpointing(
            save, resume=resume, every_epochs=options.every_epochs, min_seconds=options.min_seconds,
            every_seconds=None if options.every_minutes is None else 60 * options.every_minutes)
    history = train.fit(model, ds, **fit_settings(cfg), callbacks=[*loggers, *callbacks], checkpointing=checkpointing)
    scores = metrics.evaluate(model, ds, **evaluate_settings(cfg))
    reasons = metrics.skipped(model, "test", cfg.eval.iwae_k, ds.test.factors is not None)
    bad = [k for k, v in scores.items()
           if k.endswith(("_elbo", "_recon", "_kl")) and k not in reasons and not math.isfinite(v)]
    if bad:
        raise DivergenceError(f"non-finite {', '.join(bad)} on the test split")
    reasons |= metrics.nan_reasons(scores, reasons)
    if reasons:  # why a score is NaN: a capability the model lacks, or what the score's computation met
        run.set_tags(artifacts.skipped_tags(reasons))
    generated = sampling.generation_scores(model, ds, **generation_settings(cfg)) if cfg.eval.generation else None
    scores |= generated.scores if generated else {}
    final = scores | {
        "train_samples_per_s": history.train_samples_per_s,
        "train_seconds": history.train_seconds,
        "n_params": float(models.n_params(model)),
    }
    run.log_final(final)  # the last epoch's val_* are logged already
    if board:
        board.log_epoch(cfg.train.epochs, final)
    kl = artifacts.log_trial(model, ds, run, board, step=cfg.train.epochs)
    if generated:
        artifacts.log_generation(generated, run, board, step=cfg.train.epochs)
    if full_artifacts_in is not None:
        artifacts.log_full(model, ds, run, full_artifacts_in, model_name, cfg.flat(), step=cfg.train.epochs, kl=kl)
    return history.last | final
