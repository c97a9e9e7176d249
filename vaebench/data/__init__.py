"""Datasets as in-memory tensors: a registry of loaders, deterministic stratified splits,
binarization, and a fingerprint that is logged with every run.

    from vaebench import data
    ds = data.load("mnist5k", seed=0, binarize="dynamic")
    ds.train.x        # (N, 1, 28, 28) float32 in [0, 1]
    ds.fingerprint    # changes whenever the split or the preprocessing changes

A loader returns the whole dataset once (`RawData`); `load` splits, binarizes and wraps it.
New datasets are added with `@register("name")` and need no change here.

- `registry`: RawData, Split, Dataset and the DATASETS registry;
- `datasets`: the embedded sets (`digits`, `mnist5k`, `dsprites`) and `load`;
- `files`: the sets read from a data folder (`mnist`, `fashion_mnist`, `kmnist`, `cifar10`);
- `dsprites`: the procedural dSprites renderer.

Validation is carved from the official training split where there is one
(`val_fraction: 0` trains on all of it).
"""
from vaebench.data.datasets import (
    BINARIZERS,
    DSPRITES_SIZE,
    clear_cache,
    fingerprint,
    load,
    split_indices,
)
from vaebench.data.files import (
    DEFAULT_DATA_DIR,
    FILES,
    FileSet,
    cache_dir,
    check_available,
    check_dataset,
    read_idx,
    resolve_data_dir,
)
from vaebench.data.registry import (
    CACHE_ENV,
    DATA_DIR_ENV,
    DATASETS,
    SPLITS,
    Dataset,
    Loader,
    RawData,
    Split,
    check_choice,
    register,
)

__all__ = [
    "BINARIZERS", "CACHE_ENV", "DATASETS", "DATA_DIR_ENV", "DEFAULT_DATA_DIR", "DSPRITES_SIZE", "FILES", "SPLITS",
    "Dataset", "FileSet", "Loader", "RawData", "Split", "cache_dir", "check_available", "check_choice",
    "check_dataset", "clear_cache", "fingerprint", "load", "read_idx", "register", "resolve_data_dir",
    "split_indices",
]
