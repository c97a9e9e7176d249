"""The dataset vocabulary: what a loader returns (`RawData`), what a trial gets (`Dataset`
of three `Split`s), and the registry of loaders that `@register("name")` adds to."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import numpy as np
from torch import Tensor

SPLITS = ("train", "val", "test")
DATA_DIR_ENV = "VAEBENCH_DATA"
CACHE_ENV = "VAEBENCH_CACHE"


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
        check_choice("split", name, SPLITS)
        return getattr(self, name)


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to DATASETS; refusing duplicates keeps caches honest."""

    def add(loader: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return add


def check_choice(what: str, value: str, choices: Collection[str]) -> None:
    """ValueError naming the known choices, so the message says how to fix it."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(sorted(choices))}")
