"""stores.py: store URLs printed without passwords, SQLite files found, unusable stores refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from vaebench import stores, tracking
from vaebench.errors import InputError


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://me:s3cr:et@db.example:5432/optuna", "postgresql+psycopg://me:***@db.example:5432/optuna"),
    ("http://user:pw@mlflow.example:5000", "http://user:***@mlflow.example:5000"),
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("postgresql://me@db/optuna", "postgresql://me@db/optuna"),
    ("journal:runs/optuna.journal", "journal:runs/optuna.journal"),
])
def test_redact_hides_passwords_only(url: str, shown: str) -> None:
    assert stores.redact(url) == shown


def test_store_errors_do_not_print_the_password() -> None:
    """A storage that cannot be reached is bad input; its message names the URL, password hidden."""
    from vaebench import search

    with pytest.raises(InputError) as info:
        search.check_storage("postgresql+psycopg://me:s3cret@127.0.0.1:1/optuna")
    assert "s3cret" not in str(info.value) and "me:***@127.0.0.1:1" in str(info.value)
    with pytest.raises(InputError) as info:
        tracking.check_tracking_uri("http://me:s3cret@127.0.0.1:1")
    assert "s3cret" not in str(info.value) and "me:***@127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///optuna.db", Path("optuna.db")),
    ("sqlite:////abs/mlflow.db", Path("/abs/mlflow.db")),
    ("sqlite:///:memory:", None),
    ("sqlite://", None),
    ("postgresql://db/optuna", None),
])
def test_sqlite_path_is_the_file_behind_the_url(url: str, path: Path | None) -> None:
    assert stores.sqlite_path(url) == path


def test_short_reason_keeps_the_os_reason_or_the_first_line() -> None:
    wrapped = RuntimeError("MaxRetryError(NewConnectionError('[Errno 111] Connection refused'))")
    assert stores.short_reason(wrapped) == "[Errno 111] Connection refused"
    assert stores.short_reason(ValueError("first\nsecond")) == "first"
    assert stores.short_reason(ValueError("")) == "ValueError"


def test_a_store_file_needs_a_writable_folder_and_no_folder_in_its_place(tmp_path: Path) -> None:
    stores.check_file_location(tmp_path / "optuna.db", "--storage")
    with pytest.raises(InputError, match="--storage: folder .*missing does not exist"):
        stores.check_file_location(tmp_path / "missing" / "optuna.db", "--storage")
    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError, match="--storage: .*taken is not a file"):
        stores.check_file_location(tmp_path / "taken", "--storage")
    (tmp_path / "text.db").write_text("not a database\n")
    with pytest.raises(InputError, match="text.db is not an SQLite database"):
        stores.check_store_url(f"sqlite:///{tmp_path / 'text.db'}", "--storage")


def test_wait_for_server_returns_once_health_answers_and_fails_when_the_server_exits() -> None:
    import http.server
    import socket
    import subprocess
    import sys
    import threading

    answered: list[str] = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            answered.append(self.path)
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert stores.wait_for_server(f"http://127.0.0.1:{server.server_port}/", timeout_s=10) >= 0
        assert answered == ["/health"]
    finally:
        server.shutdown()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        stores.wait_for_server(f"http://127.0.0.1:{port}", exited, timeout_s=30)
    with pytest.raises(RuntimeError, match="did not answer in 0.5 s"):
        stores.wait_for_server(f"http://127.0.0.1:{port}", timeout_s=0.5)
