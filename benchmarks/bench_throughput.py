"""Training throughput of vaebench.train.fit() against a bare loop and the peers a user would
pick instead:

    python benchmarks/bench_throughput.py                 # all models, batch 64 and 256
    python benchmarks/bench_throughput.py --archs tutorial_mlp --batches 64 --repeats 3

Contenders, all on the same model (one `models.build`, the same seed, so the same modules
and initial weights), the same data (the 3,500 training digits of `mnist5k`), batch size and
optimizer (Adam, lr 1e-3):

- `bare`: a hand-written loop: in-memory tensor, randperm index batches, the loss inline,
  `torch.optim.Adam(model.parameters(), lr)` as a user writes it.
- `vaebench`: one `train.fit` call for all rounds (one optimizer, as in real use), the other
  contenders running in its epoch callback; an epoch's training time excludes fit's
  validation pass (the bare loop has none), like fit's own `train_samples_per_s`.
- `vaebench_1ep`, `vaebench_cl` (conv only): `train.fit(..., epochs=1)` per round (a new Adam
  each call), without and with the opt-in `channels_last=True`.
- `tutorial`: the usual tutorial pipeline: a per-sample `Dataset` + `DataLoader(shuffle=True)`,
  `loss.item()` every step.
- `pythae`: pythae's `TrainingPipeline` trainer (`BaseTrainer`, what the pipeline builds) on a
  pythae `VAE` whose encoder/decoder wrap the very same modules (`bench` extra:
  `pip install -e ".[bench]"`); one `train_step` (pythae's training epoch) is timed, so its
  set-up, checkpointing and final save are not counted against it.

Every contender keeps its own model copy and optimizer across rounds (fit makes a new Adam per
call, which counts against it); each round runs one epoch of every contender, in an order
rotated round by round; the first round is a warm-up. Ratios are of medians over `--repeats`
rounds. Each epoch is timed on two clocks: the wall clock (for vaebench: fit's own
`train_samples_per_s`) and the process's CPU time, which other processes' load on a shared
machine does not inflate (with one torch thread, the CPU time is the work done). Prints a
table per clock, writes results/benchmarks/throughput.json.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable

from common import median, print_table, rotated, write_report

import torch
import torch.nn.functional as F
from torch import nn

from vaebench import data, models, train

LATENT = {"tutorial_mlp": 8, "mlp": 10, "conv": 10}
LR = 1e-3

Rates = tuple[float, float]  # samples/s of one epoch's training steps: (wall clock, CPU clock)
Epoch = Callable[[], Rates]


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def rates(n: int, start: tuple[float, float], cpu_excluded: float = 0.0) -> Rates:
    """n samples over the wall and CPU time since `start` (less `cpu_excluded` CPU seconds)."""
    wall, cpu = clocks()
    return n / (wall - start[0]), n / (cpu - start[1] - cpu_excluded)


def build(arch: str, input_shape: tuple[int, int, int]) -> models.VAEModel:
    torch.manual_seed(0)
    return models.build(arch=arch, objective="vae", latent_dim=LATENT[arch], likelihood="bernoulli",
                        input_shape=input_shape)


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The tutorial loss, fixed: Bernoulli NLL and analytic KL summed per example, batch mean."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    return (recon + kl).mean()


def bare(model: models.VAEModel, x: torch.Tensor, batch_size: int) -> Epoch:
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    n = len(x)

    def epoch() -> Rates:
        start = clocks()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            xb = x[order[i : i + batch_size]]
            mu, logvar = model.encoder(xb)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
            loss = vae_loss(model.decoder(z), xb, mu, logvar)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return rates(n, start)

    return epoch


def vaebench_fit(model: models.VAEModel, ds: data.Dataset, batch_size: int, **options: bool) -> Epoch:
    """Wall clock: fit's own history.train_samples_per_s (training steps only). CPU clock: the
    whole fit call less the CPU time of its validation pass (so fit's set-up counts against it)."""
    seeds = iter(range(10**6))
    validation = train.validation_metrics

    def epoch() -> Rates:
        spent = [0.0]

        def timed_validation(*args: object, **kwargs: object) -> dict[str, float]:
            start = time.process_time()
            try:
                return validation(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - start

        train.validation_metrics = timed_validation
        try:
            start = clocks()
            history = train.fit(model, ds, epochs=1, batch_size=batch_size, lr=LR, seed=next(seeds), **options)
            cpu = rates(history.samples_seen, start, cpu_excluded=spent[0])[1]
        finally:
            train.validation_metrics = validation
        return history.train_samples_per_s, cpu

    return epoch


class FitDriver:
    """vaebench's contender: ONE `train.fit` call over all rounds, so one optimizer serves every
    epoch as in real use (a new Adam per 1-epoch call costs ~5% of an mlp epoch here: its state's
    first touch), with the other contenders run inside fit's epoch callback. An epoch's
    training time is the time between two callbacks less fit's validation pass (timed by
    wrapping `train.validation_metrics`), on both clocks; the sum over epochs is checked
    against fit's own `history.train_seconds`."""

    def __init__(self, model: models.VAEModel, ds: data.Dataset, batch_size: int) -> None:
        self.model, self.ds, self.batch_size = model, ds, batch_size
        self.history: train.History | None = None

    def run(self, epochs: int, between: Callable[[int, Rates], None]) -> None:
        validation = train.validation_metrics
        spent = [0.0, 0.0]  # validation's wall and CPU seconds since the last callback
        mark = [clocks()]
        n = len(self.ds.train)

        def timed_validation(*args: object, **kwargs: object) -> dict[str, float]:
            start = clocks()
            try:
                return validation(*args, **kwargs)
            finally:
                now = clocks()
                spent[0] += now[0] - start[0]
                spent[1] += now[1] - start[1]

        def callback(epoch: int, metrics: dict[str, float]) -> None:
            now = clocks()
            between(epoch - 1, (n / (now[0] - mark[0][0] - spent[0]), n / (now[1] - mark[0][1] - spent[1])))
            spent[:] = [0.0, 0.0]
            mark[0] = clocks()

        train.validation_metrics = timed_validation
        try:
            self.history = train.fit(self.model, self.ds, epochs=epochs, batch_size=self.batch_size, lr=LR,
                                     seed=0, callbacks=[callback])
        finally:
            train.validation_metrics = validation


class PerSample(torch.utils.data.Dataset):
    """The tutorial's Dataset: one (image, label) pair per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def tutorial(model: models.VAEModel, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Epoch:
    loader = torch.utils.data.DataLoader(PerSample(x, y), batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def epoch() -> Rates:
        start = clocks()
        model.train()
        train_loss = 0.0
        for xb, _ in loader:
            opt.zero_grad()
            mu, logvar = model.encoder(xb)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            loss = vae_loss(model.decoder(z), xb, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            opt.step()
        return rates(len(x), start)

    return epoch


def pythae_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pythae") is not None


def pythae_trainer(model: models.VAEModel, x: torch.Tensor, batch_size: int, workdir: str) -> Epoch:
    """pythae's TrainingPipeline on the same modules: the trainer it builds, timed per epoch."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    for name in ("pythae", "pythae.pipelines.training", "pythae.trainers.base_trainer.base_trainer"):
        logging.getLogger(name).setLevel(logging.WARNING)

    class Encoder(BaseEncoder):
        def __init__(self, body: nn.Module) -> None:
            BaseEncoder.__init__(self)
            self.body = body

        def forward(self, x: torch.Tensor) -> ModelOutput:
            mu, logvar = self.body(x)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):  # pythae's "bce" loss takes probabilities: add the sigmoid
        def __init__(self, body: nn.Module) -> None:
            BaseDecoder.__init__(self)
            self.body = body

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=torch.sigmoid(self.body(z)))

    config = VAEConfig(input_dim=tuple(x.shape[1:]), latent_dim=model.latent_dim, reconstruction_loss="bce")
    vae = VAE(config, encoder=Encoder(model.encoder), decoder=Decoder(model.decoder))
    training = BaseTrainerConfig(output_dir=workdir, num_epochs=1, learning_rate=LR, no_cuda=True,
                                 per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size)
    pipeline = TrainingPipeline(model=vae, training_config=training)
    dataset = pipeline.data_processor.to_dataset(pipeline.data_processor.process_data(x))
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        trainer = BaseTrainer(model=vae, train_dataset=dataset, training_config=training)  # as the pipeline does
        trainer.prepare_training()
    epochs = iter(range(1, 10**6))

    def epoch() -> Rates:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            start = clocks()
            trainer.train_step(next(epochs))  # includes its tqdm bar, as a user runs it
            return rates(len(x), start)

    return epoch


