"""vaebench.figures: every function writes one readable, non-blank image (or HTML) file."""
from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from vaebench import models

from vaebench.report import figures
from vaebench.tracking import charts, grids

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_model(latent_dim: int = 3) -> models.VAEModel:
    torch.manual_seed(0)
    return models.build(
        arch="mlp", objective="vae", latent_dim=latent_dim, likelihood="bernoulli",
        input_shape=(1, 8, 8), hidden=(16,),
    )


def open_png(path) -> Image.Image:
    """Asserts a non-empty, non-blank PNG and returns it as RGB."""
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = Image.open(path).convert("RGB")
    assert image.getcolors(maxcolors=1) is None, f"{path.name} is blank"  # None: more than one colour
    return image


def assert_unclipped(image: Image.Image, border: int = 3) -> None:
    """The charts drawn in every trial have fixed margins: no text may run off the figure,
    which would leave ink on its outermost pixels."""
    pixels = np.asarray(image)
    edges = [pixels[:border], pixels[-border:], pixels[:, :border], pixels[:, -border:]]
    assert all((edge == 255).all() for edge in edges), "something is drawn at the figure's edge"


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# Image grids ---------------------------------------------------------------------------

@pytest.mark.parametrize("latent_dim", [1, 3])
def test_traversals_has_one_row_per_latent_dimension(tmp_path, latent_dim):
    model = tiny_model(latent_dim)
    model.train()
    steps = 5
    path = grids.traversals(model, torch.rand(1, 8, 8), tmp_path / "t.png", steps=steps)
    image = open_png(path)
    tile = 32  # 8x8 upscaled by ceil(28 / 8) = 4
    pad = grids.PAD
    assert image.size == (steps * (tile + pad) + pad, latent_dim * (tile + pad) + pad)
    assert model.training, "the caller's train mode is restored"


def test_traversals_accepts_a_batch_and_uses_its_first_example(tmp_path):
    model = tiny_model()
    one = open_png(grids.traversals(model, torch.rand(4, 1, 8, 8), tmp_path / "a.png", steps=3))
    assert one.size[1] == 3 * 34 + 2


def test_reconstructions_and_samples_still_write_grids(tmp_path):
    model = tiny_model()
    rec = open_png(grids.reconstructions(model, torch.rand(6, 1, 8, 8), tmp_path / "r.png", n=4))
    assert rec.size == (4 * 34 + 2, 2 * 34 + 2)
    smp = open_png(grids.samples(model, tmp_path / "s.png", n=16))
    assert smp.size == (8 * 34 + 2, 2 * 34 + 2)


# Charts over arrays ----------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 2, 5])
def test_latent_pca(tmp_path, rng, dims):
    labels = rng.integers(0, 10, size=200)
    means = rng.normal(size=(200, dims)) + labels[:, None]
    means[0] = np.nan
    image = open_png(charts.latent_pca(means, labels, tmp_path / "pca.png"))
    assert 0.8 < image.size[0] / image.size[1] < 2.0
    assert_unclipped(image)


@pytest.mark.parametrize("names", [["square", "ellipse", "heart"], ["a class with a long name", "b"]])
def test_latent_pca_legend_fits_long_labels(tmp_path, rng, names):
    labels = np.array(names)[rng.integers(0, len(names), size=200)]
    means = rng.normal(size=(200, 3)) * 1000
    assert_unclipped(open_png(charts.latent_pca(means, labels, tmp_path / "pca.png")))


@pytest.mark.parametrize("n_classes", [30, 300])
def test_latent_pca_many_classes_uses_a_colorbar(tmp_path, rng, n_classes):
    labels = rng.integers(0, n_classes, size=600) * 1000  # 6-digit class ids on the colorbar
    assert_unclipped(open_png(charts.latent_pca(rng.normal(size=(600, 4)), labels, tmp_path / "pca.png")))


