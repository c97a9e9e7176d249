"""A folder written whole or not at all: built under a temporary name beside it, then swapped
in, so an error (or a kill) never leaves a half-written report in its place.

A temporary folder is named `.NAME.PID.XXXX`: one that a killed process left behind (its pid
gone, or now another process's that started after the folder was made) is removed at the next
swap of the same NAME.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from vaebench.validate import safe_child

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None if it is gone or unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / _CLOCK_TICKS


def _stale(folder: Path, name: str) -> bool:
    """A temporary folder of `name` that no live process is building."""
    rest = folder.name.removeprefix(f".{name}.")
    pid = rest.split(".", 1)[0]
    made = folder.stat().st_mtime
    if pid.isdigit():
        start = started_at(int(pid))
        return start is None or start > made + 1  # gone, or the pid came back as another process
    return made < (started_at(os.getpid()) or made)  # an older kind of name (or `.NAME.old`): from before us


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove the temporary folders of `name` in `parent` left by processes that were killed."""
    removed = []
    for folder in parent.glob(f".{name}.*"):
        if folder.is_dir() and not folder.is_symlink() and _stale(folder, name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def default_mode(path: str | Path) -> None:
    """The permissions a plain open() or mkdir() would give (0666 / 0777 less the umask):
    mkstemp's 0600 and mkdtemp's 0700 would hide results and checkpoints from the group."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def write_folder(parent: Path, name: str, build: Callable[[Path], object]) -> Path:
    """`parent/name` (kept inside `parent`: see validate.safe_child) replaced by what `build`
    writes into the empty folder it is given; on an error the old folder stays as it was, and
    a `parent` this call created is removed again."""
    target = safe_child(parent, name)
    created = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent, name)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{os.getpid()}."))
    default_mode(tmp)
    try:
        build(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{os.getpid()}."))
            old.rmdir()
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # leave no trace of a failed first report
        raise
    return target
