"""The full datasets (`mnist`, `fashion_mnist`, `kmnist`, `cifar10`), read from a data
folder (`data_dir`, else $VAEBENCH_DATA, else ./data) in torchvision's layout and downloaded
only when asked. The folder may be read-only: idx files are read in place, gzipped or not, and
CIFAR's archive is unpacked into a cache folder. Their official test split is the test split."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.data.registry import CACHE_ENV, DATA_DIR_ENV, DATASETS, RawData
from vaebench.errors import InputError

DEFAULT_DATA_DIR = Path("data")  # where file-based datasets live when neither data_dir nor $VAEBENCH_DATA is set


@dataclass(frozen=True)
class FileSet:
    """Where torchvision keeps a dataset under the data folder, and what must be there."""

    torchvision_class: str  # e.g. "MNIST": torchvision.datasets.MNIST reads the files
    folder: str  # relative to the data folder
    files: tuple[str, ...]  # the files torchvision reads, in `folder`
    idx: bool = False  # MNIST's idx format; each file may also be there as FILE.gz (as downloaded)
    archive: str | None = None  # an archive in the data folder that unpacks into `folder`

    def path(self, root: Path, name: str) -> Path:
        """The file `name` as it is on disk: FILE, else FILE.gz for idx datasets."""
        plain = root / self.folder / name
        if self.idx and not plain.is_file() and plain.with_name(f"{name}.gz").is_file():
            return plain.with_name(f"{name}.gz")
        return plain

    def missing(self, root: Path) -> list[str]:
        return [f for f in self.files if not self.path(root, f).is_file()]

    def expected(self, root: Path) -> str:
        """`missing files in FOLDER: a, b (or ...)`: what the user must provide."""
        where = root / self.folder
        alternative = f" (or {root / self.archive})" if self.archive else " (or the same names + .gz)" if self.idx else ""
        return f"missing files in {where}: {', '.join(self.missing(root))}{alternative}"


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FILES: dict[str, FileSet] = {
    "mnist": FileSet("MNIST", "MNIST/raw", _IDX, idx=True),
    "fashion_mnist": FileSet("FashionMNIST", "FashionMNIST/raw", _IDX, idx=True),
    "kmnist": FileSet("KMNIST", "KMNIST/raw", _IDX, idx=True),
    "cifar10": FileSet(
        "CIFAR10", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        archive="cifar-10-python.tar.gz",
    ),
}


def cache_dir() -> Path:
    """Where archives from a data folder are unpacked: $VAEBENCH_CACHE, else
    $XDG_CACHE_HOME/vaebench, else ~/.cache/vaebench. A data folder may be a read-only shared
    mount, so nothing is ever written into it except a download that was asked for."""
    chosen = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaebench"
    return Path(chosen).expanduser().resolve()


def _unpacked_root(files: FileSet, root: Path) -> Path:
    """The cache folder an archive of `root` unpacks into (one per data folder)."""
    return cache_dir() / hashlib.sha256(str(root).encode()).hexdigest()[:12]


def _reason(exc: BaseException) -> str:
    """The last line of an error, where torchvision puts the cause (`urlopen error ...`)."""
    lines = [line.strip(" <>") for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _unpack_archive(files: FileSet, root: Path) -> Path:
    """Unpack the dataset's archive from the data folder into the cache (once); return the
    folder that then holds the files. Written under a temporary name and renamed, so a
    worker beside this one never reads half a file."""
    target = _unpacked_root(files, root)
    if not files.missing(target):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".vaebench-unpack-") as tmp:
        with tarfile.open(root / files.archive) as tar:  # type: ignore[operator]
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        _move_missing(files, Path(tmp), target)
    return target


def _move_missing(files: FileSet, source: Path, root: Path) -> None:
    """Move the files `root` lacks from the same layout under `source` (atomic renames)."""
    (root / files.folder).mkdir(parents=True, exist_ok=True)
    for name in files.missing(root):
        if (source / files.folder / name).is_file():
            os.replace(source / files.folder / name, root / files.folder / name)


def _download(name: str, files: FileSet, root: Path) -> None:
    """torchvision's own download, into a temporary folder that is then moved into place."""
    import torchvision.datasets

    created = [p for p in (root, *root.parents) if not p.exists()]  # removed again if the download fails
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".vaebench-download-", ignore_cleanup_errors=True) as tmp:
        try:
            getattr(torchvision.datasets, files.torchvision_class)(tmp, train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - offline, refused, bad checksum: all say the same
            shutil.rmtree(tmp, ignore_errors=True)
            for folder in created:  # deepest first; only folders this call made and left empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise InputError(f"{name}: download into {root} failed ({_reason(exc)}); "
                             f"offline, put the files there yourself: {files.expected(root)}") from None
        _move_missing(files, Path(tmp), root)


