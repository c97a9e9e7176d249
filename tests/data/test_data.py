"""Datasets: shapes, deterministic stratified splits, binarization, fingerprint, caching."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vaebench import data

SIZES = {"digits": (1797, (1, 8, 8)), "mnist5k": (5000, (1, 28, 28))}


def row_keys(split: data.Split) -> Counter:
    """Multiset of (image bytes, label): identifies rows even if images repeat."""
    flat = split.x.reshape(len(split), -1).numpy()
    return Counter(zip((row.tobytes() for row in flat), split.y.tolist()))


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def splits(ds: data.Dataset) -> list[data.Split]:
    return [ds.split(name) for name in data.SPLITS]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_shapes_dtypes_and_range(name):
    ds = data.load(name)
    n, shape = SIZES[name]
    assert ds.input_shape == shape
    assert ds.n_classes == 10
    assert ds.factor_names == ()
    assert sum(len(s) for s in splits(ds)) == n
    for split in splits(ds):
        assert split.x.dtype == torch.float32 and split.x.is_contiguous()
        assert split.x.shape == (len(split), *shape)
        assert split.y.dtype == torch.int64 and split.y.shape == (len(split),)
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert split.factors is None
    assert ds.train.x.max() == 1.0 and not is_binary(ds.train.x)  # grayscale, full range


@pytest.mark.parametrize("name", sorted(SIZES))
def test_splits_partition_the_dataset(name):
    ds = data.load(name, val_fraction=0.1, test_fraction=0.2)
    n = SIZES[name][0]
    assert [len(s) for s in splits(ds)] == [n - round(0.1 * n) - round(0.2 * n), round(0.1 * n), round(0.2 * n)]
    raw = data.DATASETS[name](None)
    whole = data.Split(x=torch.from_numpy(np.asarray(raw.x, dtype=np.float32)), y=torch.from_numpy(raw.y))
    assert sum((row_keys(s) for s in splits(ds)), Counter()) == row_keys(whole)


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("seed", [0, 1])
def test_splits_are_stratified(name, seed):
    ds = data.load(name, seed=seed)
    all_y = torch.cat([s.y for s in splits(ds)])
    share = torch.bincount(all_y).double() / len(all_y)
    for split in splits(ds):
        counts = torch.bincount(split.y, minlength=len(share)).double()
        assert (counts - share * len(split)).abs().max() <= 1.0


def test_same_seed_same_data_and_fingerprint():
    first = data.load("digits", seed=3, binarize="static")
    data.clear_cache()
    again = data.load("digits", seed=3, binarize="static")
    assert again is not first
    assert again.fingerprint == first.fingerprint
    for a, b in zip(splits(first), splits(again)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_different_seed_different_split_and_fingerprint():
    a, b = data.load("digits", seed=0), data.load("digits", seed=1)
    assert a.fingerprint != b.fingerprint
    assert not torch.equal(a.test.x, b.test.x)


def test_fingerprint_tracks_preprocessing_and_fractions():
    prints = {
        data.load("digits").fingerprint,
        data.load("digits", binarize="static").fingerprint,
        data.load("digits", binarize="dynamic").fingerprint,
        data.load("digits", test_fraction=0.3).fingerprint,
        data.load("mnist5k").fingerprint,
    }
    assert len(prints) == 5
    assert all(len(p) == 16 and int(p, 16) >= 0 for p in prints)


def test_load_is_cached_whatever_the_argument_style():
    ds = data.load("digits")
    assert data.load("digits", seed=0) is ds
    assert data.load("digits", 0, "none", 0.1, 0.2) is ds
    assert data.load("digits", seed=1) is not ds


def test_static_binarization_is_binary_and_fixed():
    ds = data.load("digits", seed=0, binarize="static")
    gray = data.load("digits", seed=0)
    for split, gray_split in zip(splits(ds), splits(gray)):
        assert is_binary(split.x)
        assert torch.equal(split.y, gray_split.y)
        assert ((split.x == 1) <= (gray_split.x > 0)).all()  # a black pixel never turns on
    data.clear_cache()
    assert torch.equal(data.load("digits", seed=0, binarize="static").train.x, ds.train.x)


def test_dynamic_binarization_keeps_train_gray_and_fixes_held_out():
    ds = data.load("digits", seed=0, binarize="dynamic")
    static = data.load("digits", seed=0, binarize="static")
    assert not is_binary(ds.train.x)
    assert torch.equal(ds.train.x, data.load("digits", seed=0).train.x)
    for name in ("val", "test"):
        assert is_binary(ds.split(name).x)
        assert torch.equal(ds.split(name).x, static.split(name).x)  # comparable held-out bits
    data.clear_cache()
    again = data.load("digits", seed=0, binarize="dynamic")
    for name in ("val", "test"):  # one fixed binarisation, whatever process loads it
        assert torch.equal(again.split(name).x, ds.split(name).x)
    # (that training batches are re-binarised every epoch is tested in test_train.py)


def test_dsprites_is_registered_with_its_factors():
    ds = data.load("dsprites")
    assert ds.input_shape == (1, 64, 64) and ds.n_classes == 3
    assert ds.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert [len(s) for s in splits(ds)] == [14_000, 2_000, 4_000]
    for split in splits(ds):
        assert is_binary(split.x)
        assert split.factors.shape == (len(split), 5)
        assert torch.equal(split.factors[:, 0], split.y)  # label = shape
    all_factors = torch.cat([s.factors for s in splits(ds)])
    assert len(torch.unique(all_factors, dim=0)) == 20_000  # distinct images
    data.clear_cache()  # ~0.7 GB of images: not worth keeping for the rest of the session


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="digits, dsprites, mnist5k"):
        data.load("nope")
    with pytest.raises(ValueError, match="dynamic, none, static"):
        data.load("digits", binarize="sometimes")
    with pytest.raises(ValueError, match="test, train, val"):
        data.load("digits").split("validation")
    with pytest.raises(ValueError):
        data.load("digits", val_fraction=0.5, test_fraction=0.5)


def test_registered_dataset_keeps_factors_aligned(monkeypatch):

    @data.register("toy_factors")
    def toy(data_dir):
        rng = np.random.default_rng(0)
        factors = np.stack([np.repeat(np.arange(4), 50), rng.integers(0, 5, 200)], axis=1)
        x = np.broadcast_to((factors[:, 1] / 4.0)[:, None, None, None], (200, 1, 2, 2))
        return data.RawData(x=x, y=factors[:, 0], factors=factors, factor_names=("kind", "level"))

    with pytest.raises(ValueError, match="already registered"):
        data.register("toy_factors")(toy)
    ds = data.load("toy_factors", seed=0)
    assert ds.factor_names == ("kind", "level")
    for split in splits(ds):
        assert split.factors.dtype == torch.int64 and split.factors.shape == (len(split), 2)
        assert torch.equal(split.factors[:, 0], split.y)
        assert torch.equal(split.x[:, 0, 0, 0] * 4, split.factors[:, 1].float())
