"""atomic: a report folder written whole or not at all, and the temporary folders that killed
processes left behind removed at the next write."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vaebench import atomic
from vaebench.errors import InputError


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temporary_folders_of_killed_processes_are_removed_at_the_next_write(tmp_path: Path) -> None:
    killed = tmp_path / f".smoke.{dead_pid()}.k1ll3d"  # a kill -9 mid-report
    live = tmp_path / f".smoke.{os.getpid()}.bu1ld"  # this process is building it right now
    other = tmp_path / f".other.{dead_pid()}.k1ll3d"  # another study's: left to that study
    for folder in (killed, live, other):
        folder.mkdir()
        (folder / "report.md").write_text("half")
        (folder / atomic.MARKER).write_text(atomic._MARK_TEXT)
    target = atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("whole"))
    assert (target / "report.md").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "smoke"])


def test_a_hidden_folder_vaebench_cannot_prove_it_made_is_never_removed(tmp_path: Path) -> None:
    backup = tmp_path / ".smoke.bak"  # a user's copy of the report
    unmarked = tmp_path / f".smoke.{dead_pid()}.k1ll3d"  # the right kind of name, but no marker inside
    forged = tmp_path / f".smoke.{dead_pid()}.f0rg3d"  # a marker that is not vaebench's
    old_kind = tmp_path / ".smoke.x7q2ab_c"  # no pid in its name, older than this process
    for folder in (backup, unmarked, forged, old_kind):
        folder.mkdir()
        (folder / "notes.md").write_text("mine")
        os.utime(folder, (0, 0))
    (forged / atomic.MARKER).write_text("something else")
    atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("whole"))
    for folder in (backup, unmarked, forged, old_kind):
        assert (folder / "notes.md").read_text() == "mine"


def test_a_report_replaces_only_the_files_vaebench_wrote(tmp_path: Path) -> None:
    def first(f: Path) -> None:
        (f / "report.md").write_text("first")
        (f / "figures").mkdir()
        (f / "figures" / "gone.png").write_text("old figure")

    target = atomic.write_folder(tmp_path, "smoke", first)
    (target / "notes.md").write_text("my notes")
    (target / "figures" / "mine.png").write_text("my figure")
    (target / "drafts").mkdir()
    (target / "drafts" / "a.md").write_text("draft")
    atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("second"))
    assert (target / "report.md").read_text() == "second"
    assert (target / "notes.md").read_text() == "my notes"
    assert (target / "figures" / "mine.png").read_text() == "my figure"
    assert (target / "drafts" / "a.md").read_text() == "draft"
    assert not (target / "figures" / "gone.png").exists()  # vaebench's own, no longer written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]


def test_a_failed_swap_puts_the_old_folder_back_with_the_users_files(tmp_path: Path, monkeypatch) -> None:
    target = atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("first"))
    (target / "notes.md").write_text("my notes")
    real, calls = Path.rename, []

    def failing(self: Path, dest: Path) -> Path:
        if Path(dest) == target and not calls:  # the new folder's swap in, not the old one's way back
            calls.append(self)
            raise OSError(28, "No space left on device")
        return real(self, dest)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError):
        atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("second"))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]
    assert (target / "report.md").read_text() == "first" and (target / "notes.md").read_text() == "my notes"


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_link_or_a_file_where_the_folder_goes_is_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "results" / "smoke"
    target.parent.mkdir()
    if kind == "symlink":
        target.symlink_to(elsewhere)
    else:
        target.write_text("a user's file")
    with pytest.raises(InputError, match="a symbolic link|a file, not a folder"):
        atomic.write_folder(tmp_path / "results", "smoke", lambda f: (f / "report.md").write_text("x"))
    assert [p.name for p in target.parent.iterdir()] == ["smoke"]
    assert target.is_symlink() if kind == "symlink" else target.read_text() == "a user's file"
    assert list(elsewhere.iterdir()) == []


def test_a_failed_build_leaves_the_old_folder_and_no_temporary_one(tmp_path: Path) -> None:
    atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("first"))

    def broken(folder: Path) -> None:
        (folder / "report.md").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic.write_folder(tmp_path, "smoke", broken)
    assert [p.name for p in tmp_path.iterdir()] == ["smoke"]
    assert (tmp_path / "smoke" / "report.md").read_text() == "first"


@pytest.mark.parametrize("name", ["..", ".", "../elsewhere"])
def test_a_name_that_leads_outside_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="not a usable name for a folder"):
        atomic.write_folder(tmp_path / "results", name, lambda f: None)
    assert list(tmp_path.iterdir()) == []


def test_a_report_folder_and_its_files_get_the_permissions_a_plain_mkdir_and_open_would(tmp_path) -> None:
    import stat

    import pandas as pd

    from vaebench import report

    old = os.umask(0o022)
    try:
        folder = atomic.write_folder(tmp_path, "r", lambda f: report.write_csv(pd.DataFrame({"a": [1]}), f / "x.csv"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert stat.S_IMODE((folder / "x.csv").stat().st_mode) == 0o644  # not mkstemp's 0600
