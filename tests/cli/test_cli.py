"""The CLI: bad input (one line naming the file and field, exit 2, nothing written),
reproducible runs, --study as a name or a YAML path, and its safe defaults.

Most tests call `vaebench.cli.main` in this process (a temp folder as the current folder);
the reproducibility test runs a second, real CLI process.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from helpers import REPO, mlflow_runs, run_cli, seeded, spawn, write_study
from vaebench import data
from vaebench.cli import commands as cli
from vaebench.search import interrupt
from vaebench.config import load_study
from vaebench.errors import InputError

TIMING = {"train_samples_per_s", "eval_samples_per_s", "train_seconds"}


# -- bad input --------------------------------------------------------------------------


def assert_refused(folder: Path, flags: list[str], expected: str, study: str = "tiny.yaml") -> None:
    """Exit 2, one line naming the problem, and the folder exactly as it was."""
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    start = time.monotonic()
    code, out, err = run_cli(folder, study, *flags)
    assert code == 2 and out == "", (out, err)
    assert len(err.splitlines()) == 1 and err.startswith("vaebench: error: ") and expected in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert time.monotonic() - start < 20  # no minutes of retries


@pytest.mark.parametrize("flags, expected", [
    (["--storage", "sqlite:///no/such/folder/optuna.db"], "--storage sqlite:///no/such/folder/optuna.db: folder"),
    (["--storage", "no/such/folder/study.journal"], "--storage no/such/folder/study.journal: folder"),
    (["--storage", "postgresql+psycopg://127.0.0.1:1/x"], "--storage postgresql+psycopg://127.0.0.1:1/x: cannot"),
    (["--storage", "not a url"], "--storage not a url:"),
    (["--tracking-uri", "http://127.0.0.1:1"], "--tracking-uri http://127.0.0.1:1: unreachable"),
    (["--tracking-uri", "sqlite:///no/such/folder/mlflow.db"], "--tracking-uri sqlite:///no/such/folder/mlflow.db"),
    (["--trials", "5"], "--trials 5: the grid of tiny.yaml has only 2 points"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--tracking-uri", "bogus://x"], "--tracking-uri bogus://x: "),
    (["--tracking-uri", "file:///tmp/vaebench-mlr"], "--tracking-uri file:///tmp/vaebench-mlr: The filesystem"),
    (["--tracking-uri", "./mlr"], "--tracking-uri ./mlr: The filesystem"),
    (["--storage", "sqlite:///same.db", "--tracking-uri", "sqlite:///same.db"], "the same file as the MLflow"),
    (["--results", "tiny.yaml"], "--results tiny.yaml: not a folder"),
    (["--results", "tiny.yaml/reports"], "--results tiny.yaml/reports: tiny.yaml is a file, not a folder"),
])
def test_unusable_stores_and_flags_exit_2_writing_nothing(folder: Path, flags: list[str], expected: str) -> None:
    write_study(folder, "tiny", {"seed": [0, 1]})
    assert_refused(folder, flags, expected)


def test_one_programs_database_given_as_the_others_is_refused(folder: Path, mlflow_template: Path) -> None:
    write_study(folder, "tiny", {"seed": [0, 1]})
    seeded(folder, mlflow_template)
    assert_refused(folder, ["--storage", "sqlite:///mlflow.db"], "mlflow.db is not Optuna's database (it holds MLflow's tables)")
    (folder / "optuna.db").write_bytes((folder / "mlflow.db").read_bytes())
    (folder / "mlflow.db").unlink()
    with contextlib.closing(sqlite3.connect(folder / "optuna.db")) as conn, conn:
        conn.execute("drop table experiments")
        conn.execute("create table studies (study_id integer)")
    assert_refused(folder, ["--storage", "sqlite:///x.db", "--tracking-uri", "sqlite:///optuna.db"],
                   "optuna.db is not MLflow's database (it holds Optuna's tables)")


@pytest.mark.parametrize("text", [b"hello\n", b'{"op_code": 0, "worker_id": "w", "study_name": "s"}\n[1]\n', b"{}\n"])
def test_a_journal_that_is_not_optunas_is_refused(folder: Path, text: bytes) -> None:
    write_study(folder, "tiny", {"seed": [0, 1]})
    (folder / "tiny.journal").write_bytes(text)
    line = len(text.splitlines())
    assert_refused(folder, ["--storage", "tiny.journal"], f"line {line} of tiny.journal is not an Optuna journal record")


@pytest.mark.parametrize("command", ["report", "leaderboard"])
@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_reading_a_damaged_mlflow_store_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path, command: str, damage: str
) -> None:
    seeded(tmp_path, mlflow_template)
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("tiny")
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"garbage\n" * 10 if damage == "text" else db.read_bytes()[: 3 * 4096])
    line = refused(tmp_path, monkeypatch, command, "--study", "tiny", "--tracking-uri", f"sqlite:///{db}")
    assert line.startswith(f"vaebench: error: --tracking-uri sqlite:///{db}: ") or line.startswith(
        f"vaebench: error: tracking URI sqlite:///{db}: cannot read"), line


def test_a_report_that_cannot_be_written_after_training_keeps_the_trials(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaebench import report

    def full(*args: Any) -> Any:
        raise OSError(28, "No space left on device")

    seeded(folder, mlflow_template)
    monkeypatch.setattr(report, "write_report", full)
    code, out, err = run_cli(folder, write_study(folder, "tiny", {"seed": [0, 1]}))
    assert code == 1 and "study tiny: 2/2 trials finished" in out, err
    assert err.splitlines() == ["vaebench: no report: --results results: [Errno 28] No space left on device; the trials "
                                f"are kept: `python -m vaebench report --study {folder / 'tiny.yaml'} --results results` "
                                "writes it"]
    _, children = mlflow_runs(folder, "tiny")
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]


def test_a_file_that_is_not_a_database_is_refused(folder: Path) -> None:
    write_study(folder, "tiny", {"seed": [0, 1]})
    (folder / "optuna.db").write_text("not a database\n")
    assert_refused(folder, [], "optuna.db is not an SQLite database")


def test_a_dataset_with_missing_files_exits_2_writing_nothing(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(data_dir: Path | None) -> Any:
        raise FileNotFoundError(2, "No such file or directory", "data/broken/train-images-idx3-ubyte")

    monkeypatch.setitem(data.DATASETS, "broken", missing)
    spec = yaml.safe_load(write_study(folder, "tiny", {"seed": [0, 1]}).read_text())
    spec["dataset"]["name"] = "broken"
    (folder / "tiny.yaml").write_text(yaml.safe_dump(spec))
    assert_refused(folder, [], "tiny.yaml: dataset.name: broken: cannot load ([Errno 2] No such file or directory")


STUDY_FILES = sorted((REPO / "studies").glob("*.yaml"))
WRONG = st.one_of(st.text(max_size=6), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                  st.none(), st.lists(st.integers(-3, 3), max_size=3),
                  st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2))
BREAKERS = ["{", "[", "]", ": :", "\t- x", "key: [1, 2", "'open", "&a *b", "!!python/object:os.system x", "- - -:", "%"]


def key_paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    if not isinstance(tree, dict):
        return []
    return [prefix + (k,) for k in tree] + [p for k, v in tree.items() for p in key_paths(v, prefix + (k,))]


@st.composite
def mutated_study(draw: st.DrawFn) -> tuple[str, str]:
    """(file name, text): a shipped study file with one random mutation."""
    path = draw(st.sampled_from(STUDY_FILES))
    text = path.read_text()
    kind = draw(st.sampled_from(["delete", "wrong type", "unknown key", "not positive", "break yaml"]))
    if kind == "break yaml":
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = lines[at] + draw(st.sampled_from(BREAKERS)) if draw(st.booleans()) else draw(st.sampled_from(BREAKERS))
        return path.name, "\n".join(lines) + "\n"
    tree = yaml.safe_load(text)
    paths = key_paths(tree)
    if kind == "not positive":
        numbers = [p for p in paths if isinstance(_get(tree, p), (int, float)) and not isinstance(_get(tree, p), bool)]
        paths = numbers or paths
    key = draw(st.sampled_from(paths))
    parent = _get(tree, key[:-1])
    if kind == "delete":
        del parent[key[-1]]
    elif kind == "wrong type":
        parent[key[-1]] = draw(WRONG)
    elif kind == "not positive":
        parent[key[-1]] = draw(st.sampled_from([0, -1, -0.5, -1e9]))
    else:
        target = _get(tree, key) if isinstance(_get(tree, key), dict) else parent
        target[draw(st.text(min_size=1, max_size=8)) + "_x"] = draw(WRONG)
    return path.name, yaml.safe_dump(tree, allow_unicode=True)


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_study())
def test_mutated_study_files_never_crash(case: tuple[str, str]) -> None:
    """A mutated shipped study is either still valid (then it is not run here), or the CLI
    prints one line naming the file, exits 2, and writes nothing."""
    name, text = case
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        Path(name).write_text(text)
        try:
            load_study(name)
            return
        except InputError:
            pass
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["run", "--study", name, "--storage", "sqlite:///optuna.db",
                             "--tracking-uri", "sqlite:///mlflow.db", "--no-progress"])
        assert code == 2 and out.getvalue() == ""
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"vaebench: error: {name}"), lines
        assert os.listdir(".") == [name]


# -- reproducibility and safe defaults --------------------------------------------------


@pytest.mark.slow  # a second CLI process
def test_same_config_and_seed_give_bit_identical_metrics(folder: Path, mlflow_template: Path) -> None:
    """One run in a new process, one in this one (which has run other tests: global RNGs
    elsewhere), at the same time, in two folders."""
    folders = []
    for name in ("a", "b"):
        (folder / name).mkdir()
        folders.append(seeded(folder / name, mlflow_template))
        write_study(folders[-1], "repro", {"model.beta": [1.0, 4.0]}, epochs=2)
    other = spawn(folders[0], "run", "--study", "repro.yaml", "--no-progress", "--threads", "1")
    code, _, err = run_cli(folders[1], folders[1] / "repro.yaml")
    assert code == 0, err
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    histories = []
    for f in folders:
        client = MlflowClient(f"sqlite:///{f / 'mlflow.db'}")
        _, children = mlflow_runs(f, "repro")
        histories.append({
            (c.data.tags["vaebench.trial_number"], key): [(m.step, m.value) for m in client.get_metric_history(
                c.info.run_id, key)]
            for c in children for key in c.data.metrics if key not in TIMING
        })
    assert len(histories[0]) > 20
    assert histories[0] == histories[1]  # exact equality, every step of every metric


def test_ui_binds_localhost_unless_told() -> None:
    parser = cli.build_parser()
    command = cli.ui_command(parser.parse_args(["ui", "--tracking-uri", "sqlite:///x.db"]))
    assert command[command.index("--host") + 1] == "127.0.0.1"
    command = cli.ui_command(parser.parse_args(["ui", "--tracking-uri", "sqlite:///x.db", "--host", "0.0.0.0"]))
    assert command[command.index("--host") + 1] == "0.0.0.0"


def test_every_torch_load_is_weights_only() -> None:
    """Loading a pickle runs code: vaebench loads checkpoints and models as weights only."""
    sources = {path: path.read_text() for path in (REPO / "vaebench").rglob("*.py")}
    calls = [(path, m.group(0)) for path, text in sources.items() for m in re.finditer(r"torch\.load\([^)]*\)", text)]
    assert all("weights_only=True" in call for _, call in calls), calls
    assert not [path for path, text in sources.items() if re.search(r"pickle\.loads?\(", text)]


def test_first_ctrl_c_asks_to_stop_the_second_stops_now() -> None:
    import signal
    import threading

    previous = signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    err = io.StringIO()
    with pytest.raises(KeyboardInterrupt), contextlib.redirect_stderr(err), interrupt.graceful_sigint(stop):
        signal.raise_signal(signal.SIGINT)
        assert stop.is_set()  # the first one only asked
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the second Ctrl-C did not stop")
    assert signal.getsignal(signal.SIGINT) is previous


# -- flags and study settings checked before anything is written ----------------------

STUDY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "objective": "vae", "latent_dim": 2, "hidden": [8]},
    "train": {"epochs": 1},
    "search": {"sampler": "grid", "space": {"seed": [0, 1]}},
}


def refused(folder: Path, monkeypatch: pytest.MonkeyPatch, *argv: str, **settings: object) -> str:
    """Run the CLI in `folder` on tiny.yaml (STUDY with `settings`): it must exit 2 with one
    line on stderr, print nothing else, and leave the folder as it was. Returns the line."""
    monkeypatch.chdir(folder)
    Path("tiny.yaml").write_text(yaml.safe_dump(STUDY | settings))
    before = sorted(p.name for p in folder.iterdir())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    lines = err.getvalue().splitlines()
    assert (code, out.getvalue(), len(lines)) == (2, "", 1), (code, out.getvalue(), lines)
    assert sorted(p.name for p in folder.iterdir()) == before
    return lines[0]


RUN = ("run", "--study", "tiny.yaml", "--storage", "sqlite:///optuna.db", "--tracking-uri", "sqlite:///mlflow.db")


@pytest.mark.parametrize("device", ["meta", "", "tpu", "cuda:x"])
def test_a_device_flag_vaebench_cannot_run_on_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    line = refused(tmp_path, monkeypatch, *RUN, "--device", device)
    assert line == f"vaebench: error: --device {device}: '{device}' is not a device: use auto, cpu, cuda, cuda:N or mps"


def test_a_missing_gpu_is_refused_for_the_flag_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = refused(tmp_path, monkeypatch, *RUN, "--device", "cuda")
    assert line == "vaebench: error: --device cuda: 'cuda' requested but this machine has 0 CUDA devices"
    line = refused(tmp_path, monkeypatch, *RUN, device="cuda")
    assert line == "vaebench: error: tiny.yaml: device: 'cuda' requested but this machine has 0 CUDA devices"
    line = refused(tmp_path, monkeypatch, *RUN, "--device", "cpu", search={
        "sampler": "grid", "space": {"device": ["cpu", "cuda"]}})
    assert line.startswith('vaebench: error: tiny.yaml: search.space.device = "cuda": \'cuda\' requested')


def test_the_flag_overrides_the_files_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(STUDY | {"device": "cuda"}))
    spec, _ = load_study(str(path))
    cli.check_devices(spec, path, "cpu")  # the file's cuda is never used
    with pytest.raises(cli.InputError, match="gpu.yaml: device: 'cuda' requested"):
        cli.check_devices(spec, path, None)


@pytest.mark.parametrize("study", ["..", ".", "../elsewhere", "/tmp"])
def test_leaderboard_refuses_a_study_name_that_leads_out_of_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, study: str
) -> None:
    line = refused(tmp_path, monkeypatch, "leaderboard", "--study", study, "--tracking-uri", "sqlite:///mlflow.db")
    assert line.startswith(f"vaebench: error: {study!r}: not a usable name for a folder in results")


@pytest.mark.parametrize("name", ["..", ".", "a" * 300])
def test_run_refuses_a_study_name_that_is_not_a_plain_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    line = refused(tmp_path, monkeypatch, *RUN, name=name)
    assert line.startswith("vaebench: error: tiny.yaml: name: ") and "not a usable study name" in line


def test_a_results_folder_that_is_not_writable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, where chmod does not stop writes: the check's own view is patched."""
    from vaebench.cli import runchecks

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real = os.access
    monkeypatch.setattr(runchecks.os, "access", lambda p, mode: Path(p).resolve() != read_only and real(p, mode))
    line = refused(tmp_path, monkeypatch, *RUN, "--results", "ro/reports")
    assert line == "vaebench: error: --results ro/reports: folder ro is not writable"