@pytest.mark.parametrize("shape", [(8,), (50, 8)])
def test_kl_per_dim(tmp_path, rng, shape):
    kl = np.abs(rng.normal(size=shape))
    image = open_png(charts.kl_per_dim(kl, tmp_path / "kl.png", threshold=0.1))
    assert image.size[0] > image.size[1]
    assert_unclipped(image)
    for dims, scale in [(1, 1.0), (64, 1.0), (200, 1e4)]:
        assert_unclipped(open_png(charts.kl_per_dim(np.abs(rng.normal(size=dims)) * scale, tmp_path / "kl.png")))


def pixels(path) -> np.ndarray:
    return np.asarray(open_png(path))


@pytest.mark.parametrize("chart", ["latent_pca", "kl_per_dim"])
def test_blitted_chart_is_the_chart_drawn_afresh(tmp_path, chart):
    """A trial's chart reuses the static part drawn for an earlier one: nothing of the earlier
    chart's data may show, and the result is the same picture as one drawn from scratch."""
    rng = np.random.default_rng(1)
    if chart == "latent_pca":  # the second with the same axis limits (the static part's key), other data
        means, labels = rng.normal(size=(300, 6)), rng.integers(0, 10, size=300)
        first, second, kwargs = (means, labels), (means * [1, -1, 1, 1, 1, 1], labels[::-1]), {}
    else:
        kl = rng.uniform(0, 4, 12)
        first, second, kwargs = (kl,), (kl[::-1],), {"threshold": 0.5}
    draw = getattr(charts, chart)
    charts._STATIC.clear()
    before = pixels(draw(*first, tmp_path / "first.png", **kwargs))
    after = pixels(draw(*second, tmp_path / "reused.png", **kwargs))
    assert len(charts._STATIC) == 1, "both charts share one static part"
    charts._STATIC.clear()
    fresh = pixels(draw(*second, tmp_path / "fresh.png", **kwargs))
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, fresh)


