"""fit(): train a model on an in-memory Dataset. Knows nothing of Optuna or MLflow.

Batches are index slices of tensors already in memory (no per-sample DataLoader), one
torch.Generator seeded from `seed` drives shuffling, reparameterisation noise and dynamic
binarisation, so the same config and seed give the same numbers on CPU. Callbacks get each
epoch's metrics and may raise (a pruner does) to stop the trial.

The step loop is kept as lean as a hand-written one (benchmarks/bench_throughput.py holds it
to >= 0.95x of one): nothing in it calls `.item()` or synchronises, the KL warm-up factor is
computed only when there is a warm-up, and batches are gathered and binarised into buffers
allocated once. How a step runs is `step` (benchmarks/bench_step.py measures each, one thread):

- `eager`: the loss in eager mode, Adam's multi-tensor (`foreach`) kernels, bit for bit the
  textbook loop with a default `torch.optim.Adam` (what fit did before `step` existed).
- `fused`: the loss in eager mode, Adam's one fused kernel called directly (the same kernel
  and numbers as `Adam(fused=True)`, without its per-step Python).
  Fused and foreach Adam round differently, so the numbers differ from `eager` in the last
  bits of a step and, over a trial, like a change of seed's noise at a far smaller scale.
- `compiled`: `fused` with the loss (forward and backward) compiled by torch.compile, with no
  graph break: the noise generator's state is lent to the default generator around the call
  and inductor draws through aten (`fallback_random`), so every random number is the eager
  one. Compiling is a fresh start (`torch.compiler.reset()`: no state from earlier fits, so
  a resumed trial compiles what the uninterrupted one did) and takes seconds, paid back on
  long fits at small batches. Not with KL warm-up (the weight changes every step) or `bf16`.
- `auto` (the default): `compiled` on CPU and CUDA when the fit has at least COMPILE_MIN_STEPS
  steps (epochs x steps per epoch, where compile time is paid back many times over: a 121-pass
  Burda run has 363,000) and no KL warm-up or bf16, else `fused` (on CPU and CUDA; `eager`
  elsewhere). The rule reads only the fit's arguments, so a config always gets the same step.
  On CUDA a step never waits for the device: batches are gathered and binarised there, the
  losses stay on it until the epoch's end, and the noise generator's state (a seed and an
  offset) is lent without a copy from the device.

Every kind gives bit-identical numbers for the same seed on the same machine, and a resumed
fit goes on with the kind its checkpoint was started with (a checkpoint from before `step`
existed goes on `eager`), so it ends exactly like the uninterrupted one. Other speed-ups that
change the numbers are opt-in: `channels_last` (conv models), `bf16` autocast. On CUDA the
data moves once, through pinned memory with non-blocking copies; on CPU those paths are
skipped.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from vaebench import schedules
from vaebench.data import Dataset
from vaebench.errors import DivergenceError
from vaebench.metrics import elbo_terms
from vaebench.models import VAEModel
from vaebench.schedules import Schedule

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class History:
    """Per-epoch metrics (`epoch` counts from 1) and the training-time measurements."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # optimisation steps only: no validation, no logging
    samples_seen: int = 0
    step: str = "eager"  # the kind of step fit ran (see the module's docstring)

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


STEPS = ("auto", "eager", "fused", "compiled")
COMPILE_MIN_STEPS = 100_000  # `auto` compiles a fit with at least this many steps (CPU and CUDA)


def choose_step(step: str, dev: torch.device, total_steps: int, *, kl_warmup: bool = False,
                bf16: bool = False) -> str:
    """The kind of step `fit` runs (see the module's docstring); `auto` by the documented rule."""
    if step not in STEPS:
        raise ValueError(f"step: {step!r} is not one of {', '.join(STEPS)}")
    if step == "compiled" and (kl_warmup or bf16):
        raise ValueError("step 'compiled' needs a constant KL weight and no bf16 autocast")
    if step != "auto":
        return step
    if dev.type in ("cpu", "cuda") and not kl_warmup and not bf16 and total_steps >= COMPILE_MIN_STEPS:
        return "compiled"
    return "fused" if dev.type in ("cpu", "cuda") else "eager"