def _open(path: Path) -> Any:
    """A binary file, read through gzip when it is FILE.gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _idx_header(f: Any) -> tuple[int, ...] | str:
    """The dimensions of an idx file of unsigned bytes, or why it is not one."""
    head = f.read(4)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 3:
        return "not an idx file of unsigned bytes"
    dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return "truncated header"
    return struct.unpack(f">{head[3]}I", dims)


def _idx_problem(path: Path) -> str | None:
    """Why an idx file (MNIST's format: big-endian header, then unsigned bytes) is unusable."""
    try:
        with _open(path) as f:
            dims = _idx_header(f)
            if isinstance(dims, str):
                return dims
            if path.suffix == ".gz":  # the size on disk says nothing: count the bytes
                size, expected = sum(len(b) for b in iter(lambda: f.read(1 << 20), b"")), math.prod(dims)
                return None if size == expected else f"{size} data bytes where its header promises {expected}: truncated?"
    except (OSError, EOFError) as exc:  # gzip: not a gzip file, or cut short
        return f"unreadable ({_reason(exc)})"
    expected = 4 + 4 * len(dims) + math.prod(dims)
    size = path.stat().st_size
    return None if size == expected else f"{size} bytes where its header promises {expected}: truncated?"


def read_idx(path: Path) -> np.ndarray:
    """An idx file (or its .gz) as a uint8 array of the shape its header gives."""
    with _open(path) as f:
        dims = _idx_header(f)
        if isinstance(dims, str):
            raise ValueError(f"{path}: {dims}")
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def _corrupt(files: FileSet, root: Path) -> str | None:
    """`FILE (why)` for the first present file that cannot be right, else None: the idx
    header against the size, or torchvision's md5 for CIFAR's pickles."""
    import torchvision.datasets
    from torchvision.datasets.utils import check_integrity

    cls = getattr(torchvision.datasets, files.torchvision_class)
    md5 = dict(getattr(cls, "train_list", []) + getattr(cls, "test_list", []))
    if hasattr(cls, "meta"):
        md5[cls.meta["filename"]] = cls.meta["md5"]
    for name in files.files:
        path = files.path(root, name)
        problem = _idx_problem(path) if files.idx else None
        if problem is None and name in md5 and not check_integrity(str(path), md5[name]):
            problem = "md5 differs from the published one"
        if problem:
            return f"{path} ({problem})"
    return None


def check_available(name: str, data_dir: str | Path | None = None, download: bool = False) -> Path | None:
    """Make sure `name` can be loaded, before a study starts: idx files are read as they are
    (FILE or FILE.gz), an archive is unpacked into the cache, a download happens only when
    asked, and no file may be truncated or corrupt. Returns the folder to read the files from
    (None for datasets not read from files). InputError (one line naming the folder and the
    files) if not."""
    check_dataset(name)
    files = FILES.get(name)
    if files is None:
        return None
    root = resolve_data_dir(data_dir, name)
    assert root is not None
    source = root
    try:
        if files.missing(root) and download:
            _download(name, files, root)
        if files.missing(root) and files.archive and (root / files.archive).is_file():
            source = _unpack_archive(files, root)
    except (OSError, EOFError, tarfile.TarError) as exc:  # a bad archive, a full or read-only cache
        raise InputError(f"{name}: cannot unpack {root / str(files.archive)} into {cache_dir()} ({_reason(exc)})") from None
    if files.missing(source):
        raise InputError(f"{name}: {files.expected(root)}; put them there, or set `dataset.download: true` "
                         f"in the study file (or pass --download)")
    bad = _corrupt(files, source)
    if bad:
        raise InputError(f"{name}: corrupt file {bad}; delete it and download again (download: true) or replace it")
    return source


def _nchw(images: Any) -> np.ndarray:
    """uint8 images, (N, H, W) or (N, H, W, C), as an (N, C, H, W) view."""
    arr = np.asarray(images)
    return arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)


def _read_parts(files: FileSet, source: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(images, labels) of the official training and test parts: idx files read directly
    (no unpacking), the others through torchvision."""
    if files.idx:
        images = [read_idx(files.path(source, f"{part}-images-idx3-ubyte")) for part in ("train", "t10k")]
        labels = [read_idx(files.path(source, f"{part}-labels-idx1-ubyte")).astype(np.int64) for part in ("train", "t10k")]
        return [_nchw(i) for i in images], labels
    import torchvision.datasets

    cls = getattr(torchvision.datasets, files.torchvision_class)
    parts = [cls(str(source), train=train, download=False) for train in (True, False)]
    return [_nchw(p.data) for p in parts], [np.asarray(p.targets, dtype=np.int64) for p in parts]


def load_files(name: str, data_dir: Path | None) -> RawData:
    """The official training then test split, scaled to [0, 1] straight into one float32
    array (no intermediate float copy)."""
    root = resolve_data_dir(data_dir, name)
    source = check_available(name, root)
    assert source is not None
    files = FILES[name]
    try:
        images, labels = _read_parts(files, source)
    except Exception as exc:  # noqa: BLE001 - a pickle or idx file that does not parse
        raise InputError(f"{name}: cannot read {source / files.folder} ({_reason(exc)})") from None
    if any(len(i) != len(l) for i, l in zip(images, labels)):
        raise InputError(f"{name}: {source / files.folder}: images and labels differ in number")
    for part, found in zip(("training", "test"), images):
        if len(found) == 0:  # a valid but empty file (a header alone): no split could be made of it
            raise InputError(f"{name}: {source / files.folder}: the official {part} part holds no images")
    x = np.empty((sum(len(i) for i in images), *images[0].shape[1:]), dtype=np.float32)
    np.divide(images[0], np.float32(255), out=x[: len(images[0])], dtype=np.float32)
    np.divide(images[1], np.float32(255), out=x[len(images[0]):], dtype=np.float32)
    is_test = np.zeros(len(x), dtype=bool)
    is_test[len(images[0]):] = True
    return RawData(x=x, y=np.concatenate(labels), is_test=is_test)




def resolve_data_dir(data_dir: str | Path | None, name: str = "") -> Path | None:
    """Explicit folder first, then $VAEBENCH_DATA; else ./data for the datasets read from
    files (FILES), and None ("embedded data only") for the others."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen and name in FILES:
        chosen = DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve() if chosen else None


def check_dataset(name: str) -> None:
    """ValueError listing the embedded datasets, then those read from the data folder."""
    if name not in DATASETS:
        embedded = ", ".join(sorted(set(DATASETS) - set(FILES)))
        on_disk = ", ".join(sorted(set(FILES) & set(DATASETS)))
        raise ValueError(f"unknown dataset {name!r}; choose one of: {embedded} (embedded); "
                         f"{on_disk} (files in the data folder)")
