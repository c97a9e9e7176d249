"""Evaluation is bounded: time and peak memory of the scores on 10,000
test points.

    python benchmarks/bench_eval.py                  # 3 repeats (IWAE once)

The test set is 10,000 real digits: mnist5k's 5,000 images and the same images shifted by
one pixel, with their labels; the linear probe trains on mnist5k's 3,500 training digits.
The model is the flagship's (MLP 784-512-256, 10-d latent, Bernoulli) after 3 epochs.

- latent scores (`metrics.latent_scores`): posterior means, k-means (n_init=10), NMI/ARI/
  accuracy, the label silhouette on a 2,000-point seeded subsample, the linear probe;
- the one-sample ELBO terms (`metrics.elbo_terms`);
- IWAE with k=100 (`metrics.iwae_log_likelihood`: batches of 256 examples x 64 samples);
- `metrics.evaluate` (everything but IWAE) end to end.

Memory: the peak resident set size above the level before each call, sampled every 5 ms
from /proc/self/statm (torch's allocations are invisible to tracemalloc), and tracemalloc's
peak of Python/numpy allocations. Prints a table, writes results/benchmarks/eval.json.
"""
from __future__ import annotations

import argparse
import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from common import median, print_table, write_report

import torch

from vaebench import data, metrics, models, train

N_TEST = 10_000
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident set size while the block runs, polled from a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def test_set(ds: data.Dataset) -> data.Dataset:
    """ds with a 10,000-point test split: every mnist5k image, and each shifted one pixel."""
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    x = torch.cat([x, torch.roll(x, shifts=1, dims=3)])[:N_TEST]
    y = torch.cat([y, y])[:N_TEST]
    return data.Dataset(name="mnist5k-10k", train=ds.train, val=ds.val, test=data.Split(x, y),
                        input_shape=ds.input_shape, n_classes=ds.n_classes, binarize=ds.binarize,
                        seed=ds.seed, fingerprint=ds.fingerprint + "-10k")


def run_case(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    seconds, rss, traced = [], [], []
    for _ in range(repeats):
        tracemalloc.start()
        with PeakRSS() as mem:
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        traced.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        rss.append(mem.peak - mem.base)
    return {"seconds": median(seconds), "seconds_all": seconds, "peak_rss_mb": max(rss) / 2**20,
            "peak_traced_mb": max(traced) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iwae-repeats", type=int, default=1)
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = test_set(data.load("mnist5k", seed=0, binarize="dynamic"))
    torch.manual_seed(0)
    model = models.build(arch="mlp", objective="beta_vae", latent_dim=10, likelihood="bernoulli",
                         input_shape=ds.input_shape, hidden=(512, 256))
    train.fit(model, ds, epochs=3, batch_size=128, lr=1e-3)
    x = ds.test.x
    cases = {
        "latent scores": (lambda: metrics.latent_scores(model, ds, ds.test), args.repeats, 5.0),
        "elbo terms": (lambda: metrics.elbo_terms(model, x), args.repeats, None),
        f"IWAE k={args.iwae_k}": (lambda: metrics.iwae_log_likelihood(model, x, args.iwae_k), args.iwae_repeats, 30.0),
        "evaluate (no IWAE)": (lambda: metrics.evaluate(model, ds, split="test"), args.repeats, None),
    }
    rows = []
    for name, (fn, repeats, bound) in cases.items():
        row = {"case": name, "n": len(x), "bound_s": bound} | run_case(fn, repeats)
        row["ok"] = "yes" if bound is None or row["seconds"] < bound else "NO"
        rows.append(row)
        print(f"{name}: {row['seconds']:.2f} s", flush=True)

    print(f"\n{N_TEST:,} test points, flagship MLP VAE; {torch.get_num_threads()} torch thread(s); "
          "median seconds; peak memory above the level before the call")
    print_table(rows, [("case", "case", ""), ("n", "points", ","), ("seconds", "seconds", ".2f"),
                       ("bound_s", "bound s", ".0f"), ("ok", "within", ""),
                       ("peak_rss_mb", "peak RSS MB", ".0f"), ("peak_traced_mb", "traced MB", ".1f")])
    write_report("eval", {"repeats": args.repeats, "iwae_repeats": args.iwae_repeats, "statistic": "median",
                          "rows": rows})


if __name__ == "__main__":
    main()
