"""Generation scores of a trained model (vaebench.metrics.sampling), their tags and picture."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaebench import data, models, train
from vaebench import tracking as tk
from vaebench.config import EvalSpec
from vaebench.metrics import feature_net, sampling
from vaebench.tracking import artifacts

N = 200  # images per sampler: enough for k = 3 neighbourhoods, seconds per test


@pytest.fixture(scope="module")
def mnist5k() -> data.Dataset:
    return data.load("mnist5k", seed=0, binarize="dynamic")


def tiny(ds: data.Dataset, objective: str = "beta_vae") -> models.VAEModel:
    torch.manual_seed(0)
    model = models.build(arch="mlp", objective=objective, latent_dim=4, likelihood="bernoulli",
                         input_shape=ds.input_shape, hidden=[32])
    train.fit(model, ds, epochs=1, batch_size=256, lr=3e-3, seed=0)
    return model


@pytest.fixture(scope="module")
def vae(mnist5k: data.Dataset) -> models.VAEModel:
    return tiny(mnist5k)


@pytest.fixture(scope="module")
def scored(vae: models.VAEModel, mnist5k: data.Dataset) -> sampling.Generated:
    return sampling.generation_scores(vae, mnist5k, n=N, seed=0)


def test_a_trained_model_gets_finite_scores_above_the_real_data_floor(scored: sampling.Generated) -> None:
    out = scored
    assert set(out.scores) == set(sampling.METRICS)
    assert all(math.isfinite(v) for v in out.scores.values()), out.scores
    assert out.skipped == {}
    assert out.feature_net_sha256 == feature_net.SHA256 == feature_net.file_sha256(feature_net.WEIGHTS)
    assert out.samples == N and out.seed == 0
    floor, ceiling = out.reference["real_data"], out.reference["mean_image"]
    assert floor["fd"] < out.scores["test_fd_prior"] and floor["fd"] < out.scores["test_fd_gmm"]
    assert floor["fd"] < ceiling["fd"] / 10  # real digits are far closer to the test set than the mean blob
    assert floor["recall"] > 0.5 > ceiling["recall"]
    assert 0 <= out.scores["test_precision_prior"] <= 1 and 0 <= out.scores["test_coverage_gmm"] <= 1
    assert {s: g.shape for s, g in out.grids.items()} == {"prior": (64, 1, 28, 28), "gmm": (64, 1, 28, 28)}


def test_the_scores_are_bit_identical_on_a_rerun(scored: sampling.Generated, vae: models.VAEModel,
                                                 mnist5k: data.Dataset) -> None:
    sampling._reference.cache_clear()  # the reference rows are recomputed too
    threads = torch.get_num_threads()
    again = sampling.generation_scores(vae, mnist5k, n=N, seed=0)
    assert torch.get_num_threads() == threads  # scikit-learn's one-thread limits leave torch's setting alone
    assert scored.scores == again.scores and scored.reference == again.reference
    assert all(torch.equal(scored.grids[s], again.grids[s]) for s in sampling.SAMPLERS)


def test_a_model_that_cannot_sample_gets_nan_with_the_reason(mnist5k: data.Dataset) -> None:
    ae = tiny(mnist5k, objective="ae")
    out = sampling.generation_scores(ae, mnist5k, n=N)
    sampled = [m for m in sampling.METRICS if m != "test_fd_recon"]
    assert all(math.isnan(out.scores[m]) for m in sampled)
    assert set(out.skipped) == set(sampled) and set(out.skipped.values()) == {"skipped: no sample"}
    assert math.isfinite(out.scores["test_fd_recon"])  # reconstructions need no sampler
    assert out.grids == {}


def test_data_the_network_does_not_cover_gets_nan_with_the_reason() -> None:
    digits = data.load("digits", seed=0)
    model = models.build(arch="mlp", objective="beta_vae", latent_dim=2, likelihood="bernoulli",
                         input_shape=digits.input_shape, hidden=[8])
    out = sampling.generation_scores(model, digits)
    assert set(out.scores) == set(sampling.METRICS) and all(math.isnan(v) for v in out.scores.values())
    assert set(out.skipped) == set(sampling.METRICS)
    assert all("no pinned feature network for 'digits'" in why for why in out.skipped.values())
    assert artifacts.generation_tags(out) == {tk.GENERATION_SHA256: feature_net.SHA256, tk.GENERATION_SEED: "0",
                                              **{tk.SKIPPED + m: why for m, why in out.skipped.items()}}


def test_too_few_samples_for_the_neighbourhoods_get_nan_with_the_reason(vae: models.VAEModel,
                                                                        mnist5k: data.Dataset) -> None:
    out = sampling.generation_scores(vae, mnist5k, n=sampling.PR_K)
    assert all(math.isnan(v) for v in out.scores.values()) and set(out.skipped) == set(sampling.METRICS)
    assert all("needs more than 3 points" in why for why in out.skipped.values())


def test_samples_are_scored_in_the_test_split_pixel_domain() -> None:
    means = torch.full((4, 1, 28, 28), 0.3)
    drawn = sampling.to_domain(means, True, 0, "binarize")
    assert set(drawn.unique().tolist()) <= {0.0, 1.0} and torch.equal(drawn, sampling.to_domain(means, True, 0, "binarize"))
    assert torch.equal(sampling.to_domain(means, False, 0, "binarize"), means)


def test_the_switch_and_its_defaults() -> None:
    assert EvalSpec().generation is True and EvalSpec().generation_samples is None
    assert EvalSpec.model_validate({"generation": False}).generation is False


class FakeRun:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.files: dict[str, tuple[int, int]] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags |= tags

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.files[Path(path).name] = Image.open(path).size


def test_the_trial_logs_tags_and_the_side_by_side_picture(scored: sampling.Generated) -> None:
    run = FakeRun()
    artifacts.log_generation(scored, run)  # type: ignore[arg-type]
    assert run.tags[tk.GENERATION_SHA256] == feature_net.SHA256
    assert run.tags[tk.GENERATION_SAMPLES] == str(N) and run.tags[tk.GENERATION_SEED] == "0"
    assert json.loads(run.tags[tk.GENERATION_REFERENCE]) == scored.reference
    assert not any(k.startswith(tk.SKIPPED) for k in run.tags)
    width, height = run.files[artifacts.GENERATION_PICTURE]
    assert width > 2 * height - 20  # two 8x8 grids next to each other
