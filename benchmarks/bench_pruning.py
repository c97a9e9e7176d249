"""Pruning pays: studies/vae_tuning.yaml with its pruner against the same
study without pruning, same seeds.

    python benchmarks/bench_pruning.py                   # the study's pruner vs none (~20 min)
    python benchmarks/bench_pruning.py --pruners percentile median hyperband   # several pruners
    python benchmarks/bench_pruning.py --seeds 0 1 2 --jobs 2   # three draws, two variants at a time
    python benchmarks/bench_pruning.py --trials 8        # a quicker, smaller look
    python benchmarks/bench_pruning.py --seeds 6 7 8 --baseline pruning_heldout   # reuse unpruned runs

Each variant is the study file's StudySpec with only `search.pruner` changed
(`spec.model_copy`), run through `search.run_study` in its own temporary folder with the
default local stores (Optuna SQLite, MLflow SQLite). Training epochs are counted from the
trials' reported intermediate values (one per epoch), so a pruned trial counts the epochs it
ran. TPE and the training seeds are the same in every variant; the trials diverge only once
pruned trials feed back into TPE. Epochs and ELBOs do not depend on the machine's load (one
torch thread per variant), so `--jobs N` runs N variants at a time in separate processes;
only the wall times then include the neighbours' load. For the same reason an unpruned run
is the same every time for a given seed, study file and code: `--baseline NAME...` takes the
unpruned rows from earlier reports (same epochs and trials) instead of training them again,
which halves the cost of trying a pruner; each reused row names its report.

Prints a table, writes results/benchmarks/pruning.json (with --epochs/--trials overrides:
pruning_<E>epochs_<T>trials.json; `--out NAME` names it otherwise, e.g. for other seeds), so a
variant does not replace the study's reference numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from common import OUT_DIR, ROOT, print_table, write_report

import torch
from optuna.trial import TrialState

from vaebench import config, search, tracking
from vaebench.report.stats import ci95


def with_pruner(spec: config.StudySpec, pruner: str, trials: int | None, epochs: int | None,
                seed: int = 0) -> config.StudySpec:
    search_spec = spec.search.model_copy(update={"pruner": pruner} | ({"n_trials": trials} if trials else {}))
    update: dict[str, Any] = {"search": search_spec, "seed": seed}
    if epochs:
        update["train"] = spec.train.model_copy(update={"epochs": epochs})
    return spec.model_copy(update=update)


def run_variant(spec: config.StudySpec, threads: int = 1) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    tracking.quiet()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # MLflow's artifacts go to ./mlruns
        start = time.perf_counter()
        result = search.run_study(spec, storage_url=f"sqlite:///{tmp}/optuna.db",
                                  tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        wall = time.perf_counter() - start
    trials = result.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "pruner": spec.search.pruner,
        "seed": spec.seed,
        "trials": len(trials),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "max_epochs": spec.train.epochs * len(trials),
        "best_val_elbo": result.study.best_value if complete else None,
        "best_params": result.study.best_params if complete else None,
        "wall_s": wall,
        "per_trial": [{"number": t.number, "state": t.state.name, "epochs": len(t.intermediate_values),
                       "params": t.params, "value": t.value,
                       "val_elbo_by_epoch": [t.intermediate_values[e] for e in sorted(t.intermediate_values)]}
                      for t in trials],
    }


def unpruned_rows(names: list[str], spec: config.StudySpec) -> dict[int, dict[str, Any]]:
    """{seed: unpruned row} from the named reports, where their runs had `spec`'s epochs and trials."""
    rows: dict[int, dict[str, Any]] = {}
    for name in names:
        path = OUT_DIR / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"--baseline {name}: no report {path.relative_to(ROOT)}")
        report = json.loads(path.read_text())
        for row in report["rows"]:
            if (row["pruner"] == "none" and row["trials"] == spec.search.n_trials
                    and row["max_epochs"] == spec.train.epochs * spec.search.n_trials):
                rows[row["seed"]] = row | {"reused_from": f"results/benchmarks/{name}.json"}
    return rows


