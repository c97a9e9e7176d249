"""fit(): train a model on an in-memory Dataset. Knows nothing of Optuna or MLflow.

Batches are index slices of tensors already in memory (no per-sample DataLoader), one
torch.Generator seeded from `seed` drives shuffling, reparameterisation noise and dynamic
binarisation, so the same config and seed give the same numbers on CPU. Callbacks get each
epoch's metrics and may raise (a pruner does) to stop the trial.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from vaebench.data import Dataset
from vaebench.errors import DivergenceError
from vaebench.metrics import elbo_terms
from vaebench.models import VAEModel

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class History:
    """Per-epoch metrics (`epoch` counts from 1) and the training-time measurements."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # optimisation steps only: no validation, no logging
    samples_seen: int = 0

    @property
    def train_samples_per_s(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else math.nan

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available")
    return device


def validation_metrics(model: VAEModel, ds: Dataset, *, batch_size: int, seed: int) -> dict[str, float]:
    """Mean one-sample ELBO terms on the validation split (nats per example)."""
    device = next(model.parameters()).device
    terms = elbo_terms(model, ds.val.x.to(device), batch_size=batch_size, seed=seed)
    return {f"val_{name}": float(values.mean()) for name, values in terms.items()}


def fit(
    model: VAEModel,
    ds: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    grad_clip: float | None = None,
    kl_warmup_epochs: int = 0,
    callbacks: tuple[EpochCallback, ...] | list[EpochCallback] = (),
    device: str = "cpu",
    eval_batch_size: int = 1024,
) -> History:
    """Adam on the train split; validation ELBO terms after every epoch.

    KL warm-up multiplies the KL term by a factor rising linearly from 0 to 1 over
    `kl_warmup_epochs` (per step). A non-finite training loss or validation metric
    raises DivergenceError naming the epoch.
    """
    dev = resolve_device(device)
    model.to(dev)
    x_train = ds.train.x.to(dev)
    n = x_train.shape[0]
    gen = torch.Generator().manual_seed(seed)  # shuffling (always on CPU)
    noise = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    dynamic = ds.binarize == "dynamic"
    history = History()

    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=dev)
        start = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(dev)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            xb = x_train[idx]
            if dynamic:
                xb = torch.bernoulli(xb, generator=noise)
            kl_weight = 1.0
            if kl_warmup_epochs:
                kl_weight = min(1.0, (epoch - 1 + step / steps_per_epoch) / kl_warmup_epochs)
            record = model.loss(xb, kl_weight=kl_weight, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            record.loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            loss_sum += record.loss.detach() * xb.shape[0]
        history.train_seconds += time.perf_counter() - start
        history.samples_seen += n

        metrics = {"epoch": float(epoch), "train_loss": float(loss_sum) / n}
        metrics |= validation_metrics(model, ds, batch_size=eval_batch_size, seed=seed)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise DivergenceError(f"non-finite {', '.join(bad)} at epoch {epoch}")
        history.epochs.append(metrics)
        for callback in callbacks:
            callback(epoch, metrics)
    model.eval()
    return history
