"""The checks that come before anything is written: `run`'s flags, devices, the results folder,
stores that cannot both be the same file or are read-only; the store a report reads back; the
leaderboard's file; the UI's port."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from vaebench.errors import InputError

if TYPE_CHECKING:
    from vaebench.config import StudySpec


def check_flags(args: argparse.Namespace, spec: StudySpec, path: Path) -> None:
    """The numeric flags of `run`, each in its range."""
    if args.trials is not None and args.trials < 1:
        raise InputError(f"--trials {args.trials}: must be at least 1")
    if args.trials is not None and spec.search.sampler == "grid" and args.trials > spec.search.grid_size():
        raise InputError(f"--trials {args.trials}: the grid of {path} has only {spec.search.grid_size()} points")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be at least 1")
    if args.threads is not None and args.threads > (os.cpu_count() or 1):
        raise InputError(f"--threads {args.threads}: more than this machine's {os.cpu_count() or 1} CPUs")
    if args.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every {args.checkpoint_every}: must be at least 1")
    if args.checkpoint_minutes is not None and not 0 < args.checkpoint_minutes < float("inf"):
        raise InputError(f"--checkpoint-minutes {args.checkpoint_minutes}: must be a positive number")
    if not 0 <= args.checkpoint_min_seconds < float("inf"):
        raise InputError(f"--checkpoint-min-seconds {args.checkpoint_min_seconds}: must be 0 or more")
    if args.tensorboard:  # written only once a trial runs: a file there would fail every trial
        check_results(Path(args.tensorboard), "--tensorboard")


def check_devices(spec: StudySpec, path: Path, flag: str | None) -> None:
    """Every device the study can run on must exist on this machine: the flag's (else the
    file's `device:`) and any `search.space.device` choice."""
    from vaebench.validate import device_problem, shown

    if flag is not None and (problem := device_problem(flag)):
        raise InputError(f"--device {flag}: {problem}")
    base = [] if flag is not None else [("device", spec.device)]
    choices = [(f"search.space.device = {shown(v)}", v) for v in spec.search.space.get("device", [])]
    for where, name in base + choices:
        if problem := device_problem(name):
            raise InputError(f"{path}: {where}: {problem}")


def check_results(results: Path, what: str = "--results", study: str | None = None) -> None:
    """The report can be written under `results` (checked before training, so a typo does not
    cost a study): a folder, or a path whose nearest existing parent is a writable folder; and
    `results/<study>` absent or a real folder (a link or a file there is the user's, never moved)."""
    if results.exists() and not results.is_dir():
        raise InputError(f"{what} {results}: not a folder")
    existing = results
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {results}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise InputError(f"{what} {results}: folder {existing} is not writable")
    if study is not None:
        from vaebench.atomic import check_target

        check_target(results, study)


def check_out_file(out: Path, what: str = "--out") -> None:
    """A file can be written at `out`: its folder passes check_results, and nothing but a file is
    there already (a folder would be left holding the temporary file)."""
    check_results(out.parent, what)
    if out.is_dir() or (out.exists() and not out.is_file()):
        raise InputError(f"{what} {out}: {'a folder' if out.is_dir() else 'not a file'}; give the path of a "
                         "CSV file (e.g. leaderboard.csv)")


def check_distinct_stores(storage_url: str, tracking_uri: str) -> None:
    """Optuna and MLflow each need their own SQLite file (two schemas in one file would be
    migrated half-way by the second)."""
    from vaebench.stores import sqlite_path

    optuna_file, mlflow_file = sqlite_path(storage_url), sqlite_path(tracking_uri)
    if optuna_file is not None and mlflow_file is not None and optuna_file.resolve() == mlflow_file.resolve():
        raise InputError(f"--storage {storage_url}: the same file as the MLflow tracking URI; give each its own")


def check_stores_writable(args: argparse.Namespace, tracking_uri: str) -> None:
    """`run` writes both stores: an SQLite or journal file already there must be writable (the
    folder, where SQLite puts its journal, is checked with the URL). Not checked for reading a
    study back (report, leaderboard), which writes neither."""
    from vaebench.search import journal_path
    from vaebench.stores import redact, sqlite_path

    flag = "--tracking-uri" if args.tracking_uri else "tracking URI"
    for what, url, path in (("--storage", args.storage, sqlite_path(args.storage) or journal_path(args.storage)),
                            (flag, tracking_uri, sqlite_path(tracking_uri))):
        if path is not None and path.exists() and not os.access(path, os.W_OK):
            raise InputError(f"{what} {redact(url)}: {path} is read-only; `run` writes to it")


def check_port(host: str, port: int) -> None:
    """The UI's port is one the server can listen on: 1-65535 (0 would let the system pick one
    that the printed links do not name) and free on `host`."""
    import socket

    from vaebench.stores import short_reason

    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: must be 1 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host}: not an address to listen on ({short_reason(exc)})") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            sock.bind(address)
        except OSError as exc:
            raise InputError(f"--port {port}: cannot listen on {host} ({short_reason(exc)})") from None


def tracked_store(args: argparse.Namespace, name: str) -> str:
    """The tracking URI to read study `name` back from, checked without writing: a store that
    is there and readable, and holding the parent run the Optuna storage names."""
    from vaebench import search, tracking

    tracking.quiet()
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    what = "--tracking-uri" if args.tracking_uri else "tracking URI"
    tracking.check_tracking_uri(uri, what)
    search.check_tracked(name, args.storage, uri)
    tracking.check_store_exists(uri, what)
    return uri
