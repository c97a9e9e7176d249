"""A folder written whole or not at all: built under a temporary name beside it, then swapped
in, so an error (or a kill) never leaves a half-written report in its place.

Only what vaebench wrote is replaced: the new folder lists its files in `WRITTEN`, and a
file of the old folder that neither list names (a user's notes.md) is moved into the new
folder before the swap, so it survives every report.

A temporary folder is named `.NAME.PID.XXXX` and holds the marker file `MARKER` for as long
as it holds nothing but vaebench's own files: one that a killed process left behind (its pid
gone, or now another process's that started after the folder was made) is removed at the next
swap of the same NAME. A hidden folder without the marker is never removed, whatever its name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from vaebench.errors import InputError
from vaebench.validate import safe_child

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MARKER = ".vaebench-temporary"
WRITTEN = ".vaebench-written"
_MARK_TEXT = "a temporary folder of vaebench: removed once the process that made it is gone\n"


def started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None if it is gone or unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / _CLOCK_TICKS


def _marked(folder: Path) -> bool:
    """`folder` carries the marker vaebench puts in its temporary folders (a plain file)."""
    marker = folder / MARKER
    try:
        return not marker.is_symlink() and marker.is_file() and marker.read_text() == _MARK_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def _stale(folder: Path, name: str) -> bool:
    """A temporary folder of `name` that vaebench made and no live process is building."""
    pid = folder.name.removeprefix(f".{name}.").split(".", 1)[0]
    if not pid.isdigit() or not _marked(folder):
        return False
    start = started_at(int(pid))
    return start is None or start > (folder / MARKER).stat().st_mtime + 1  # gone, or the pid is another process now


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove the temporary folders of `name` in `parent` left by killed vaebench processes."""
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


def check_target(parent: Path, name: str) -> Path:
    """`parent/name` if vaebench may write a folder there: absent, or a real folder (not a
    symlink, not a file: those are the user's and are never moved)."""
    if (parent / name).is_symlink() and "/" not in name and name not in (".", ".."):
        target = parent / name
    else:
        target = safe_child(parent, name)
    if target.is_symlink():
        raise InputError(f"{target}: a symbolic link; vaebench writes a real folder there and never replaces a link "
                         "(remove it, or give another --results)")
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: a file, not a folder; vaebench writes its report folder there "
                         "(move the file, or give another --results)")
    return target


def _written(folder: Path) -> set[str]:
    """The files (relative paths) that vaebench wrote into a report folder, from its list."""
    try:
        return {line for line in (folder / WRITTEN).read_text().splitlines() if line and not line.startswith("#")}
    except (OSError, UnicodeDecodeError):
        return set()


def _theirs(old: Path, owned: set[str], rel: str = "") -> list[str]:
    """The entries of `old` (relative paths) that vaebench did not write: files, links and
    folders holding nothing vaebench wrote."""
    found = []
    for entry in sorted((old / rel).iterdir()):
        path = f"{rel}/{entry.name}" if rel else entry.name
        if path in owned or path in (WRITTEN, MARKER):
            continue
        if entry.is_dir() and not entry.is_symlink() and any(o.startswith(path + "/") for o in owned):
            found += _theirs(old, owned, path)
        else:
            found.append(path)
    return found


def _move(entries: list[str], source: Path, dest: Path) -> None:
    for rel in entries:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.rename(source / rel, dest / rel)


def write_folder(parent: Path, name: str, build: Callable[[Path], object]) -> Path:
    """`parent/name` (kept inside `parent`: see validate.safe_child) replaced by what `build`
    writes into the empty folder it is given, keeping the files of the old folder that vaebench
    did not write; on an error the old folder stays as it was, and a `parent` this call
    created is removed again."""
    target = check_target(parent, name)
    created = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent, name)
    tmp = _temporary(parent, name)
    old: Path | None = None
    kept: list[str] = []
    try:
        build(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and p.name != MARKER)
        (tmp / WRITTEN).write_text("# the files vaebench wrote here; a report replaces these only\n"
                                   + "".join(f"{f}\n" for f in files))
        if target.exists():
            check_target(parent, name)  # not made a link or a file while the report was built
            kept = _theirs(target, _written(target) | set(files))
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{os.getpid()}."))
            old.rmdir()  # a free name
            (tmp / MARKER).unlink()  # from here on tmp holds the user's files too
            target.rename(old)
            _move(kept, old, tmp)
            tmp.rename(target)
            with contextlib.suppress(OSError):
                (old / MARKER).write_text(_MARK_TEXT)  # only vaebench's files are left in it
            shutil.rmtree(old, ignore_errors=True)
        else:
            (tmp / MARKER).unlink()
            tmp.rename(target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():  # put the old folder back whole
            _move([k for k in kept if (tmp / k).exists() or (tmp / k).is_symlink()], tmp, old)
            old.rename(target)
        if tmp.exists() and tmp != target:
            shutil.rmtree(tmp, ignore_errors=True)
        if created and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # leave no trace of a failed first report
        raise
    return target


def _temporary(parent: Path, name: str) -> Path:
    """A new marked temporary folder for `name` in `parent`."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{os.getpid()}."))
    default_mode(tmp)
    (tmp / MARKER).write_text(_MARK_TEXT)
    return tmp