def make_optimizer(params: Any, kind: str, dev: torch.device, lr: float, eps: float) -> torch.optim.Adam:
    """Adam for a step kind: foreach for `eager` (bit for bit the default per-tensor loop on CPU,
    fewer kernel calls), the fused kernel otherwise."""
    if kind == "eager":
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=dev.type in ("cpu", "cuda") or None)
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


def fused_adam_stepper(optimizer: torch.optim.Adam) -> Callable[[], None]:
    """`optimizer.step` of a fused Adam that calls its kernel directly: the same kernel with the
    same arguments as Adam's own `_fused_adam` (so bit for bit the same update; tested), without
    the Python that Adam.step spends per call (a tenth of a step at batch 20). The lists of
    parameters and states are made once, at the first step that finds every state in place
    (after a resume's load_state_dict too); each step then only gathers the gradients.
    `torch._fused_adam_` is torch's private op (in torch since 2.0, on CPU since 2.4): this is
    its one use. The first step (no state yet), a parameter without a gradient, and any unusual
    group go through Adam.step."""
    plan: list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []

    def plain(group: dict[str, Any]) -> bool:
        return not (group["amsgrad"] or group["maximize"] or group["weight_decay"] or group["differentiable"]
                    or group.get("decoupled_weight_decay") or not group["fused"]
                    or any(p.device.type != "cpu" or p not in optimizer.state for p in group["params"]))

    def step() -> None:
        if not plan:
            if not all(plain(group) for group in optimizer.param_groups):
                optimizer.step()
                return
            for group in optimizer.param_groups:
                states = [optimizer.state[p] for p in group["params"]]
                plan.append((group, list(group["params"]), [s["exp_avg"] for s in states],
                             [s["exp_avg_sq"] for s in states], [s["step"] for s in states]))
        grads = [[p.grad for p in params] for _, params, *_ in plan]
        if any(g is None for group_grads in grads for g in group_grads):
            optimizer.step()
            return
        for (group, params, exp_avgs, exp_avg_sqs, steps), group_grads in zip(plan, grads):
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params, group_grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                beta2=beta2, weight_decay=0.0, eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)

    return step


def compiled_loss(model: VAEModel, dev: torch.device) -> Callable[..., Any]:
    """model.loss compiled whole (forward and backward), drawing exactly the eager noise.

    A torch.Generator cannot enter a compiled graph (dynamo breaks the graph there, which made
    the step slower than eager), so the loss is compiled with `generator=None`, the noise
    generator's state is lent to the device's default generator for the call and taken back
    after, and inductor draws through aten's own kernels (`fallback_random`): the same numbers
    from the same state as eager. The caller's default generator is left as it was. Compiled
    once per input shape (`dynamic=False`: a static graph never depends on the shapes seen
    before), after `torch.compiler.reset()`, so no earlier fit's graphs count towards dynamo's
    recompile limit (past it dynamo would fall back to eager, depending on the process's history).
    On CPU the compiled graph is called through inductor's C++ wrapper (bit for bit the Python
    wrapper's numbers: the same kernels in the same order).
    Called only in train mode on a model whose modules do not change, so the guards on the
    modules are skipped (the input's shape is still guarded).
    """
    torch.compiler.reset()
    default = torch.cuda.default_generators[dev.index or 0] if dev.type == "cuda" else torch.default_generator
    options: dict[str, Any] = {"fallback_random": True}
    if dev.type == "cpu":  # the graph called from C++, not a Python wrapper: the same kernels, less per-call Python
        options["cpp_wrapper"] = True
    skip_module_guards = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)  # torch >= 2.7
    if skip_module_guards is not None:  # one model, always in train mode, its structure fixed: ~3% of a step
        options["guard_filter_fn"] = skip_module_guards
    compiled = torch.compile(lambda xb: model.loss(xb, generator=None), dynamic=False, options=options)

    def loss(xb: torch.Tensor, kl_weight: float = 1.0, generator: torch.Generator | None = None) -> Any:
        outside = default.get_state()
        default.set_state(generator.get_state())  # type: ignore[union-attr]
        try:
            return compiled(xb)
        finally:
            generator.set_state(default.get_state())  # type: ignore[union-attr]
            default.set_state(outside)

    return loss


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


