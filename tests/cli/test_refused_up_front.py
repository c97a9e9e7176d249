"""Bad input that used to reach a traceback or trial time, refused before anything runs or is
written: one line naming the file and field or the flag, exit 2. An empty MNIST part, a file
where --tensorboard's folder goes, a folder as leaderboard --out, read-only stores, the UI's
port out of range or in use."""
from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
from pathlib import Path
from typing import Iterator

import pytest

from helpers import refused_line, run_cli, seeded, write_study
from vaebench.cli import commands as cli


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and mtime: what a refused command must leave alone."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def refused(folder: Path, *argv: str) -> str:
    """The one line of a command refused in `folder`, which it left as it was (subfolders too)."""
    before = listing(folder)
    line = refused_line(folder, *argv)
    assert listing(folder) == before
    return line


def stores(where: Path) -> list[str]:
    return ["--storage", f"sqlite:///{where / 'optuna.db'}", "--tracking-uri", f"sqlite:///{where / 'mlflow.db'}"]


def run(where: Path, study: Path | str, *flags: str) -> list[str]:
    return ["run", "--study", str(study), "--no-progress", "--threads", "1", *stores(where), *flags]


# --- data and --tensorboard: refused before the first trial ----------------------------------


def write_mnist(root: Path, n_train: int = 100, n_test: int = 20) -> Path:
    """Random MNIST-format idx files (every class in each part) in root/MNIST/raw."""
    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{part}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28)
                                                        + rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes())
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n)
                                                        + (np.arange(n, dtype=np.uint8) % 10).tobytes())
    return raw


@pytest.mark.parametrize("part", ["train", "t10k"])
def test_an_empty_mnist_part_is_refused_before_any_trial(folder: Path, part: str) -> None:
    """Header-only idx files (a valid format, zero images): each trial used to fail with
    `stack expects a non-empty TensorList`."""
    raw = write_mnist(folder / "data")
    (raw / f"{part}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, 0, 28, 28))
    (raw / f"{part}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, 0))
    study = folder / "study.yaml"
    study.write_text("name: t\ndataset: {name: mnist}\nmodel: {arch: mlp, latent_dim: 2, hidden: [8]}\n"
                     "train: {epochs: 1}\neval: {generation: false}\nsearch: {sampler: grid, space: {seed: [0]}}\n")
    which = "training" if part == "train" else "test"
    line = refused(folder, *run(folder, study, "--data-dir", str(folder / "data")))
    assert line == f"vaebench: error: mnist: {raw}: the official {which} part holds no images"


def test_a_file_where_the_tensorboard_folder_goes_is_refused_before_any_trial(folder: Path) -> None:
    study = write_study(folder, "tiny", {"seed": [0]})
    (folder / "tb").write_text("a user's file")
    (folder / "notes").write_text("")
    assert refused(folder, *run(folder, study, "--tensorboard", "tb")) == "vaebench: error: --tensorboard tb: not a folder"
    assert refused(folder, *run(folder, study, "--tensorboard", "notes/tb")).startswith(
        "vaebench: error: --tensorboard notes/tb: notes is a file")


# --- a finished study: leaderboard --out, read-only stores ---------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[Path]:
    """A folder in which a one-trial study has finished (both stores and results/tiny)."""
    import mlflow
    import torch

    where = seeded(tmp_path_factory.mktemp("finished"), mlflow_template)
    threads = torch.get_num_threads()
    with contextlib.chdir(where):
        code, _, err = run_cli(where, write_study(where, "tiny", {"seed": [0]}))
        assert code == 0, err
    yield where
    mlflow.set_tracking_uri(None)
    torch.set_num_threads(threads)


def test_leaderboard_out_naming_a_folder_is_refused_and_leaves_nothing(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(finished)
    (finished / "boards").mkdir(exist_ok=True)
    line = refused(finished, "leaderboard", "--study", "tiny.yaml", "--out", "boards", *stores(finished))
    assert line.startswith("vaebench: error: --out boards: a folder; give the path of a CSV file")  # and no temporary file


def read_only(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """os.access says `path` cannot be written, as it would for a user without write permission
    (root may write any file whatever its mode: a chmod alone does not refuse anything to it)."""
    real = os.access

    def access(p: os.PathLike | str, mode: int, **kw: object) -> bool:
        if Path(p).resolve() == path.resolve() and mode & os.W_OK:
            return False
        return real(p, mode, **kw)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("db, flag", [("optuna.db", "--storage"), ("mlflow.db", "--tracking-uri")])
def test_run_refuses_a_read_only_store_up_front(
    finished: Path, monkeypatch: pytest.MonkeyPatch, db: str, flag: str
) -> None:
    monkeypatch.chdir(finished)
    read_only(monkeypatch, finished / db)
    line = refused(finished, *run(finished, "tiny.yaml"))
    assert line.startswith(f"vaebench: error: {flag} sqlite:///{finished / db}: {finished / db} is read-only")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes a file whatever its mode; the test above refuses through os.access")
@pytest.mark.parametrize("db, flag", [("optuna.db", "--storage"), ("mlflow.db", "--tracking-uri")])
def test_run_refuses_a_store_made_read_only_with_chmod(
    finished: Path, monkeypatch: pytest.MonkeyPatch, db: str, flag: str
) -> None:
    monkeypatch.chdir(finished)
    mode = (finished / db).stat().st_mode
    (finished / db).chmod(0o444)
    try:
        line = refused(finished, *run(finished, "tiny.yaml"))
        assert line.startswith(f"vaebench: error: {flag} sqlite:///{finished / db}: {finished / db} is read-only")
    finally:
        (finished / db).chmod(mode)


def test_reading_a_study_back_from_read_only_stores_is_allowed(
    finished: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(finished)
    read_only(monkeypatch, finished / "optuna.db")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["leaderboard", "--study", "tiny.yaml", "--out", str(tmp_path / "board.csv"), *stores(finished)]) == 0
    assert (tmp_path / "board.csv").is_file()


# --- ui --port ----------------------------------------------------------------------------


@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`ui` ends by becoming MLflow's server: record the command instead."""
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: started.append(args))
    return started


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_ui_refuses_a_port_out_of_range(folder: Path, no_exec: list, port: str) -> None:
    assert refused(folder, "ui", "--port", port) == f"vaebench: error: --port {port}: must be 1 to 65535"
    assert no_exec == []


def test_ui_refuses_a_port_in_use(folder: Path, no_exec: list) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(folder, "ui", "--port", str(port))
    assert line.startswith(f"vaebench: error: --port {port}: cannot listen on 127.0.0.1 ([Errno 98] Address already in use")
    assert no_exec == []


def test_ui_starts_the_server_on_a_free_port(folder: Path, no_exec: list) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"])
    assert no_exec and no_exec[0][-4:-2] == ["--port", str(port)]
