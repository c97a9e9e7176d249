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
    old_kind = tmp_path / ".smoke.x7q2ab_c"  # no pid in its name, older than this process
    other = tmp_path / f".other.{dead_pid()}.k1ll3d"  # another study's: left to that study
    for folder in (killed, live, old_kind, other):
        folder.mkdir()
        (folder / "report.md").write_text("half")
    os.utime(old_kind, (0, 0))
    target = atomic.write_folder(tmp_path, "smoke", lambda f: (f / "report.md").write_text("whole"))
    assert (target / "report.md").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "smoke"])


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