@dataclass
class Checkpointing:
    """How fit saves its state and where it resumes from; where the bytes go is the caller's
    business (vaebench.checkpoint writes them atomically).

    `save` gets the whole training state (see `fit`) at the end of every `every_epochs`-th
    epoch, unless the last save was less than `min_seconds` ago (short epochs are cheaper to
    redo than to save), and, when `every_seconds` is set, inside an epoch once that much time
    has passed since the last save. `resume` is such a state to continue from.
    """

    save: Callable[[dict[str, Any]], None]
    resume: dict[str, Any] | None = None
    every_epochs: int = 1
    every_seconds: float | None = None
    min_seconds: float = 0.0


def fit(
    model: VAEModel,
    ds: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    adam_eps: float = 1e-8,
    schedule: Schedule | None = None,
    grad_clip: float | None = None,
    kl_warmup_epochs: int = 0,
    callbacks: tuple[EpochCallback, ...] | list[EpochCallback] = (),
    device: str = "cpu",
    eval_batch_size: int = 1024,
    checkpointing: Checkpointing | None = None,
    channels_last: bool = False,
    bf16: bool = False,
    step: str = "auto",
) -> History:
    """Adam on the train split; validation ELBO terms after every epoch (none when the
    dataset has no validation split).

    `schedule` sets the learning rate of each epoch (vaebench.schedules; constant `lr`
    when None). KL warm-up multiplies the KL term by a factor rising linearly from 0 to 1
    over `kl_warmup_epochs` (per step). A non-finite training loss or validation metric
    raises DivergenceError naming the epoch.

    With `checkpointing`, the state (model, optimizer, random generators, epoch, position in
    the epoch, history) is handed to its `save`, and a run resumed from such a state ends
    with exactly the parameters and metrics of an uninterrupted one on CPU.

    `step` is how a step runs: `auto` (the default), `eager`, `fused` or `compiled`, as the
    module's docstring says; a resumed fit runs the kind its checkpoint names. Opt-in
    speed-ups, each of which changes the numbers slightly (rounding): `channels_last` stores
    conv weights and images NHWC (about +10% reported for the conv VAE on CPU; 0-4% measured
    with one thread); `bf16` runs the forward pass under bfloat16 autocast (meant for CUDA).
    """
    dev = resolve_device(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.to(dev)
    x_train = to_device(ds.train.x, dev, channels_last)
    x_val = to_device(ds.val.x, dev, channels_last) if len(ds.val) else None
    n = x_train.shape[0]
    gen = torch.Generator().manual_seed(seed)  # shuffling (always on CPU)
    noise = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    schedule = schedule or schedules.constant(lr)
    steps_per_epoch = math.ceil(n / batch_size)
    resume = checkpointing.resume if checkpointing else None
    kind = (resume.get("step_kind", "eager") if resume else  # a run goes on as it started
            choose_step(step, dev, epochs * steps_per_epoch, kl_warmup=kl_warmup_epochs > 0, bf16=bf16))
    params = list(model.parameters())
    optimizer = make_optimizer(params, kind, dev, lr, adam_eps)
    optimizer_step = optimizer.step if kind == "eager" else fused_adam_stepper(optimizer)
    batch_sizes = torch.tensor(
        [min(batch_size, n - i * batch_size) for i in range(steps_per_epoch)], dtype=torch.float64
    )
    dynamic = ds.binarize == "dynamic"
    loss_fn = compiled_loss(model, dev) if kind == "compiled" else model.loss
    # Batches are gathered (and binarised) into buffers allocated once: the same values as
    # x_train[idx] and torch.bernoulli(xb), without an allocation per step (not for NHWC).
    gathered = None if channels_last else x_train.new_empty((min(batch_size, n), *x_train.shape[1:]))
    binary = None if gathered is None or not dynamic else torch.empty_like(gathered)
    autocast = (
        torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    history = History(step=kind)
    first_epoch, first_step, order, losses = 1, 0, None, []
    if resume:
        first_epoch, first_step, order, losses = _restore(resume, model, optimizer, gen, noise, history, dev)

    def state(epoch: int, step: int, order: torch.Tensor | None, losses: list[torch.Tensor]) -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
            "step_kind": kind,
            "rng": gen.get_state(), "noise_rng": None if noise is gen else noise.get_state(),
            "order": order, "losses": torch.stack(losses) if losses else None,
            "history": {"epochs": history.epochs, "train_seconds": history.train_seconds,
                        "samples_seen": history.samples_seen},
        }

    every_s = checkpointing.every_seconds if checkpointing else None
    last_save = time.monotonic()
    for epoch in range(first_epoch, epochs + 1):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr(epoch)
        kl_weight = 1.0
        start = time.perf_counter()
        if order is None:
            order = to_device(torch.randperm(n, generator=gen), dev)
        for i in range(first_step, steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            if gathered is None:
                xb = x_train[idx]
                xb = torch.bernoulli(xb, generator=noise) if dynamic else xb
            else:
                xb = torch.index_select(x_train, 0, idx, out=gathered[: len(idx)])
                if binary is not None:
                    xb = torch.bernoulli(xb, generator=noise, out=binary[: len(idx)])
            if kl_warmup_epochs:
                kl_weight = min(1.0, (epoch - 1 + i / steps_per_epoch) / kl_warmup_epochs)
            with autocast:
                record = loss_fn(xb, kl_weight=kl_weight, generator=noise)
            for p in params:  # optimizer.zero_grad(set_to_none=True) without its Python (5% of a step)
                p.grad = None
            record.loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer_step()
            losses.append(record.loss.detach())
            if every_s is not None and time.monotonic() - last_save >= every_s and i + 1 < steps_per_epoch:
                history.train_seconds += time.perf_counter() - start
                checkpointing.save(state(epoch, i + 1, order, losses))  # type: ignore[union-attr]
                start, last_save = time.perf_counter(), time.monotonic()
        # Mean loss per example, summed in float64 once per epoch (one sync, not one per step).
        train_loss = float(torch.stack(losses).double().cpu() @ batch_sizes) / n
        history.train_seconds += time.perf_counter() - start
        history.samples_seen += n
        first_step, order, losses = 0, None, []

        metrics = {"epoch": float(epoch), "train_loss": train_loss}
        if x_val is not None:
            metrics |= validation_metrics(model, ds, batch_size=eval_batch_size, seed=seed, x_val=x_val)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise DivergenceError(f"non-finite {', '.join(bad)} at epoch {epoch}")
        history.epochs.append(metrics)
        try:
            for callback in callbacks:
                callback(epoch, metrics)
        except KeyboardInterrupt:  # a stop asked for at the epoch's end keeps the epoch
            if checkpointing:
                checkpointing.save(state(epoch + 1, 0, None, []))
            raise
        if (checkpointing and (epoch % checkpointing.every_epochs == 0 or epoch == epochs)
                and time.monotonic() - last_save >= checkpointing.min_seconds):
            checkpointing.save(state(epoch + 1, 0, None, []))  # the last one lets a resume skip to evaluation
            last_save = time.monotonic()
    model.eval()
    return history


def _restore(
    saved: dict[str, Any], model: VAEModel, optimizer: torch.optim.Optimizer, gen: torch.Generator,
    noise: torch.Generator, history: History, dev: torch.device,
) -> tuple[int, int, torch.Tensor | None, list[torch.Tensor]]:
    """Load a state `fit` saved; returns where to go on: (epoch, step, order, losses)."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    gen.set_state(saved["rng"])
    if noise is not gen and saved.get("noise_rng") is not None:
        noise.set_state(saved["noise_rng"])
    past = saved["history"]
    history.epochs[:] = [dict(m) for m in past["epochs"]]
    history.train_seconds, history.samples_seen = float(past["train_seconds"]), int(past["samples_seen"])
    order = saved.get("order")
    losses = list(saved["losses"].to(dev).unbind()) if saved.get("losses") is not None else []
    return int(saved["epoch"]), int(saved["step"]), None if order is None else order.to(dev), losses
