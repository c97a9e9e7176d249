"""Time per optimizer step, and exactness, of the ways to run one training step of a VAE:

    python benchmarks/bench_step.py                          # both nets, 7 rounds (~6 min)
    python benchmarks/bench_step.py --nets burda --rounds 3

Nets (vaebench's own `models.build`, dynamic binarisation, one torch thread, the 4,000
training digits of mnist5k with no validation split, so an epoch is training steps only):
`burda` is the IWAE paper's 784-200-200-50 tanh MLP, VAE, batch 20, Adam eps 1e-4;
`flagship` is beta_sweep's MLP 512-256, latent 10, beta_vae, batch 128.

Variants (`loop` ones are hand-written loops: index batches, `model.loss`, Adam):
- `fit eager`: `train.fit(step="eager")`, eager loss and foreach Adam, the default before
  `step` existed (one fit call per round; the baseline of every ratio).
- `loop foreach`: the same step as a bare loop (bit for bit `fit eager`).
- `loop fused`: `torch.optim.Adam(fused=True)` and its `.step()`.
- `loop fused kernel`: the fused kernel called directly (`train.fused_adam_stepper`).
- `loop fused kernel, preallocated`: + batches gathered and binarised into buffers made once.
- `loop compile(loss) + fused`: `torch.compile(model.loss)` given the generator (dynamo
  breaks the graph at the noise draw) + `Adam(fused=True)`.
- `loop compiled whole step`: loss, backward and `Adam(fused=True).step()` in one compiled
  function (compiled autograd, `torch._dynamo.config`, used here only).
- `fit fused`: `train.fit(step="fused")`, one fit call per round.
- `fit compiled`: `train.fit(step="compiled")`, the compiled loss drawing the eager noise,
  plus the fused kernel and preallocated batches: one fit call for all rounds, whose epoch
  callback runs every other variant's round (compile time excluded: round 0 is a warm-up).

Each round runs `--epochs` epochs of every variant, in an order rotated round by round; the
figures are medians over rounds of ms per step on the process's CPU clock (one thread: the
work done, which neighbours' load inflates less than the wall clock; wall in the JSON).
Exactness, after the timing: every variant run twice from the same seed for one round
(same parameters bit for bit?), and against `loop foreach`: the largest parameter
difference and the difference in the round's mean training loss. `--trial`: one
beta_sweep trial's config (15 epochs, mnist5k with its validation split) through
`fit` with each step kind, against the spread between two seeds.
Writes results/benchmarks/step.json.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from common import median, print_table, rotated, write_report

import torch

from vaebench import data, models, train

NETS: dict[str, dict[str, Any]] = {
    "burda": {"model": {"objective": "vae", "hidden": (200, 200), "activation": "tanh", "latent_dim": 50},
              "batch": 20, "eps": 1e-4},
    "flagship": {"model": {"objective": "beta_vae", "beta": 1.0, "hidden": (512, 256), "latent_dim": 10},
                 "batch": 128, "eps": 1e-8},
}
LR = 1e-3
BASELINE = "fit eager"


def build(net: str, input_shape: tuple[int, int, int]) -> models.VAEModel:
    torch.manual_seed(0)
    return models.build(arch="mlp", likelihood="bernoulli", input_shape=input_shape, **NETS[net]["model"])


class Loop:
    """A hand-written loop over `epochs` epochs a round; returns the CPU and wall seconds."""

    def __init__(self, model: models.VAEModel, x: torch.Tensor, batch: int, eps: float, epochs: int, *,
                 optimizer: str = "fused", loss: str = "eager", prealloc: bool = False) -> None:
        self.model, self.x, self.batch, self.epochs = model, x, batch, epochs
        self.gen = torch.Generator().manual_seed(0)
        fused = optimizer != "foreach"
        self.opt = torch.optim.Adam(model.parameters(), lr=LR, eps=eps, foreach=not fused or None,
                                    fused=fused or None)
        self.opt_step = train.fused_adam_stepper(self.opt) if optimizer == "kernel" else self.opt.step
        self.whole = loss == "whole"
        if loss == "compile":
            self.loss_fn = torch.compile(model.loss, dynamic=False)
        elif self.whole:
            def step(xb: torch.Tensor) -> torch.Tensor:
                record = model.loss(xb, generator=None)
                record.loss.backward()
                self.opt.step()
                return record.loss.detach()

            compiled = torch.compile(step, dynamic=False, options={"fallback_random": True})

            def whole(xb: torch.Tensor) -> torch.Tensor:  # the generator lent as train.compiled_loss does
                outside = torch.default_generator.get_state()
                torch.default_generator.set_state(self.gen.get_state())
                try:
                    with torch._dynamo.config.patch(compiled_autograd=True):
                        return compiled(xb)
                finally:
                    self.gen.set_state(torch.default_generator.get_state())
                    torch.default_generator.set_state(outside)

            self.loss_fn = whole
        else:
            self.loss_fn = model.loss
        self.buffers = (torch.empty(batch, *x.shape[1:]), torch.empty(batch, *x.shape[1:])) if prealloc else None
        self.mean_loss = float("nan")

    def __call__(self) -> tuple[float, float, int]:
        n, batch, steps = len(self.x), self.batch, 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(self.epochs):
            losses, sizes = [], []
            order = torch.randperm(n, generator=self.gen)
            for i in range(0, n, batch):
                idx = order[i : i + batch]
                if self.buffers:
                    xb = torch.index_select(self.x, 0, idx, out=self.buffers[0][: len(idx)])
                    xb = torch.bernoulli(xb, generator=self.gen, out=self.buffers[1][: len(idx)])
                else:
                    xb = torch.bernoulli(self.x[idx], generator=self.gen)
                self.opt.zero_grad(set_to_none=True)
                if self.whole:
                    losses.append(self.loss_fn(xb))
                else:
                    record = self.loss_fn(xb, kl_weight=1.0, generator=self.gen)
                    record.loss.backward()
                    self.opt_step()
                    losses.append(record.loss.detach())
                sizes.append(len(idx))
                steps += 1
            # per example, as fit's train_loss
            self.mean_loss = float(torch.stack(losses).double() @ torch.tensor(sizes, dtype=torch.float64)) / n
        return time.process_time() - cpu, time.perf_counter() - wall, steps


class FitPerRound:
    """`train.fit(step=kind)`, one call of `epochs` epochs per round, continuing the model."""

    def __init__(self, model: models.VAEModel, ds: data.Dataset, batch: int, eps: float, epochs: int, kind: str) -> None:
        self.model, self.ds, self.kw = model, ds, {"epochs": epochs, "batch_size": batch, "lr": LR, "adam_eps": eps,
                                                   "seed": 0, "step": kind}
        self.mean_loss = float("nan")

    def __call__(self) -> tuple[float, float, int]:
        cpu, wall = time.process_time(), time.perf_counter()
        history = train.fit(self.model, self.ds, **self.kw)
        self.mean_loss = history.last["train_loss"]
        steps = self.kw["epochs"] * -(-len(self.ds.train) // self.kw["batch_size"])
        return time.process_time() - cpu, time.perf_counter() - wall, steps


LOOPS: dict[str, dict[str, Any]] = {
    "loop foreach": {"optimizer": "foreach"},
    "loop fused": {"optimizer": "fused"},
    "loop fused kernel": {"optimizer": "kernel"},
    "loop fused kernel, preallocated": {"optimizer": "kernel", "prealloc": True},
    "loop compile(loss) + fused": {"optimizer": "fused", "loss": "compile"},
    "loop compiled whole step": {"optimizer": "fused", "loss": "whole"},
}
ORDER = [BASELINE, *LOOPS, "fit fused", "fit compiled"]


def contender(name: str, net: str, ds: data.Dataset, epochs: int) -> Callable[[], tuple[float, float, int]]:
    model, spec = build(net, ds.input_shape), NETS[net]
    if name in LOOPS:
        return Loop(model, ds.train.x, spec["batch"], spec["eps"], epochs, **LOOPS[name])
    return FitPerRound(model, ds, spec["batch"], spec["eps"], epochs, name.split()[1])


def time_net(net: str, ds: data.Dataset, rounds: int, epochs: int) -> dict[str, list[tuple[float, float, int]]]:
    """Rounds of every variant; `fit compiled` is one fit whose callback runs the others."""
    others = {name: contender(name, net, ds, epochs) for name in ORDER if name != "fit compiled"}
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in ORDER}
    spec, steps_per_epoch = NETS[net], -(-len(ds.train) // NETS[net]["batch"])
    mark = [time.process_time(), time.perf_counter()]

    def callback(epoch: int, _metrics: dict[str, float]) -> None:
        if epoch % epochs:
            return
        r = epoch // epochs - 1
        times["fit compiled"].append((time.process_time() - mark[0], time.perf_counter() - mark[1], epochs * steps_per_epoch))
        for name in rotated(list(others), r):
            times[name].append(others[name]())
        print(f"  {net} round {r} done", flush=True)
        mark[:] = [time.process_time(), time.perf_counter()]

    train.fit(build(net, ds.input_shape), ds, epochs=(rounds + 1) * epochs, batch_size=spec["batch"], lr=LR,
              adam_eps=spec["eps"], seed=0, step="compiled", callbacks=[callback])
    return {name: values[1:] for name, values in times.items()}  # round 0: warm-up (and compile)


def exactness(net: str, ds: data.Dataset, epochs: int) -> dict[str, dict[str, Any]]:
    """Each variant twice from the same seed (one round), and against `loop foreach`."""
    def run(name: str) -> tuple[torch.Tensor, float]:
        c = contender("fit compiled" if name == "fit compiled" else name, net, ds, epochs)
        c()
        return torch.cat([p.detach().flatten() for p in c.model.parameters()]), c.mean_loss  # type: ignore[attr-defined]

    reference, reference_loss = run("loop foreach")
    out = {}
    for name in ORDER:
        (a, loss), (b, _) = run(name), run(name)
        out[name] = {"same_seed_bit_identical": bool(torch.equal(a, b)),
                     "bit_identical_to_foreach": bool(torch.equal(a, reference)),
                     "max_abs_param_diff_vs_foreach": float((a - reference).abs().max()),
                     "mean_loss_diff_vs_foreach": loss - reference_loss}
    return out


def trial_numbers(seeds: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """A beta_sweep trial (beta 1, 15 epochs, mnist5k with validation) through each step kind."""
    ds = data.load("mnist5k", seed=0, binarize="dynamic")
    out: dict[str, Any] = {}
    for kind, seed in [("eager", seeds[0]), ("fused", seeds[0]), ("compiled", seeds[0]), ("eager", seeds[1])]:
        torch.manual_seed(seed)
        model = build("flagship", ds.input_shape)
        wall = time.perf_counter()
        history = train.fit(model, ds, epochs=15, batch_size=128, lr=LR, seed=seed, step=kind)
        out[f"{kind} seed {seed}"] = history.last | {"fit_seconds": time.perf_counter() - wall}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="burda,flagship")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after one warm-up)")
    parser.add_argument("--epochs", default="burda=1,flagship=4", help="epochs of each variant per round")
    parser.add_argument("--trial", action="store_true", help="also a beta_sweep trial through each step kind")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = data.load("mnist5k", seed=0, binarize="dynamic", val_fraction=0.0)
    per_round = {k: int(v) for k, v in (item.split("=") for item in args.epochs.split(","))}
    report: dict[str, Any] = {"rounds": args.rounds, "statistic": "median", "train_examples": len(ds.train),
                              "clock": "process CPU time (one thread)", "nets": {}}
    for net in args.nets.split(","):
        spec, epochs = NETS[net], per_round[net]
        times = time_net(net, ds, args.rounds, epochs)
        base = median([cpu / steps for cpu, _, steps in times[BASELINE]])
        rows = []
        for name in ORDER:
            cpu = median([c / s for c, _, s in times[name]]) * 1e3
            wall = median([w / s for _, w, s in times[name]]) * 1e3
            per_round_ratio = median([b[0] / b[2] / (c / s) for b, (c, _, s) in zip(times[BASELINE], times[name])])
            rows.append({"variant": name, "ms_per_step": cpu, "wall_ms_per_step": wall,
                         "ratio": base * 1e3 / cpu, "ratio_per_round": per_round_ratio,
                         "cpu_ms_per_step_rounds": [c / s * 1e3 for c, _, s in times[name]]})
        print(f"\n{net}: batch {spec['batch']}, {epochs} epoch(s) of {len(ds.train)} digits a round, "
              f"ms per step (CPU clock), x = speed against `{BASELINE}`")
        print_table(rows, [("variant", "variant", "s"), ("ms_per_step", "ms/step", ".3f"),
                           ("wall_ms_per_step", "wall ms", ".3f"), ("ratio", "x", ".2f"),
                           ("ratio_per_round", "x per round", ".2f")])
        exact = exactness(net, ds, epochs)
        for row in rows:
            row |= exact[row["variant"]]
        print("\nexactness over one round (same seed twice; against `loop foreach`):")
        print_table(rows, [("variant", "variant", "s"), ("same_seed_bit_identical", "same seed identical", ""),
                           ("bit_identical_to_foreach", "= foreach", ""),
                           ("max_abs_param_diff_vs_foreach", "max |dθ|", ".2e"),
                           ("mean_loss_diff_vs_foreach", "d mean loss (nats)", ".2e")])
        report["nets"][net] = {"batch": spec["batch"], "model": spec["model"], "adam_eps": spec["eps"],
                               "epochs_per_round": epochs, "variants": rows}
    if args.trial:
        numbers = trial_numbers()
        report["beta_sweep_trial"] = numbers
        print("\na beta_sweep trial (beta 1, 15 epochs) by step kind:")
        print_table([{"run": k, **v} for k, v in numbers.items()],
                    [("run", "run", "s"), ("train_loss", "train_loss", ".6f"), ("val_elbo", "val_elbo", ".6f"),
                     ("fit_seconds", "fit s", ".1f")])
    write_report("step", report)


if __name__ == "__main__":
    main()