def test_trials_of_one_study_share_one_static_part_whatever_their_scale(tmp_path):
    """Posterior means and KLs differ by orders of magnitude across a β sweep; the charts' frames
    do not, so only a study's first chart of each kind is drawn in full."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, size=300)
    charts._STATIC.clear()
    for scale in (1e-3, 1.0, 30.0):
        charts.latent_pca(rng.normal(size=(300, 8)) * scale, labels, tmp_path / "pca.png")
        charts.kl_per_dim(rng.uniform(0, 1, 8) * scale, tmp_path / "kl.png")
    assert len(charts._STATIC) == 2


def test_static_parts_kept_are_bounded(tmp_path):
    charts._STATIC.clear()
    for dims in range(1, charts._STATIC_KEPT + 5):
        charts.kl_per_dim(np.ones(dims), tmp_path / "kl.png")
    assert len(charts._STATIC) == charts._STATIC_KEPT


def test_rate_distortion_drops_nan_rows(tmp_path, rng):
    beta = np.logspace(-1, 1, 12)
    rate = 30 / beta + rng.normal(size=12)
    distortion = 60 + 10 * np.log(beta) + rng.normal(size=12)
    rate[3] = np.nan
    distortion[5] = np.inf
    beta[7] = np.nan
    image = open_png(figures.rate_distortion(rate, distortion, beta, "\u03b2", tmp_path / "rd.png"))
    assert 0.8 < image.size[0] / image.size[1] < 2.0


@pytest.mark.parametrize("n", [0, 1])
def test_rate_distortion_with_no_or_one_point(tmp_path, n):
    path = figures.rate_distortion(np.full(n, 5.0), np.full(n, 80.0), np.ones(n), "beta", tmp_path / "rd.png")
    open_png(path)


def test_rate_distortion_linear_colour_for_non_positive_values(tmp_path):
    values = np.array([-1.0, 0.0, 1.0, 2.0])
    open_png(figures.rate_distortion(values + 5, 90 - values, values, "shift", tmp_path / "rd.png"))


def test_elbo_labels_use_the_elbo_sign():
    assert figures._elbo_label(140.0) == "ELBO = \u2212140"


def test_metrics_vs_param_numeric_unsorted_with_nan_ci(tmp_path, rng):
    x = np.array([4.0, 0.5, 1.0, 2.0])
    names = ["test_elbo", "test_recon", "test_kl", "test_nmi", "test_probe_acc", "train_samples_per_s"]
    means = {name: rng.normal(size=4) for name in names}
    ci = {name: np.abs(rng.normal(size=4)) for name in names}
    ci["test_kl"][:] = np.nan
    del ci["test_nmi"]
    image = open_png(figures.metrics_vs_param(x, means, ci, "\u03b2", tmp_path / "m.png", log_x=True))
    assert image.size[0] > image.size[1]  # 3 columns x 2 rows


def test_metrics_vs_param_categorical_x(tmp_path, rng):
    x = np.array(["ae", "vae", "beta_vae"], dtype=object)
    means = {"test_elbo": np.array([np.nan, -90.0, -95.0]), "test_probe_acc": rng.random(3)}
    ci = {"test_elbo": np.array([np.nan, 1.0, 2.0]), "test_probe_acc": np.full(3, 0.02)}
    open_png(figures.metrics_vs_param(x, means, ci, "objective", tmp_path / "m.png"))


def test_budget_curve(tmp_path):
    n = np.arange(1, 11)
    open_png(figures.budget_curve(n, -100 - 5 / n, 2 / n, "val_elbo", tmp_path / "budget.png"))


def test_units_of_metric_names():
    assert figures._unit("test_elbo") == "nats"
    assert figures._unit("train_samples_per_s") == "samples / s"
    assert figures._unit("test_nmi") == ""


# Optuna ----------------------------------------------------------------------------------

def study_with(n_trials: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: -t.suggest_float("beta", 0.1, 10, log=True) + (t.suggest_categorical("arch", ["mlp", "conv"]) == "conv"),
        n_trials=n_trials,
    )
    return study


def test_optuna_figures_writes_png_and_html(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        written = figures.optuna_figures(study_with(6), tmp_path / "figs")
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["optimization_history.png", "optimization_history.html", "param_importances.png", "param_importances.html"]
    )
    for path in written:
        if path.suffix == ".png":
            open_png(path)
        else:
            assert "plotly" in path.read_text()


def test_optuna_figures_with_one_trial_skips_importances(tmp_path):
    written = figures.optuna_figures(study_with(1), tmp_path)
    names = {p.name for p in written}
    assert {"optimization_history.png", "optimization_history.html"} <= names
    assert "param_importances.png" not in names
    open_png(tmp_path / "optimization_history.png")


def test_optuna_figures_over_seeds_alone_skip_importances(tmp_path):
    """A grid of one configuration over seeds (the IWAE-protocol studies): the seed would get
    all the importance, which says nothing. With a second parameter the seed is kept."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds_only = optuna.create_study(sampler=optuna.samplers.GridSampler({"seed": [0, 1, 2]}))
    seeds_only.optimize(lambda t: float(t.suggest_categorical("seed", [0, 1, 2])), n_trials=3)
    assert "param_importances.png" not in {p.name for p in figures.optuna_figures(seeds_only, tmp_path / "a")}
    swept = optuna.create_study(sampler=optuna.samplers.GridSampler({"seed": [0, 1], "beta": [1.0, 4.0]}))
    swept.optimize(lambda t: t.suggest_categorical("beta", [1.0, 4.0]) + 0.1 * t.suggest_categorical("seed", [0, 1]),
                   n_trials=4)
    assert "param_importances.png" in {p.name for p in figures.optuna_figures(swept, tmp_path / "b")}


def test_optuna_figures_leave_matplotlib_style_alone(tmp_path):
    import matplotlib

    before = dict(matplotlib.rcParams)
    figures.optuna_figures(study_with(3), tmp_path)
    assert dict(matplotlib.rcParams) == before
