"""What search + tracking cost per trial:

    python benchmarks/bench_overhead.py                  # tiny trials + flagship-trial share
    python benchmarks/bench_overhead.py --no-flagship    # tiny trials only (~1 min)

1. Tiny trials: a study of one-epoch trials of a 2-d VAE on the 8x8 digits, run through
   `search.run_study` with the default local stores (Optuna `sqlite:///optuna.db`, MLflow
   `sqlite:///mlflow.db` + ./mlruns, in a temporary folder), and again with an Optuna
   journal file. The first `--warmup` trials (database creation, imports, first-use caches)
   are run and not counted; the next `--trials` are timed. The time inside train.fit,
   metrics.evaluate and the generation scores (metrics.sampling) is measured by wrapping them, so

       overhead per trial = (wall time - time in fit, evaluate and generation scores) / trials

   is what Optuna, MLflow, the data cache, model building and the artifacts (see
   vaebench.tracking.artifacts; `--artifacts best`: the costly set once, for the best trial) cost,
   with the artifacts also shown on their own.
2. Flagship-sized trials (beta_sweep: MLP 512-256, 15 epochs on mnist5k) run as search runs
   them (child run, params, dataset input, per-epoch batched metrics, final metrics, image
   grids, weights, description) in each way of tracking, against the same training,
   evaluation and generation scores with no tracking: the default (every trial's charts and
   light MLflow model), `--artifacts best`, and the default with `--system-metrics`. Each variant runs
   `--sequence` trials in a row; rounds alternate the variants (order rotated), medians over `--repeats`.
   Tracking's share = tracked / untracked - 1 per trial, each round against its own
   untracked trials (median and range over rounds), on the wall clock and on the
   process's CPU time (all threads; the neighbours' load does not inflate it), with the best
   trial's standalone `pt2` model (made once per study) spread over the study's
   trials. Those shares move by several percent from round to round on a shared machine,
   so the time inside each tracking call on the default trial's critical path is also
   given (wall and CPU), with the costly set (charts + model) on its own: the 3% target's
   measure. Its trials' charts are blitted (vaebench.tracking.charts); a study's worker draws its
   first two in full, timed apart and spread over the study's trials like the pt2 model.
   MLflow's system metrics are also timed alone, around an idle block as long as a trial.

Prints tables, writes results/benchmarks/overhead.json.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import median, print_table, rotated, timed, write_report

from vaebench import config, metrics, search, tracking, train, trial

from vaebench.metrics import sampling
from vaebench.tracking import artifacts, charts
from vaebench.tracking import ui as tracking_ui

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec(n_trials: int) -> config.StudySpec:
    return config.StudySpec(
        name="overhead",
        dataset=config.DatasetSpec(name="digits"),
        model=config.ModelSpec(arch="mlp", objective="vae", latent_dim=2, hidden=(16,)),
        train=config.TrainSpec(epochs=1, batch_size=256, lr=3e-3),
        search=config.SearchSpec(sampler="random", n_trials=n_trials,
                                 space={"train.lr": config.Range(low=1e-3, high=1e-2, log=True)}),
    )


@contextlib.contextmanager
def clocked(targets: dict[str, tuple[Any, str]], clock: Callable[[], float] = time.perf_counter) -> Iterator[dict[str, float]]:
    """Wrap module attributes (name -> (module, attribute)) to add up the seconds spent in them
    by `clock` (the wall clock, or time.thread_time for this thread's CPU)."""
    spent: dict[str, float] = defaultdict(float)
    saved = {name: getattr(module, attr) for name, (module, attr) in targets.items()}

    def wrapper(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += clock() - start
        return timed_call

    for name, (module, attr) in targets.items():
        setattr(module, attr, wrapper(name, saved[name]))
    try:
        yield spent
    finally:
        for name, (module, attr) in targets.items():
            setattr(module, attr, saved[name])


def tiny_trials(storage: str, warmup: int, trials: int) -> dict[str, float]:
    """Run `warmup` trials, then time `trials` more in the same stores (a resumed study)."""
    tracking.quiet()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        # MLflow's own default store (./mlflow.db + ./mlruns), spelled absolute: MLflow caches
        # one store per URI, and a relative one would outlive this folder.
        uri = f"sqlite:///{tmp}/mlflow.db"
        search.run_study(tiny_spec(warmup), storage_url=storage, tracking_uri=uri, n_trials=warmup, artifacts_mode="best")
        targets = {"fit": (train, "fit"), "evaluate": (metrics, "evaluate"),
                   "generation": (sampling, "generation_scores"), "artifacts": (artifacts, "log_trial"),
                   "generation_picture": (artifacts, "log_generation"), "best_artifacts": (artifacts, "log_full")}
        with clocked(targets) as spent:
            start, cpu_start = time.perf_counter(), time.process_time()
            result = search.run_study(tiny_spec(warmup + trials), storage_url=storage, tracking_uri=uri,
                                      n_trials=warmup + trials, artifacts_mode="best")
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert result.finished == warmup + trials and not result.failures, result.failures
    compute = spent["fit"] + spent["evaluate"] + spent["generation"]
    pictures = spent["artifacts"] + spent["generation_picture"] + spent["best_artifacts"]
    return {"storage": storage, "trials": trials, "wall_per_trial_s": wall / trials,
            "compute_per_trial_s": compute / trials, "overhead_per_trial_s": (wall - compute) / trials,
            "artifacts_per_trial_s": pictures / trials, "overhead_without_artifacts_s": (wall - compute - pictures) / trials,
            "cpu_per_trial_s": cpu / trials}


def flagship_share(repeats: int, trials: int) -> dict[str, Any]:
    """Flagship trials untracked and tracked in each way, `trials` in a row per variant (the
    order rotated every round), wall and CPU seconds per trial, median over `repeats` rounds.
    The best trial's standalone model, made once per study, is spread over its trials."""
    spec, path = config.load_study(str(ROOT / "studies" / "beta_sweep.yaml"))
    cfg = spec.with_params({"model.beta": 1.0, "seed": 0})
    ds = trial.load_data(cfg)
    tracking.quiet()

    def untracked() -> None:
        model = trial.build_model(cfg, ds)
        train.fit(model, ds, **trial.fit_settings(cfg))
        metrics.evaluate(model, ds, **trial.evaluate_settings(cfg))
        if cfg.eval.generation:  # scores, computed untracked too; their picture is tracking's
            sampling.generation_scores(model, ds, **trial.generation_settings(cfg))

    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        uri = f"sqlite:///{tmp}/mlflow.db"
        tracker = tracking.StudyTracker.open(uri, "flagship-overhead")
        tracking.resolve_tracking_uri(uri)  # as run_study does (log_model uses it)
        parent = tracker.create_parent(tags={}, params={})
        numbers = iter(range(10**6))

        def tracked(full: bool, system: bool = False) -> None:
            """One trial as the worker runs it (the costly set when `full`)."""
            number = next(numbers)
            run = tracker.start_trial(parent, number, f"t{number}", trial.environment() | tracking_ui.source_tags())
            run.log_params(cfg.flat())
            tracking_ui.log_dataset(run, ds, "vaebench.data:mnist5k")
            with tracking_ui.system_metrics(run) if system else contextlib.nullcontext():
                final = trial.train_and_evaluate(cfg, ds, run, [], full_artifacts_in=tracker.experiment_id if full else None,
                                                 model_name=f"t{number}")
            tracking_ui.describe_run(run, tracking_ui.trial_summary(f"t{number}", "val_elbo", final))
            run.finish("COMPLETE")

        variants: dict[str, Callable[[], None]] = {
            "untracked": untracked,
            "all (default)": lambda: tracked(True),
            "best": lambda: tracked(False),
            "all + system metrics": lambda: tracked(True, system=True),
        }
        for fn in variants.values():  # warm-up: imports, first MLflow writes, first figures and models
            fn()
        # Tracking calls on the trial's critical path, timed where they are made (they do not
        # nest), on the wall clock and in the calling thread's CPU time; and within the costly
        # set, its charts and its model.
        calls = {"start_trial": (tracking.StudyTracker, "start_trial"), "log_params": (tracking.TrialRun, "log_params"),
                 "log_dataset": (tracking_ui, "log_dataset"), "log_metrics": (tracking.TrialRun, "log_metrics"),
                 "cheap set": (artifacts, "log_trial"), "generation picture": (artifacts, "log_generation"),
                 "costly set": (artifacts, "log_full"),
                 "describe": (tracking_ui, "describe_run"), "finish": (tracking.TrialRun, "finish")}
        parts = {"latent PCA chart": (charts, "latent_pca"), "KL chart": (charts, "kl_per_dim"),
                 "light model": (tracking.TrialRun, "log_model")}
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        in_calls: list[dict[str, float]] = []
        in_calls_cpu: list[dict[str, float]] = []
        for rnd in range(repeats):
            for name in rotated(list(variants), rnd):
                timing = name == "all (default)"
                with clocked(calls | parts if timing else {}) as spent, \
                        clocked(calls | parts if timing else {}, time.thread_time) as spent_cpu:
                    cpu_start, start = time.process_time(), time.perf_counter()
                    for _ in range(trials):
                        variants[name]()
                    seconds[name].append((time.perf_counter() - start) / trials)
                    cpu[name].append((time.process_time() - cpu_start) / trials)
                if timing:
                    in_calls.append({k: v / trials for k, v in spent.items()})
                    in_calls_cpu.append({k: v / trials for k, v in spent_cpu.items()})
        u, uc = median(seconds["untracked"]), median(cpu["untracked"])
        draws = chart_draws(trial.build_model(cfg, ds), ds, repeats)
        system = system_metrics_cost(tracker, parent, u, repeats)
        best = []  # the best trial's standalone model, made once per study at its end
        for number in range(repeats):
            run = tracker.start_trial(parent, 10**6 + number, "best", {})
            best.append(timed(lambda: artifacts.log_full(trial.build_model(cfg, ds), ds, run, tracker.experiment_id,
                                                         standalone=True, charts=False)))
    per_study = median(best) / spec.search.total_trials

    def shares(times: dict[str, list[float]], v: str, clock: str) -> dict[str, Any]:
        """Round by round, against that round's untracked trials (the rounds drift apart):
        the median share and the range."""
        each = sorted((t + per_study) / base - 1.0 for t, base in zip(times[v], times["untracked"]))
        return {f"share_{clock}": median(each), f"share_{clock}_range": f"{each[0]:+.1%} to {each[-1]:+.1%}"}

    rows = [{"variant": v, "wall_s": median(seconds[v]), "cpu_s": median(cpu[v]),
             **shares(seconds, v, "wall"), **shares(cpu, v, "cpu")}
            for v in variants if v != "untracked"]
    totals = [sum(c.get(k, 0.0) for k in calls) for c in in_calls]
    # The trials here draw their charts blitted; a study's worker draws its first two in full.
    once = per_study + (draws["full"] - draws["blitted"]) / spec.search.total_trials
    costly = median([c.get("costly set", 0.0) for c in in_calls]) + once
    costly_cpu = median([c.get("costly set", 0.0) for c in in_calls_cpu]) + once
    return {"rows": rows, "untracked_s": u, "untracked_cpu_s": uc, "seconds": seconds, "cpu_seconds": cpu,
            "trials_per_sequence": trials, "in_tracking_calls_s": median(totals), "in_tracking_calls": in_calls,
            "in_tracking_calls_cpu": in_calls_cpu,
            "in_each_call_s": {k: median([c.get(k, 0.0) for c in in_calls]) for k in calls | parts},
            "in_each_call_cpu_s": {k: median([c.get(k, 0.0) for c in in_calls_cpu]) for k in calls | parts},
            "tracking_calls_share": median(totals) / u, "best_artifacts_s": median(best),
            "costly_set_s": costly, "costly_set_share": costly / u,
            "costly_set_cpu_s": costly_cpu, "costly_set_cpu_share": costly_cpu / uc,
            "trials_per_study": spec.search.total_trials, "epochs": cfg.train.epochs, "chart_draws_s": draws,
            "system_metrics": system | {"cpu_share": system["cpu_s"] / uc, "wall_share": system["wall_s"] / u}}


def system_metrics_cost(tracker: Any, parent: str, seconds: float, repeats: int) -> dict[str, float]:
    """MLflow's system metrics around an idle block as long as a trial: the process CPU time
    they take (their sampling thread included; an idle block takes none) and the wall time of
    starting and finishing them, on the trial's critical path. Median over `repeats`."""
    cpu, wall = [], []
    for number in range(repeats):
        run = tracker.start_trial(parent, 2 * 10**6 + number, "system", {})
        cpu_start, start = time.process_time(), time.perf_counter()
        with tracking_ui.system_metrics(run):
            asleep = time.perf_counter()
            time.sleep(seconds)
            slept = time.perf_counter() - asleep
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - start - slept)
    return {"cpu_s": median(cpu), "wall_s": median(wall), "seconds": seconds}


def chart_draws(model: Any, ds: Any, repeats: int) -> dict[str, float]:
    """A trial's two charts drawn in full (the first of each kind in a process: its
    static part is drawn and kept) and blitted (later ones), alternating, median seconds of
    this thread's CPU."""
    means, labels, kl = metrics.posterior_means(model, ds.test.x), ds.test.y.numpy(), metrics.kl_per_dim(model, ds.test.x)
    spent: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for kind in ("full", "blitted"):
                if kind == "full":
                    charts._STATIC.clear()  # noqa: SLF001 - vaebench's own cache of static parts
                start = time.thread_time()
                charts.latent_pca(means, labels, Path(tmp) / "pca.png")
                charts.kl_per_dim(kl, Path(tmp) / "kl.png")
                spent[kind].append(time.thread_time() - start)
    return {kind: median(values) for kind, values in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="timed tiny trials per storage")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of flagship trials")
    parser.add_argument("--sequence", type=int, default=2, help="flagship trials in a row per variant and round")
    parser.add_argument("--no-flagship", action="store_true")
    args = parser.parse_args()

    rows = []
    for storage in ("sqlite:///optuna.db", "journal:optuna.journal"):
        rows.append(tiny_trials(storage, args.warmup, args.trials))
        print(f"{storage}: {rows[-1]['overhead_per_trial_s']:.3f} s overhead per trial", flush=True)
    print(f"\nOne-epoch trials on the 8x8 digits, {args.trials} timed trials each (after {args.warmup} warm-up)")
    print_table(rows, [("storage", "Optuna storage", ""), ("wall_per_trial_s", "wall s/trial", ".3f"),
                       ("compute_per_trial_s", "fit+eval s", ".3f"), ("overhead_per_trial_s", "overhead s", ".3f"),
                       ("artifacts_per_trial_s", "of which artifacts", ".3f"),
                       ("overhead_without_artifacts_s", "rest", ".3f"), ("cpu_per_trial_s", "CPU s/trial", ".3f")])
    report: dict[str, Any] = {"tiny_trials": rows,
                              "targets": {"overhead < 0.5 s/trial": all(r["overhead_per_trial_s"] < 0.5 for r in rows)}}
    if not args.no_flagship:
        share = flagship_share(args.repeats, args.sequence)
        print(f"\nFlagship trials ({share['epochs']} epochs), {args.sequence} in a row per variant, median of "
              f"{args.repeats} rounds; untracked {share['untracked_s']:.2f} s wall, {share['untracked_cpu_s']:.2f} s CPU "
              f"a trial; shares include the best trial's set ({share['best_artifacts_s']:.2f} s once per study) "
              f"spread over the study's {share['trials_per_study']} trials")
        print_table(share["rows"], [("variant", "tracking", ""), ("wall_s", "wall s/trial", ".2f"),
                                    ("share_wall", "share (wall)", "+.1%"), ("share_wall_range", "rounds", ""),
                                    ("cpu_s", "CPU s/trial", ".2f"), ("share_cpu", "share (CPU)", "+.1%"),
                                    ("share_cpu_range", "rounds", "")])
        print(f"\nInside the default trial, in the tracking calls on its critical path: "
              f"{1000 * share['in_tracking_calls_s']:.0f} ms = {100 * share['tracking_calls_share']:.1f}% of the untracked trial")
        print_table([{"call": k, "wall_ms": 1000 * v, "cpu_ms": 1000 * share["in_each_call_cpu_s"][k]}
                     for k, v in share["in_each_call_s"].items()],
                    [("call", "call (the last three are inside the costly set)", ""), ("wall_ms", "wall ms", ".0f"),
                     ("cpu_ms", "thread CPU ms", ".0f")])
        print(f"Costly set (charts + model, with the best trial's pt2 and the first full chart draws spread over the study): "
              f"{1000 * share['costly_set_s']:.0f} ms wall = {share['costly_set_share']:.1%} of the untracked trial's wall, "
              f"{1000 * share['costly_set_cpu_s']:.0f} ms CPU = {share['costly_set_cpu_share']:.1%} of its CPU")
        print(f"Both charts, thread CPU: {1000 * share['chart_draws_s']['full']:.0f} ms drawn in full (the first of its kind "
              f"in a process), {1000 * share['chart_draws_s']['blitted']:.0f} ms blitted (later ones)")
        sm = share["system_metrics"]
        print(f"System metrics around a {sm['seconds']:.1f} s idle block: {1000 * sm['cpu_s']:.0f} ms CPU "
              f"({sm['cpu_share']:.1%} of a trial's CPU), {1000 * sm['wall_s']:.0f} ms wall to start and finish "
              f"({sm['wall_share']:.1%} of a trial)")
        report["flagship"] = share
        # Timed inside the trial: whole-trial shares move more than 3% between rounds here.
        report["targets"]["charts + model <= 3% of a flagship trial (wall, timed inside it)"] = share["costly_set_share"] <= 0.03
    for name, ok in report["targets"].items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    write_report("overhead", report)


if __name__ == "__main__":
    main()
