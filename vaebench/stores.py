"""Store URLs shared by Optuna (--storage) and MLflow (--tracking-uri): printing them without
passwords, finding the file behind an SQLite URL, refusing, before anything is written, a
store that cannot work, and waiting for an MLflow server to answer."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

from vaebench.errors import InputError


_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/\s]+@")


def redact(url: str) -> str:
    """A store URL fit to print or record: `postgresql://me:secret@db/x` -> `postgresql://me:***@db/x`.
    Every URL in the text is redacted (a command line, `--storage=URL`, an error message); a
    password holding an unescaped `@` is hidden whole."""
    return _USERINFO.sub(r"\1***@", url)


def short_reason(exc: BaseException) -> str:
    """One line for an error message: the OS reason (`[Errno 111] Connection refused`) when the
    exception wraps one, else its first line."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    line = errno.group(0) if errno else (text.strip().splitlines() or [type(exc).__name__])[0]
    return line[:300]


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (relative to the current folder); None for anything else."""
    if not url.lower().startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


# The table that tells each store's SQLite file from the other's (both have alembic_version).
SCHEMA_TABLES = {"Optuna": "studies", "MLflow": "experiments"}


def check_store_url(url: str, what: str, kind: str | None = None) -> None:
    """Refuse, before anything is written, a database URL that cannot work: an SQLite file in a
    folder that does not exist, that is not an SQLite file, or that holds the tables of another
    program than `kind` (a key of SCHEMA_TABLES: Optuna's storage given as MLflow's store would
    be half migrated), or a server that does not answer. `what` names the flag in the message."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InputError(f"{what}: not a database URL ({short_reason(exc)})") from None
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite":
        if path is not None:
            _check_sqlite_file(path, what, kind)
        return
    import sqlalchemy

    timeout = {"connect_timeout": 10} if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb") else {}
    engine = None
    try:
        engine = sqlalchemy.create_engine(url, connect_args=timeout)
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - missing driver, refused, bad credentials: all bad input
        raise InputError(f"{what}: cannot connect ({short_reason(exc)})") from None
    finally:
        if engine is not None:
            engine.dispose()


def check_file_location(path: Path, what: str) -> None:
    """A store file can be created or opened at `path`: its folder exists and is writable, and
    nothing but a file is there already."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{what}: folder {folder} is not writable")
    if path.exists() and not path.is_file():
        raise InputError(f"{what}: {path} is not a file")


def _check_sqlite_file(path: Path, what: str, kind: str | None) -> None:
    check_file_location(path, what)
    if not path.exists():
        return
    with path.open("rb") as f:
        head = f.read(16)
    if head and head != b"SQLite format 3\x00":
        raise InputError(f"{what}: {path} is not an SQLite database")
    import sqlite3

    try:
        tables = sqlite_tables(path)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{what}: {path} is a damaged SQLite database ({exc})") from None
    if kind and tables and SCHEMA_TABLES[kind] not in tables:
        others = [k for k, t in SCHEMA_TABLES.items() if t in tables]
        held = f"it holds {others[0]}'s tables" if others else "it holds other tables"
        raise InputError(f"{what}: {path} is not {kind}'s database ({held})")


def sqlite_tables(path: Path) -> set[str]:
    """The tables of an SQLite file, read without writing; sqlite3.DatabaseError if damaged."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}


def wait_for_server(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 120.0) -> float:
    """Waits until the MLflow server at `url` answers `/health` (while it starts it may refuse
    connections or be too busy to answer); returns the seconds waited. RuntimeError when
    `proc`, the server's process, exits first, or after `timeout_s`."""
    import requests

    start = time.monotonic()
    while True:
        try:
            if requests.get(f"{url.rstrip('/')}/health", timeout=2).ok:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server at {url} exited with {proc.returncode}")
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"the MLflow server at {url} did not answer in {timeout_s:g} s")
        time.sleep(0.2)
