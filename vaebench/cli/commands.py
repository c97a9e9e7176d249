"""`python -m vaebench` / `vaebench`: run, list, leaderboard, report, replay, ui.

A thin shell over config, trial, search, report. Heavy libraries (torch, MLflow, Optuna) are
imported inside the commands, so `--help` and `list` start fast. Bad input is one line on
stderr and exit code 2, with nothing written.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from vaebench.search import interrupt
from vaebench.errors import InputError, StoreFailure
from vaebench.stores import short_reason
from vaebench.cli.outcome import GuardedStream, failure_summary, lost_output_line, where_reasons
from vaebench.cli.runchecks import (check_devices, check_distinct_stores, check_flags, check_out_file, check_port,
                                    check_results, check_stores_writable, tracked_store)

DEFAULT_STORAGE = "sqlite:///optuna.db"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study name (./studies, then vaebench's own) or YAML path")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's ./mlflow.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaebench", description="Benchmark VAEs: Optuna search, MLflow tracking, reports.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="search, train, track and write the leaderboard")
    _add_common(run)
    run.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"Optuna storage URL or *.journal file (default {DEFAULT_STORAGE})")
    run.add_argument("--trials", type=int, default=None, help="total trials (overrides the study file)")
    run.add_argument("--device", default=None, help="auto | cpu | cuda | mps (overrides the study file)")
    run.add_argument("--data-dir", default=os.environ.get("VAEBENCH_DATA"), help="folder of local datasets")
    run.add_argument("--download", action="store_true",
                     help="fetch missing torchvision datasets (mnist, fashion_mnist, kmnist, cifar10) into the data folder")
    run.add_argument("--results", default="results", help="folder for reports (default ./results)")
    run.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="also write TensorBoard event files (scalars per epoch, image grids) under DIR")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch CPU threads for this worker (default: torch's; use 1 with several workers)")
    run.add_argument("--system-metrics", action="store_true",
                     help="MLflow's system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) on every "
                          "trial's run; needs psutil (pip install -e \".[system-metrics]\")")
    run.add_argument("--artifacts", choices=("all", "best"), default="all",
                     help="which trials get the charts and the MLflow model (default all; best: only the "
                          "study's best trial, at the end; every trial keeps "
                          "its image grids and weights)")
    run.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                     help="folder for running trials' checkpoints, shared by all workers (default: "
                          "checkpoints/ beside a local Optuna storage file, else ./checkpoints)")
    run.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                     help="checkpoint every N epochs (default 1)")
    run.add_argument("--checkpoint-min-seconds", type=float, default=30.0, metavar="S",
                     help="skip an epoch's checkpoint when the last one is less than S seconds old "
                          "(default 30: short epochs are cheaper to redo than to save; 0: every N-th epoch)")
    run.add_argument("--checkpoint-minutes", type=float, default=None, metavar="M",
                     help="also checkpoint inside an epoch once M minutes passed since the last one")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep the checkpoints of finished trials (default: removed)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--fresh", action="store_true",
                     help="start the study over: delete its Optuna trials and start a new MLflow parent run "
                          "(the old runs stay in MLflow; reports read the newest parent run); give it to one "
                          "worker only, and start the others once it runs")

    lst = sub.add_parser("list", help="registered models, architectures, objectives, likelihoods, datasets and "
                                      "studies, each with where it comes from")
    lst.add_argument("--plugin", action="append", default=[], metavar="FILE",
                     help="also run this model file (it registers its models) and list what it adds; repeatable")

    board = sub.add_parser("leaderboard", help="CSV leaderboard of a study, read back from MLflow")
    _add_common(board)
    board.add_argument("--storage", default=DEFAULT_STORAGE,
                       help="the study's Optuna storage, read (never created) to explain a study MLflow lacks")
    board.add_argument("--out", default=None, help="CSV path (default results/<study>/leaderboard.csv)")
    board.add_argument("--per-trial", action="store_true",
                       help="one row per trial instead of one per configuration (mean/std/CI over seeds)")

    rep = sub.add_parser("report", help="rebuild results/<study>/ (leaderboard, report.md, figures) from MLflow")
    _add_common(rep)
    rep.add_argument("--storage", default=DEFAULT_STORAGE,
                     help="the study's Optuna storage, read (never created) to explain a study MLflow lacks")
    rep.add_argument("--results", default="results", help="folder for reports (default ./results)")

    from vaebench.cli import check_model

    check_model.add_arguments(sub.add_parser(
        "check-model", help="check on tiny data that a model's numbers mean what the leaderboard says"))

    rp = sub.add_parser("replay", help="rerun one trial of a report folder from its manifest and check its numbers")
    rp.add_argument("folder", help="a report folder holding manifest.json and trials.csv, e.g. results/beta_sweep")
    rp.add_argument("--trial", type=int, default=None, metavar="N", help="the trial to rerun (default: the best)")
    rp.add_argument("--data-dir", default=os.environ.get("VAEBENCH_DATA"), help="folder of local datasets")

    ui = sub.add_parser("ui", help="start the MLflow UI on this folder's runs")
    ui.add_argument("--tracking-uri", default=None)
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    ui.add_argument("--port", type=int, default=5000)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything (study file, flags, data, stores) before writing anything; then run.

    Exit codes: 0 done (some trials may have failed: one line on stderr), 1 no trial of the
    study finished, 2 bad input, 130 stopped by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (running
    it again resumes).
    """
    from vaebench.config import load_study

    spec, path = load_study(args.study)
    if args.download:
        spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"download": True})})
    check_flags(args, spec, path)
    check_results(Path(args.results), study=spec.name)
    check_devices(spec, path, args.device)
    if args.device:
        spec = spec.model_copy(update={"device": args.device})

    from vaebench import checkpoint, report, search, stores, tracking, trial

    from vaebench.tracking import tensorboard as board

    from vaebench.tracking import view as mlflow_view

    from vaebench.tracking import ui as tracking_ui
    from vaebench.cli.progress import ProgressBar

    if args.tensorboard and not board.tensorboard_available():
        raise InputError("--tensorboard: the tensorboard package is not installed (pip install tensorboard)")
    if args.system_metrics and not tracking_ui.system_metrics_available():
        raise InputError("--system-metrics: the psutil package is not installed (pip install psutil)")

    tracking.quiet()
    tracking_uri = tracking.resolve_tracking_uri(args.tracking_uri)
    search.check_storage(args.storage)
    tracking.check_tracking_uri(tracking_uri, "--tracking-uri" if args.tracking_uri else "tracking URI")
    check_distinct_stores(args.storage, tracking_uri)
    check_stores_writable(args, tracking_uri)
    if not args.fresh:  # under the lock a starting worker holds while it creates new stores
        with search.setup_lock(args.storage, tracking_uri):
            search.check_before_run(spec.name, args.storage, tracking_uri)
            search.check_settings(spec, str(path), args.storage)
    trial.check_data(spec, path, args.data_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    ckpt_folder = search.checkpoint_folder(args.storage, spec.name, args.checkpoint_dir)
    if args.checkpoint_dir:
        stores.check_file_location(Path(args.checkpoint_dir) / "x", f"--checkpoint-dir {args.checkpoint_dir}")
    ckpt_options = checkpoint.Options(ckpt_folder, args.checkpoint_every, args.checkpoint_minutes,
                                      args.checkpoint_min_seconds, args.keep_checkpoints)
    total = args.trials or spec.search.total_trials
    stop = threading.Event()
    with interrupt.graceful_sigint(stop):
        with (ProgressBar(total, spec.search.objective, enabled=not args.no_progress) as bar,
              search.store_failures_in_one_line()):
            result = search.run_study(spec, storage_url=args.storage, tracking_uri=tracking_uri,
                                      study_path=str(path), n_trials=args.trials, progress=bar.hooks(),
                                      data_dir=args.data_dir, tensorboard_dir=args.tensorboard, stop=stop,
                                      artifacts_mode=args.artifacts, ckpt_options=ckpt_options,
                                      system_metrics=args.system_metrics, command=["vaebench", *args.argv],
                                      fresh=args.fresh)
        retried = f", {len(result.retried)} re-queued after their worker died" if result.retried else ""
        print(f"study {spec.name}: {result.finished}/{result.total} trials finished{retried} "
              f"(Optuna storage {stores.redact(args.storage)}, study '{spec.name}')")
        print(f"MLflow runs: experiment '{spec.name}', parent run {result.parent_run_id} in {stores.redact(tracking_uri)}")
        print(f"compare in MLflow: `vaebench ui` in this folder, then {mlflow_view.study_link(result.experiment_id)}")
        if result.finished == 0:
            what = (failure_summary(result.failures) if result.failures
                    else "stopped before any trial ended; the same command resumes" if result.interrupted
                    else "no trial ran")
            print(f"vaebench: no trial finished: {what}", file=sys.stderr)
            return 130 if result.interrupted else 1
        if result.failures:
            print(f"vaebench: {failure_summary(result.failures)} {where_reasons(result.failures, result.untracked)}",
                  file=sys.stderr)
        again = f"`python -m vaebench report --study {args.study} --results {args.results}` writes it"
        try:
            folder = report.write_report(tracking_uri, spec.name, Path(args.results))
        except InputError as exc:  # e.g. every finished trial was pruned: nothing to rank
            print(f"vaebench: no report: {exc}", file=sys.stderr)
            return 130 if result.interrupted else 1
        except OSError as exc:  # a full disk, a folder made read-only meanwhile: the trials are tracked
            print(f"vaebench: no report: --results {args.results}: {short_reason(exc)}; the trials are kept: "
                  f"{again}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if result.interrupted:
                raise
            print(f"vaebench: report stopped by Ctrl-C; the study is complete: {again}", file=sys.stderr)
            return 1
        print(f"leaderboard: {folder / 'leaderboard.csv'}\nreport: {folder / 'report.md'}")
        if result.interrupted:
            print("vaebench: interrupted; run the same command again to resume", file=sys.stderr)
            return 130
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from vaebench import data, models, schedules
    from vaebench.config import STUDY_DIRS
    from vaebench.models import plugins

    for file in args.plugin:
        plugins.load_file(file)
    for kind, names in models.describe().items():  # a name without a note is built in
        print(f"{kind + ':':15s} {', '.join(names) or 'none'}")
    print(f"{'schedules:':15s} {', '.join(sorted(schedules.SCHEDULES))}")
    print(f"{'datasets:':15s} {', '.join(sorted(data.DATASETS))}")
    studies = sorted({p.stem for d in STUDY_DIRS if d.is_dir() for p in d.glob("*.yaml")})
    print(f"{'studies:':15s} {', '.join(studies)}")
    return 0


def cmd_check_model(args: argparse.Namespace) -> int:
    from vaebench.cli import check_model

    return check_model.run(args)


def study_name(study: str) -> str:
    """The study a --study argument names: a YAML path means its `name:`, anything else is the name."""
    if Path(study).suffix.lower() not in (".yaml", ".yml"):
        return study
    from vaebench.config import load_study

    spec, _ = load_study(study)
    return spec.name


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from vaebench import report
    from vaebench.validate import safe_child

    name = study_name(args.study)
    out = Path(args.out) if args.out else safe_child(Path("results"), name) / "leaderboard.csv"
    check_out_file(out)
    board = report.leaderboard(tracked_store(args, name), name, args.per_trial)
    report.write_csv(board, out)
    print(f"{len(board)} {'trials' if args.per_trial else 'configurations'} -> {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaebench import report

    name = study_name(args.study)
    check_results(Path(args.results), study=name)
    try:
        folder = report.write_report(tracked_store(args, name), name, Path(args.results))
    except OSError as exc:
        raise InputError(f"--results {args.results}: cannot write the report ({short_reason(exc)})") from None
    print(f"report: {folder / 'report.md'}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Exit codes: 0 identical, 1 the numbers differ (the differences are printed), 2 bad input."""
    from vaebench import tracking
    from vaebench.cli import replay

    tracking.quiet()
    folder = Path(args.folder)
    outcome = replay.replay(folder, args.trial, args.data_dir)
    print(replay.summary(outcome, folder))
    return 0 if outcome.identical else 1


def ui_command(args: argparse.Namespace) -> list[str]:
    """MLflow's server on this study folder's store, bound to --host (default 127.0.0.1: local only)."""
    from vaebench import tracking
    from vaebench.tracking import view as mlflow_view

    return mlflow_view.server_command(tracking.resolve_tracking_uri(args.tracking_uri), args.host, args.port)


def cmd_ui(args: argparse.Namespace) -> int:
    """Prints each study's link (its runs, in model-training mode, with its saved view), then
    becomes the server: no vaebench process stays behind it."""
    from vaebench import tracking
    from vaebench.tracking import view as mlflow_view

    check_port(args.host, args.port)
    cmd = ui_command(args)
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    for name, url in mlflow_view.study_links(tracking.resolve_tracking_uri(args.tracking_uri), base):
        print(f"{name}: {url}")
    print(" ".join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, os.environ | mlflow_view.SERVER_ENV)


COMMANDS = {"run": cmd_run, "list": cmd_list, "leaderboard": cmd_leaderboard, "report": cmd_report,
            "replay": cmd_replay, "ui": cmd_ui, "check-model": cmd_check_model}


def main(argv: list[str] | None = None) -> int:
    """Runs one command; a standard output that fails (a closed pipe, a full disk) loses its
    lines only: the command goes on, one line on stderr says so, and the exit code is 1 where it
    would have been 0."""
    saved = sys.stdout, sys.stderr
    out, err = GuardedStream(sys.stdout), GuardedStream(sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        code = interrupt.exit_code(_main(sys.argv[1:] if argv is None else argv))
    finally:
        sys.stdout, sys.stderr = saved
    if out.lost:
        print(lost_output_line(out), file=err)
        return code or 1
    return code


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv)  # the command line, for the manifest
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:  # one line, whatever the file held (a key with a newline in it)
        print(f"vaebench: error: {exc}", file=sys.stderr)
        return 2
    except StoreFailure as exc:
        print(f"vaebench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaebench: interrupted", file=sys.stderr)
        return 130
