"""What a user owns under results/ is never touched: a report replaces only the files vaebench
wrote, removes only the temporary folders it made, and a link or a file where the study's
folder goes is refused before any training."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from helpers import run_cli, seeded, write_study
from vaebench.cli import commands as cli


def main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_a_report_keeps_the_users_files_and_folders(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    study = write_study(folder, "tiny", {"seed": [0, 1]})
    code, _, err = run_cli(folder, study)
    assert code == 0, err
    (folder / "results" / "tiny" / "notes.md").write_text("my notes")
    (folder / "results" / ".tiny.bak").mkdir()
    (folder / "results" / ".tiny.bak" / "report.md").write_text("my copy")
    # absolute store URLs, as run_cli's: MLflow caches a store per URL string, so a relative
    # one could reach an earlier test's folder in this process
    code, out, err = main("report", "--study", str(study), "--storage", f"sqlite:///{folder / 'optuna.db'}",
                          "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}")
    assert code == 0 and out == "report: results/tiny/report.md\n", err
    assert (folder / "results" / "tiny" / "notes.md").read_text() == "my notes"
    assert (folder / "results" / ".tiny.bak" / "report.md").read_text() == "my copy"
    assert sorted(p.name for p in (folder / "results").iterdir()) == [".tiny.bak", "tiny"]


@pytest.mark.parametrize("kind", ["symlink", "file"])
@pytest.mark.parametrize("command", ["run", "report"])
def test_a_link_or_a_file_named_like_the_studys_folder_is_refused_before_training(
    folder: Path, kind: str, command: str
) -> None:
    study = write_study(folder, "tiny", {"seed": [0, 1]})
    (folder / "results").mkdir()
    (folder / "elsewhere").mkdir()
    place = folder / "results" / "tiny"
    if kind == "symlink":
        place.symlink_to(folder / "elsewhere")
    else:
        place.write_text("a user's file")
    before = sorted(p.name for p in folder.iterdir())
    code, out, err = main(command, "--study", str(study), "--storage", "sqlite:///optuna.db",
                          "--tracking-uri", "sqlite:///mlflow.db", *(["--no-progress"] if command == "run" else []))
    assert (code, out, len(err.splitlines())) == (2, "", 1), err
    assert err.startswith(f"vaebench: error: results/tiny: {'a symbolic link' if kind == 'symlink' else 'a file, not a folder'}")
    assert sorted(p.name for p in folder.iterdir()) == before  # no store made, nothing trained
    assert [p.name for p in (folder / "results").iterdir()] == ["tiny"]
    assert place.is_symlink() if kind == "symlink" else place.read_text() == "a user's file"
