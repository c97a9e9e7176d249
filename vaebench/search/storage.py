"""Optuna storages: opening a journal file or a database, and the lock that lets workers
create a new local store at the same time."""
from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from vaebench.errors import InputError
from vaebench.stores import check_file_location, check_store_url, redact, short_reason, sqlite_path

HEARTBEAT_S = 30  # RDB storages: a trial whose worker stops beating for GRACE_S is failed and retried once
GRACE_S = 120
MAX_RETRY = 1  # re-runs of a trial whose worker died (a Ctrl-C re-run does not count)


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (`*.journal` or `journal:PATH`); None for a database URL."""
    if url.startswith("journal:") or url.endswith(".journal"):
        return Path(url.removeprefix("journal:"))
    return None


def check_storage(url: str) -> None:
    """Refuse a storage that cannot work (a missing folder, a server that does not answer)
    before anything is written; the storage itself is created only when the run starts."""
    what = f"--storage {redact(url)}"
    path = journal_path(url)
    if path is None:
        check_store_url(url, what, kind="Optuna")
    else:
        check_file_location(path, what)
        check_journal(path, what)


def check_journal(path: Path, what: str) -> None:
    """Every complete line of a journal file is one of Optuna's log records (a JSON object with
    an op_code); a last line without its newline is a write in progress, which Optuna skips."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or "op_code" not in record:
                raise InputError(f"{what}: line {number} of {path} is not an Optuna journal record")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (`*.journal` or `journal:PATH`) or any SQLAlchemy URL (SQLite, PostgreSQL).

    RDB storages get Optuna's heartbeat, so a trial of a worker killed on another machine is
    failed and retried; dead workers on this machine are found sooner by `recovery.sweep`.
    """
    try:
        path = journal_path(url)
        if path is not None:
            return JournalStorage(JournalFileBackend(str(path)))
        return _rdb_storage(url)
    except Exception as exc:  # noqa: BLE001 - any driver error is a bad --storage
        raise InputError(f"--storage {redact(url)}: cannot open ({short_reason(exc)})") from None


def _rdb_storage(url: str, attempts: int = 5) -> RDBStorage:
    """RDBStorage, retried when workers starting together race to create its tables."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1 or url.startswith("sqlite"):
                raise
            time.sleep(0.5 * (attempt + 1))  # another worker is creating the schema right now
    raise AssertionError("unreachable")


@contextmanager
def setup_lock(*urls: str) -> Iterator[None]:
    """Hold an exclusive lock on the folders of the local SQLite / journal files in `urls`.

    Two workers starting at once would both create the tables of a new optuna.db or run
    MLflow's migrations on a new mlflow.db ("table ... already exists", "database is
    locked"). flock on the folder itself: no lock file is left behind, and the kernel drops
    the lock when a worker dies. Where flock is missing, it does nothing.
    """
    folders = set()
    for url in urls:
        path = journal_path(url) or sqlite_path(url)
        if path is not None:
            folders.add(str((path.parent if str(path.parent) else Path(".")).resolve()))
    with ExitStack() as stack:
        for folder in sorted(folders):
            stack.enter_context(_folder_lock(folder))
        yield


@contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    """Whether Optuna's heartbeat finds dead workers in `storage` (RDB storages, as opened here)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def checkpoint_folder(storage_url: str, study: str, folder: str | None = None) -> Path:
    """`folder/<study>` when given (a shared folder for workers on several machines); else
    `checkpoints/<study>` beside a local storage file (SQLite, journal), or in the current
    folder for a database server."""
    if folder is None:
        local = journal_path(storage_url) or sqlite_path(storage_url)
        base = (local.parent if local is not None else Path(".")) / "checkpoints"
    else:
        base = Path(folder)
    return base / study
