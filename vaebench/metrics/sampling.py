"""Generation scores of one trained model: its samples, decoded from the prior and from a
Gaussian mixture fitted to its training codes, and its test-set reconstructions, embedded by
the pinned feature network (`feature_net`) and compared with the test split.

Protocol (fixed so that every trial's numbers compare):
- the real set is the whole test split; each sampler draws `n` images, by default as many as
  the test split holds (10,000 on mnist, 1,000 on mnist5k), so both sides of every score have
  the same size (the Fréchet distance is biased upward at small n: numbers at different n do
  not compare);
- images are scored in the test split's pixel domain: where the test split is binary (a
  binarized dataset), each generated image is one Bernoulli draw from its pixel means, which
  is a sample of the model's Bernoulli likelihood; otherwise the pixel means are scored;
- every random stream (prior draws, mixture fit and draws, binarization) derives from one
  sample seed, `seed`, independent of the training seed: a rerun gives the same bits.

Reference rows, computed once per dataset and process: `real_data`, n training images
against the test split (the floor a model can reach), and `mean_image`, n pixel-wise
Bernoulli draws of the mean training image (a trivial generator, near the ceiling).

A score that cannot be computed is NaN, with the reason in `Generated.skipped` (tracked as the
run's `vaebench.skipped.<metric>` tag): a model without sampling, or data the network does not
cover. numpy's and scikit-learn's work runs on one BLAS and OpenMP thread (as in
metrics.latent): these arrays are small, and with busy cores the multi-threaded pools'
barriers and spin-waits cost many times the work and slow down the torch work after them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from vaebench.metrics import feature_net
from vaebench.metrics.generation import (
    GaussianStats,
    class_scores,
    fit_latent_gmm,
    frechet_distance_from_stats,
    gaussian_stats,
    knn_radii,
    precision_recall,
    sample_latent_gmm,
)
from vaebench.metrics.latent import one_thread
from vaebench.metrics.likelihood import inference, model_device, posterior_means
from vaebench.models.base import lacks

SAMPLERS = ("prior", "gmm")
PER_SAMPLER = ("fd", "precision", "recall", "density", "coverage", "classes_covered", "class_kl")
METRICS = tuple(f"test_{m}_{s}" for s in SAMPLERS for m in PER_SAMPLER) + ("test_fd_recon",)
GMM_COMPONENTS = 10
PR_K = 3  # neighbours of the precision/recall manifolds (Kynkäänniemi et al. 2019)
GRID = 64  # pixel-mean images kept per sampler for the trial's picture
SAMPLE_SEED = 0  # the default sample seed (eval.generation_seed)
STREAMS = {"prior": 0, "gmm": 1, "binarize": 2, "real_data": 3, "mean_image": 4}


@dataclass
class Generated:
    """Scores (`test_*`, NaN where skipped) and why each NaN is one; the protocol (sample
    seed, images per sampler and the reference rows, both None where no dataset was scored,
    the feature network's sha256); per sampler that ran, GRID pixel-mean images for the
    trial's picture. vaebench.tracking turns all but the images into run tags."""

    scores: dict[str, float]
    skipped: dict[str, str]  # metric: why it is NaN
    seed: int
    samples: int | None = None
    reference: dict[str, dict[str, float]] | None = None  # {"real_data": {...}, "mean_image": {...}}
    feature_net_sha256: str = feature_net.SHA256
    grids: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    stats: GaussianStats
    features: np.ndarray
    radii: np.ndarray  # k-NN radii (k = PR_K) of `features`: the real manifold, computed once
    classes: np.ndarray
    binary: bool
    rows: dict[str, dict[str, float]]


def stream_seed(seed: int, stream: str) -> int:
    """An independent seed per random stream, derived from the one sample seed."""
    return int(np.random.SeedSequence([seed, STREAMS[stream]]).generate_state(1)[0])


def _generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


def to_domain(images: Tensor, binary: bool, seed: int, stream: str) -> Tensor:
    """Pixel means on the CPU, or one seeded Bernoulli draw of them when the real set is binary."""
    x = images.detach().to("cpu", torch.float32)
    if not binary:
        return x
    return (torch.rand(x.shape, generator=_generator(seed, stream)) < x).float()


def _scores(features: np.ndarray, classes: np.ndarray, ref: Reference) -> dict[str, float]:
    """The per-sampler scores of embedded images against the reference (test) set."""
    with one_thread():
        out = {"fd": frechet_distance_from_stats(gaussian_stats(features), ref.stats)}
        out |= precision_recall(ref.features, features, PR_K, real_radii=ref.radii)
        return out | class_scores(classes, ref.classes)


@functools.lru_cache(maxsize=4)
def _reference(fingerprint: str, test: Tensor, train: Tensor, n: int, seed: int) -> Reference:
    del fingerprint  # the cache key: the same dataset split gives the same reference
    features, classes = feature_net.embed(test)
    binary = bool(((test == 0) | (test == 1)).all())
    with one_thread():
        ref = Reference(gaussian_stats(features), features, knn_radii(features, PR_K), classes, binary, {})
    rows = torch.randperm(len(train), generator=_generator(seed, "real_data"))[:n]
    real = to_domain(train[rows], binary, seed, "real_data")
    mean = train.mean(0, keepdim=True).expand(n, *train.shape[1:])
    trivial = (torch.rand(mean.shape, generator=_generator(seed, "mean_image")) < mean).float()
    ref.rows.update({name: _scores(*feature_net.embed(images), ref) for name, images in
                     (("real_data", real), ("mean_image", trivial))})
    return ref


def reference(ds, n: int | None = None, seed: int = SAMPLE_SEED) -> Reference:  # noqa: ANN001 - a data.Dataset
    """The test split's features and the reference rows for `ds` (cached per dataset, n, seed);
    UnscorableError when the feature network does not cover the dataset."""
    feature_net.check_dataset(ds.name)
    n = n or len(ds.test)
    return _reference(ds.fingerprint, ds.test.x, ds.train.x, n, seed)


def _batched(fn: Callable[[Tensor], Tensor], inputs: Tensor, batch_size: int, device: torch.device) -> Tensor:
    return torch.cat([fn(b.to(device)).cpu() for b in inputs.split(batch_size)])


def _decoder(model: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """Codes -> pixel means, for models that expose a decoder and a likelihood's mean."""
    decode, likelihood = getattr(model, "decode", None), getattr(model, "likelihood", None)
    if decode is None or not hasattr(likelihood, "mean"):
        return None
    return lambda z: likelihood.mean(decode(z))


def _prior_images(model: nn.Module, ds, n: int, seed: int, batch_size: int) -> Tensor:  # noqa: ANN001
    device = model_device(model)
    gen = _generator(seed, "prior", device)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    return torch.cat([model.sample(size, generator=gen).cpu() for size in sizes])


def _gmm_images(model: nn.Module, ds, n: int, seed: int, batch_size: int) -> Tensor:  # noqa: ANN001
    decode = _decoder(model)
    if decode is None:
        raise ValueError("skipped: no decoder from codes to pixel means (decode, likelihood.mean)")
    codes = posterior_means(model, ds.train.x, batch_size)
    if not np.isfinite(codes).all():
        raise ValueError("training codes with NaN or Inf")
    with one_thread():
        gmm = fit_latent_gmm(codes, GMM_COMPONENTS, stream_seed(seed, "gmm"))
        z = torch.from_numpy(sample_latent_gmm(gmm, n, stream_seed(seed, "gmm"))).float()
    return _batched(decode, z, batch_size, model_device(model))


SAMPLE = {"prior": (("sample",), _prior_images), "gmm": (("sample", "codes"), _gmm_images)}


def _skip(names: list[str], reason: str, out: Generated) -> None:
    for name in names:
        out.scores[name] = math.nan
        out.skipped[name] = reason


def generation_scores(model: nn.Module, ds, n: int | None = None, seed: int = SAMPLE_SEED,  # noqa: ANN001
                      batch_size: int = 1024) -> Generated:
    """`test_fd_{prior,gmm}`, precision, recall, density, coverage, classes covered and class KL
    per sampler, and `test_fd_recon`, for model on dataset `ds` (a data.Dataset); `n` samples
    per sampler (None: the test split's size), every random draw from `seed`."""
    out = Generated({}, {}, seed)
    try:
        ref = reference(ds, n, seed)
    except ValueError as exc:  # UnscorableError: data the network does not cover; too few samples for k-NN
        _skip(list(METRICS), f"skipped: {exc}", out)
        return out
    out.samples, out.reference = n or len(ds.test), ref.rows
    with inference(model):
        for sampler, (needs, draw) in SAMPLE.items():
            names = [f"test_{m}_{sampler}" for m in PER_SAMPLER]
            reason = lacks(model, *needs)
            if reason:
                _skip(names, reason, out)
                continue
            try:
                images = draw(model, ds, out.samples, seed, batch_size)
                found = _scores(*feature_net.embed(to_domain(images, ref.binary, seed, "binarize")), ref)
            except ValueError as exc:  # UnscorableError (NaN pixels, bad shape), a failed mixture fit
                _skip(names, str(exc), out)
                continue
            out.scores |= {f"test_{m}_{sampler}": float(found[m]) for m in PER_SAMPLER}
            out.grids[sampler] = images[:GRID]
        try:
            recon = _batched(model.reconstruct, ds.test.x, batch_size, model_device(model))
            feats, _ = feature_net.embed(to_domain(recon, ref.binary, seed, "binarize"))
            with one_thread():
                out.scores["test_fd_recon"] = frechet_distance_from_stats(gaussian_stats(feats), ref.stats)
        except ValueError as exc:
            _skip(["test_fd_recon"], str(exc), out)
    return out