def contenders(
    arch: str, batch_size: int, ds: data.Dataset, peers: bool, workdir: str
) -> tuple[FitDriver, dict[str, Epoch]]:
    x, y = ds.train.x, ds.train.y
    model = build(arch, ds.input_shape)
    fresh = lambda: copy.deepcopy(model)  # noqa: E731 - same weights for everyone
    driver = FitDriver(fresh(), ds, batch_size)
    out: dict[str, Epoch] = {"bare": bare(fresh(), x, batch_size)}
    if arch == "conv":  # 1-epoch fit calls: a new optimizer each (compare with vaebench_1ep)
        out["vaebench_1ep"] = vaebench_fit(fresh(), ds, batch_size)
        out["vaebench_cl"] = vaebench_fit(fresh(), ds, batch_size, channels_last=True)
    if peers:
        out["tutorial"] = tutorial(fresh(), x, y, batch_size)
        if pythae_available():
            out["pythae"] = pythae_trainer(fresh(), x, batch_size, workdir)
    return driver, out


def measure(driver: FitDriver, epochs: dict[str, Epoch], repeats: int) -> dict[str, dict[str, list[float]]]:
    """One warm-up round, then `repeats` rounds: an epoch of fit, then one of every other
    contender in an order rotated per round: {"wall": {contender: [samples/s, ...]}, "cpu": {...}}."""
    names = ["vaebench", *epochs]
    samples: dict[str, dict[str, list[float]]] = {"wall": {n: [] for n in names}, "cpu": {n: [] for n in names}}

    def record(rnd: int, name: str, rates_: Rates) -> None:
        if rnd > 0:
            samples["wall"][name].append(rates_[0])
            samples["cpu"][name].append(rates_[1])

    def others(rnd: int, fit_rates: Rates) -> None:
        record(rnd, "vaebench", fit_rates)
        for name in rotated(list(epochs), rnd):
            record(rnd, name, epochs[name]())

    driver.run(repeats + 1, others)
    return samples


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b and math.isfinite(a) and math.isfinite(b) else None