def summarize(pruner: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of one pruner's rows; one draw of TPE decides little, so the gap also
    gets its standard error and 95% t-interval (a study with no finished trial: gap inf)."""
    gaps = [r["elbo_gap"] if r["elbo_gap"] is not None else math.inf for r in rows]
    mean_gap = statistics.fmean(gaps)
    std = statistics.stdev(gaps) if len(gaps) > 1 and math.isfinite(mean_gap) else math.nan
    se, half = std / math.sqrt(len(gaps)), float(ci95(std, len(gaps)))
    return {"pruner": pruner, "seeds": len(rows), "mean_saved": statistics.fmean(r["epochs_saved"] for r in rows),
            "mean_gap": mean_gap, "gap_se": se, "gap_ci95": [mean_gap - half, mean_gap + half], "worst_gap": max(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="override n_trials (default: the study's)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--pruners", nargs="+", choices=[p for p in search.PRUNERS if p != "none"],
                        help="pruners to compare with none (default: the study's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="study seeds (TPE's and the trials' training seeds); each is one draw of the "
                             "search, so quote the mean over several (default: 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; counts of epochs do not depend on it); 0: torch's default")
    parser.add_argument("--jobs", type=int, default=1,
                        help="variants run at a time, each in its own process (default 1)")
    parser.add_argument("--out", default=None,
                        help="JSON name under results/benchmarks (default: pruning, with _<E>epochs / "
                             "_<T>trials for those overrides)")
    parser.add_argument("--baseline", nargs="+", default=[], metavar="NAME",
                        help="reports under results/benchmarks whose unpruned rows (same epochs and trials) "
                             "stand for the unpruned runs of their seeds instead of running them again")
    args = parser.parse_args()

    spec, _ = config.load_study(str(ROOT / "studies" / "vae_tuning.yaml"))
    pruners = ["none", *(args.pruners or [spec.search.pruner])]
    specs = [with_pruner(spec, pruner, args.trials, args.epochs, seed) for seed in args.seeds for pruner in pruners]
    reused = unpruned_rows(args.baseline, specs[0])
    with ProcessPoolExecutor(args.jobs) as pool:
        todo = [s for s in specs if not (s.search.pruner == "none" and s.seed in reused)]
        todo.sort(key=lambda s: s.search.pruner != "none")  # the longest runs first: no lone straggler
        done = {}
        for s, row in zip(todo, pool.map(functools.partial(run_variant, threads=args.threads), todo)):
            print(f"seed {row['seed']}, {row['pruner']}: {row['epochs']} epochs, best val_elbo "
                  f"{row['best_val_elbo']}, {row['wall_s']:.0f} s", flush=True)
            done[s.seed, s.search.pruner] = row
        rows = [done.get((s.seed, s.search.pruner)) or reused[s.seed] for s in specs]
    for i in range(0, len(rows), len(pruners)):
        base = rows[i]
        for row in rows[i : i + len(pruners)]:
            row["epochs_saved"] = 1.0 - row["epochs"] / base["epochs"]
            row["elbo_gap"] = None if row["best_val_elbo"] is None else base["best_val_elbo"] - row["best_val_elbo"]
    print(f"\nstudies/vae_tuning.yaml ({rows[0]['trials']} trials, up to {args.epochs or spec.train.epochs} "
          "epochs each); elbo gap = unpruned best - this best (nats), same seed")
    print_table(rows, [("seed", "seed", "d"), ("pruner", "pruner", ""), ("trials", "trials", "d"),
                       ("complete", "complete", "d"), ("pruned", "pruned", "d"), ("epochs", "epochs", "d"),
                       ("epochs_saved", "saved", ".0%"), ("best_val_elbo", "best val_elbo", ".2f"),
                       ("elbo_gap", "gap nats", ".2f"), ("wall_s", "wall s", ".0f")])
    summary = [summarize(pruner, [r for r in rows if r["pruner"] == pruner]) for pruner in pruners[1:]]
    print(f"\nOver {len(args.seeds)} seed(s):")
    print_table([s | {"ci": "{:.2f} to {:.2f}".format(*s["gap_ci95"])} for s in summary],
                [("pruner", "pruner", ""), ("seeds", "seeds", "d"), ("mean_saved", "mean saved", ".0%"),
                 ("mean_gap", "mean gap nats", ".2f"), ("gap_se", "s.e.", ".2f"), ("ci", "95% interval", ""),
                 ("worst_gap", "worst gap nats", ".2f")])
    targets = {f"{s['pruner']}: >= 40% fewer epochs, best within 1 nat (means over seeds)":
               s["mean_saved"] >= 0.4 and s["mean_gap"] <= 1.0 for s in summary}
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    overrides = (f"_{args.epochs}epochs" if args.epochs else "") + (f"_{args.trials}trials" if args.trials else "")
    report = args.out or f"pruning{overrides}"
    write_report(report, {"study": "studies/vae_tuning.yaml", "seeds": args.seeds, "epochs": args.epochs or spec.train.epochs,
                          "rows": rows, "summary": summary, "targets": targets})


if __name__ == "__main__":
    main()
