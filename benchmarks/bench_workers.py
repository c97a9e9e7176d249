"""Two worker processes against one on the same fixed study:

    python benchmarks/bench_workers.py                  # 3 repeats of each setting (~5 min)

The study (written to a temporary folder) is a grid of 8 trials: β ∈ {0.5, 1, 2, 4} x seeds
{0, 1} of an MLP VAE (784-256, 10-d latent) on mnist5k, 3 epochs each. Every run starts in
a fresh folder with an Optuna journal file (`--storage optuna.journal`, safe for several
processes) and MLflow's default store, and is timed from launch until the last worker exits:

- `1 worker, N threads`: one `python -m vaebench run`, torch's default intra-op threads;
- `1 worker, 1 thread`: the same with one thread;
- `2 workers, 1 thread each`: two `vaebench run` processes on the same study at once.

Threads are set with `--threads 1` where `vaebench run` has that flag, and always through
OMP_NUM_THREADS / MKL_NUM_THREADS (which also cover numpy and scikit-learn in evaluation).
Settings are interleaved round by round; medians over `--repeats`. Prints a table, writes
results/benchmarks/workers.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, median, print_table, rotated, write_report

STUDY = """\
name: workers
description: Fixed study for the worker benchmark.
dataset: {name: mnist5k, binarize: dynamic}
model: {arch: mlp, objective: beta_vae, latent_dim: 10, likelihood: bernoulli, hidden: [256]}
train: {epochs: 3, batch_size: 128, lr: 1.0e-3}
search:
  sampler: grid
  objective: val_elbo
  direction: maximize
  space:
    model.beta: [0.5, 1.0, 2.0, 4.0]
    seed: [0, 1]
"""
N_TRIALS = 8


def has_threads_flag() -> bool:
    out = subprocess.run([sys.executable, "-m", "vaebench", "run", "--help"], capture_output=True, text=True,
                         cwd=ROOT).stdout
    return "--threads" in out


def run_setting(workers: int, threads: int | None, threads_flag: bool) -> float:
    """Wall seconds for `workers` processes to finish the study in a fresh folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    args = []
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        args = ["--threads", str(threads)] if threads_flag else []
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "workers.yaml").write_text(STUDY)
        cmd = [sys.executable, "-m", "vaebench", "run", "--study", "workers.yaml", "--storage", "optuna.journal",
               "--no-progress", *args]
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(workers)]
        outputs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        for p, out in zip(procs, outputs):
            if p.returncode != 0:
                raise RuntimeError(f"worker exited {p.returncode}:\n{out[-2000:]}")
        if f"{N_TRIALS}/{N_TRIALS} trials finished" not in "".join(outputs):
            raise RuntimeError("the study did not finish:\n" + "".join(outputs)[-2000:])
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch  # only for the default thread count

    default_threads = torch.get_num_threads()
    flag = has_threads_flag()
    settings: dict[str, tuple[int, int | None]] = {
        f"1 worker, {default_threads} threads (torch default)": (1, None),
        "1 worker, 1 thread": (1, 1),
        "2 workers, 1 thread each": (2, 1),
    }
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for rnd in range(args.repeats):
        for name in rotated(list(settings), rnd):
            workers, threads = settings[name]
            seconds[name].append(run_setting(workers, threads, flag))
            print(f"round {rnd + 1}: {name}: {seconds[name][-1]:.1f} s", flush=True)

    base = median(seconds[next(iter(settings))])
    one_thread = median(seconds["1 worker, 1 thread"])
    rows: list[dict[str, Any]] = []
    for name, (workers, threads) in settings.items():
        wall = median(seconds[name])
        rows.append({"setting": name, "workers": workers, "threads_per_worker": threads or default_threads,
                     "wall_s": wall, "speedup_vs_default": base / wall, "speedup_vs_1x1": one_thread / wall,
                     "seconds": seconds[name]})
    print(f"\n{N_TRIALS}-trial study, wall time from launch to the last exit, median of {args.repeats}; "
          f"{os.cpu_count()} CPUs; threads via {'--threads and ' if flag else ''}OMP/MKL_NUM_THREADS")
    print_table(rows, [("setting", "setting", ""), ("threads_per_worker", "threads/worker", "d"),
                       ("wall_s", "wall s", ".1f"), ("speedup_vs_default", "speed-up vs default", ".2f"),
                       ("speedup_vs_1x1", "vs 1x1 thread", ".2f")])
    two = rows[-1]
    targets = {"2 workers faster than 1 (default threads)": two["wall_s"] < base}
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    write_report("workers", {"repeats": args.repeats, "threads_flag": flag, "trials": N_TRIALS, "rows": rows,
                             "targets": targets})


if __name__ == "__main__":
    main()