def paired(samples: dict[str, list[float]], a: str, b: str) -> float | None:
    """Median over rounds of a/b within the round: robust to the machine's slow load swings."""
    if a not in samples or b not in samples:
        return None
    return median([x / y for x, y in zip(samples[a], samples[b])])


def summarise(arch: str, batch_size: int, samples: dict[str, list[float]]) -> dict[str, object]:
    """One table row: median samples/s per contender and vaebench's ratios to the others."""
    med = {name: median(values) for name, values in samples.items()}
    row: dict[str, object] = {"arch": arch, "batch": batch_size} | {f"{k}_sps": v for k, v in med.items()}
    row["vs_bare"] = ratio(med["vaebench"], med["bare"])
    row["paired_vs_bare"] = paired(samples, "vaebench", "bare")
    row["vs_1ep"] = ratio(med["vaebench"], med.get("vaebench_1ep"))
    row["cl_vs_1ep"] = ratio(med.get("vaebench_cl"), med.get("vaebench_1ep"))
    row["vs_tutorial"] = ratio(med["vaebench"], med.get("tutorial"))
    row["vs_pythae"] = ratio(med["vaebench"], med.get("pythae"))
    return row


COLUMNS = [("arch", "model", ""), ("batch", "batch", "d"), ("bare_sps", "bare", ",.0f"),
           ("vaebench_sps", "vaebench", ",.0f"), ("vs_bare", "vb/bare", ".3f"), ("paired_vs_bare", "paired", ".3f"),
           ("vaebench_1ep_sps", "vb 1-ep calls", ",.0f"), ("cl_vs_1ep", "chlast/1-ep", ".3f"),
           ("tutorial_sps", "tutorial", ",.0f"), ("vs_tutorial", "vb/tutorial", ".2f"),
           ("pythae_sps", "pythae", ",.0f"), ("vs_pythae", "vb/pythae", ".2f")]


