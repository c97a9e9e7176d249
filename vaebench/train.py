"""fit(): train a model on an in-memory Dataset. Knows nothing of Optuna or MLflow.

Batches are index slices of tensors already in memory (no per-sample DataLoader), one
torch.Generator seeded from `seed` drives shuffling, reparameterisation noise and dynamic
binarisation, so the same config and seed give the same numbers on CPU. Callbacks get each
epoch's metrics and may raise (a pruner does) to stop the trial.

The step loop is kept as lean as a hand-written one (benchmarks/bench_throughput.py holds it
to >= 0.95x of one): nothing in it calls `.item()` or synchronises, the KL warm-up factor is
computed only when there is a warm-up, and Adam runs its multi-tensor (`foreach`) kernels,
which give bit-for-bit the same parameters as the default per-tensor loop on CPU at a lower
per-step cost. Speed-ups that change the numbers are opt-in: `channels_last` (conv models),
`bf16` autocast, `compile`. On CUDA the data moves once, through pinned memory with
non-blocking copies; on CPU those paths are skipped.
"""
from __future__ import annotations

import contextlib
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


def to_device(t: torch.Tensor, dev: torch.device, channels_last: bool = False) -> torch.Tensor:
    """`t` on `dev`: on CUDA through pinned memory with a non-blocking copy (the stream orders
    it before any kernel that reads it); elsewhere a plain `.to`. channels_last applies to 4-D."""
    if channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def validation_metrics(
    model: VAEModel, ds: Dataset, *, batch_size: int, seed: int, x_val: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean one-sample ELBO terms on the validation split (nats per example).

    `x_val` is the split already on the model's device (fit moves it once, not every epoch).
    """
    if x_val is None:
        x_val = ds.val.x.to(next(model.parameters()).device)
    terms = elbo_terms(model, x_val, batch_size=batch_size, seed=seed)
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
    channels_last: bool = False,
    bf16: bool = False,
    compile: bool = False,
) -> History:
    """Adam on the train split; validation ELBO terms after every epoch.

    KL warm-up multiplies the KL term by a factor rising linearly from 0 to 1 over
    `kl_warmup_epochs` (per step). A non-finite training loss or validation metric
    raises DivergenceError naming the epoch.

    Opt-in speed-ups, each of which changes the numbers slightly (rounding), so none is on
    by default: `channels_last` stores conv weights and images NHWC (about +10% reported
    for the conv VAE on CPU; 0-4% measured with one thread); `bf16` runs the forward pass
    under bfloat16 autocast (meant for CUDA); `compile` wraps the loss in torch.compile
    (tens of seconds to compile; slower than eager for these small models on CPU).
    """
    dev = resolve_device(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.to(dev)
    x_train = to_device(ds.train.x, dev, channels_last)
    x_val = to_device(ds.val.x, dev, channels_last)
    n = x_train.shape[0]
    gen = torch.Generator().manual_seed(seed)  # shuffling (always on CPU)
    noise = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    # foreach: the same update as the per-tensor loop (bit for bit on CPU), fewer kernel calls.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=dev.type in ("cpu", "cuda") or None)
    steps_per_epoch = math.ceil(n / batch_size)
    batch_sizes = torch.tensor(
        [min(batch_size, n - step * batch_size) for step in range(steps_per_epoch)], dtype=torch.float64
    )
    dynamic = ds.binarize == "dynamic"
    loss_fn = torch.compile(model.loss) if compile else model.loss
    autocast = (
        torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    history = History()

    for epoch in range(1, epochs + 1):
        model.train()
        losses: list[torch.Tensor] = []
        kl_weight = 1.0
        start = time.perf_counter()
        order = to_device(torch.randperm(n, generator=gen), dev)
        for step in range(steps_per_epoch):
            xb = x_train[order[step * batch_size : (step + 1) * batch_size]]
            if dynamic:
                xb = torch.bernoulli(xb, generator=noise)
            if kl_warmup_epochs:
                kl_weight = min(1.0, (epoch - 1 + step / steps_per_epoch) / kl_warmup_epochs)
            with autocast:
                record = loss_fn(xb, kl_weight=kl_weight, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            record.loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            losses.append(record.loss.detach())
        # Mean loss per example, summed in float64 once per epoch (one sync, not one per step).
        train_loss = float(torch.stack(losses).double().cpu() @ batch_sizes) / n
        history.train_seconds += time.perf_counter() - start
        history.samples_seen += n

        metrics = {"epoch": float(epoch), "train_loss": train_loss}
        metrics |= validation_metrics(model, ds, batch_size=eval_batch_size, seed=seed, x_val=x_val)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise DivergenceError(f"non-finite {', '.join(bad)} at epoch {epoch}")
        history.epochs.append(metrics)
        for callback in callbacks:
            callback(epoch, metrics)
    model.eval()
    return history