def check(rows: list[dict[str, object]]) -> dict[str, bool]:
    """The targets, each only where its contender was measured (no PASS by absence)."""
    targets = {"fit >= 0.95x bare": ("vs_bare", lambda v: v >= 0.95),
               "fit >= 1.3x pythae": ("vs_pythae", lambda v: v >= 1.3),
               "fit > tutorial": ("vs_tutorial", lambda v: v > 1.0)}
    return {name: all(holds(r[key]) for r in rows if r[key] is not None)
            for name, (key, holds) in targets.items() if any(r[key] is not None for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="tutorial_mlp,mlp,conv")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per case (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on 2 shared cores, 2 threads measure the "
                             "neighbours' load more than the code); 0 keeps torch's default")
    parser.add_argument("--no-peers", action="store_true", help="only bare vs vaebench")
    parser.add_argument("--skip-validation", action="store_true",
                        help="diagnostic: fit without its per-epoch validation pass, which the bare loop does not "
                             "have (its time is never counted; this shows its effect on the steps after it); "
                             "writes throughput_skip_validation.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.skip_validation:
        train.validation_metrics = lambda *_, **__: {}

    ds = data.load("mnist5k", seed=0)
    rows: dict[str, list[dict[str, object]]] = {"wall": [], "cpu": []}
    raw, fit_own = {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.archs.split(","):
            for batch_size in (int(b) for b in args.batches.split(",")):
                driver, others = contenders(arch, batch_size, ds, not args.no_peers, workdir)
                samples = measure(driver, others, args.repeats)
                fit_own[f"{arch}@{batch_size}"] = driver.history.train_samples_per_s  # all epochs, warm-up too
                for clock in rows:
                    rows[clock].append(summarise(arch, batch_size, samples[clock]))
                raw[f"{arch}@{batch_size}"] = samples
                wall = rows["wall"][-1]
                print(f"{arch} @ {batch_size}: " + ", ".join(
                    f"{k.removesuffix('_sps')} {v:,.0f}/s" for k, v in wall.items() if k.endswith("_sps")), flush=True)

    targets = {}
    for clock, title in (("wall", "wall clock (fit's own train_samples_per_s)"),
                         ("cpu", "CPU clock (process CPU seconds: robust to the neighbours' load)")):
        print(f"\nsamples/s by {title}, median of {args.repeats} interleaved epochs; {torch.get_num_threads()} "
              f"torch thread(s); {len(ds.train)} mnist5k training digits; vb/x = ratio of medians, "
              "paired = median of per-round ratios")
        print_table(rows[clock], COLUMNS)
        targets[clock] = check(rows[clock])
        for name, ok in targets[clock].items():
            print(f"{'PASS' if ok else 'MISS'}  {name} ({clock} clock)")
    report = "throughput_skip_validation" if args.skip_validation else "throughput"
    write_report(report, {"repeats": args.repeats, "statistic": "median", "train_examples": len(ds.train),
                        "pythae": pythae_available(), "rows": rows, "targets": targets,
                        "samples_per_s": raw, "fit_own_train_samples_per_s": fit_own})


if __name__ == "__main__":
    main()
