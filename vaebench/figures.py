"""Pictures of trained models and of studies: one file per call, its Path returned.

Image grids of one model use torchvision's `save_image`; charts over arrays (latent codes,
KL per dimension, a sweep's metrics) draw on a bare `matplotlib.figure.Figure`, with no
pyplot state and no backend switch, so they are safe in threads and leave a notebook's
settings alone. The two charts drawn in every trial (`latent_pca`, `kl_per_dim`) are
blitted on a static part kept per process (`_blitted`), under a lock. Only `optuna_figures`
goes through pyplot, because Optuna's matplotlib plots do; its style changes are kept inside
an `rc_context`. Likelihood numbers are nats per example, as everywhere in vaebench.
"""
from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import optuna
import torch
import torch.nn.functional as F
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator
from PIL import Image
from sklearn.decomposition import PCA
from torchvision.utils import save_image

from vaebench.metrics import inference, model_device
from vaebench.models import VAEModel

MIN_SIDE = 28  # small images (8x8 digits) are upscaled so a grid is readable
PAD = 2  # pixels between the tiles of an image grid
DPI = 130
PCA_FRAME_SD = 4.0  # latent_pca's frame: ±4 SDs of PC 1
KL_FLOOR, KL_TOP = 1e-4, 1e2  # kl_per_dim's log axis, nats
TRIAL_DPI = 100  # the charts drawn in every trial: matplotlib's default, 40% fewer pixels to draw and encode
NATS = "nats"


def _readable(images: torch.Tensor) -> torch.Tensor:
    side = images.shape[-1]
    if side >= MIN_SIDE:
        return images
    return F.interpolate(images, scale_factor=-(-MIN_SIDE // side), mode="nearest")


def _save_grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    """Tiles `images` (B, C, H, W) in [0, 1], `nrow` per row, on a grey background."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(_readable(images.cpu()), path, nrow=nrow, padding=PAD, pad_value=0.5)
    return path


def _save(fig: Figure, path: Path) -> Path:
    """Writes a pyplot-free figure; nothing to close, it is garbage once this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _fixed_figure(width: float, height: float, left: float, right: float, bottom: float, top: float) -> Figure:
    """A one-axes figure with margins fixed in inches, for the charts drawn in every trial.

    Matplotlib's constrained layout and tight bounding box measure every text before drawing
    (about half a latent PCA chart's cost) and move the axes with each call's texts, which
    blitting cannot have; margins fixed from the labels' lengths (`_text_inches`) do neither.
    """
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return fig


def _text_inches(text: str, size: float = 10.0) -> float:
    """A generous width of `text` in inches at `size` points (DejaVu Sans is ~0.6 em a glyph)."""
    return 0.65 * size / 72 * len(text)


def _heading(fig: Figure) -> Artist:
    """A blitted chart's title, set per call: centred on the figure, in its top margin."""
    return fig.suptitle("", y=1 - 0.08 / fig.get_figheight(), va="top", animated=True)


class _Static(NamedTuple):
    canvas: FigureCanvasAgg
    background: object  # the pixels of everything but `dynamic`
    dynamic: tuple[Artist, ...]  # created with animated=True: left out of `background`


_STATIC: OrderedDict[tuple, _Static] = OrderedDict()
_STATIC_KEPT = 8  # static parts kept, ~5 MB each (canvas and background)
_STATIC_LOCK = threading.Lock()


def _blitted(key: tuple, build: Callable[[], tuple[Figure, tuple[Artist, ...]]],
             update: Callable[..., None], path: Path) -> Path:
    """Writes a chart drawn in every trial by blitting (matplotlib's way of redrawing fast).

    Its static part (axes, ticks, labels, legend) depends on `key` only; `build` makes that
    figure, with the per-call artists created `animated=True`, which a canvas draw leaves out.
    The static part is drawn once per key and kept as pixels; each call restores them, sets
    the per-call artists (`update`) and draws just those, at about a third of a full draw.
    The charts keep their axes fixed across trials, so a study's charts share one key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _STATIC_LOCK:
        static = _STATIC.pop(key, None)
        if static is None:
            fig, dynamic = build()
            canvas = FigureCanvasAgg(fig)
            fig.set_dpi(TRIAL_DPI)
            canvas.draw()
            static = _Static(canvas, canvas.copy_from_bbox(fig.bbox), dynamic)
        _STATIC[key] = static  # most recently used last
        while len(_STATIC) > _STATIC_KEPT:
            _STATIC.popitem(last=False)
        update(*static.dynamic)
        static.canvas.restore_region(static.background)
        for artist in static.dynamic:
            static.canvas.figure.draw_artist(artist)
        Image.fromarray(np.asarray(static.canvas.buffer_rgba())).save(path, compress_level=1)
    return path


# --- one model: image grids ---------------------------------------------------------------


@torch.no_grad()
def reconstructions(model: VAEModel, x: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Originals in the first row, their reconstructions (posterior mean) below."""
    model.eval()
    x = x[:n].to(next(model.parameters()).device)
    return _save_grid(torch.cat([x, model.reconstruct(x)]), path, nrow=x.shape[0])


@torch.no_grad()
def samples(model: VAEModel, path: Path, n: int = 64, seed: int = 0) -> Path:
    """Decoded draws from the prior N(0, I), as the decoder's mean image."""
    model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return _save_grid(model.sample(n, generator=gen), path, nrow=8)


def traversals(model: VAEModel, x0: torch.Tensor, path: Path, span: float = 3.0, steps: int = 11) -> Path:
    """What each latent dimension controls: row d decodes x0's posterior mean with z_d swept.

    Row d (top row = dimension 0) holds the mean images for z_d = linspace(-span, span,
    steps), every other coordinate fixed at mu(x0). The sweep is in absolute units, so
    ±3 covers the N(0, I) prior; a collapsed dimension gives a row of identical images.
    For a deterministic `ae` the code is not prior-scaled and the span is arbitrary.
    """
    x0 = x0 if x0.dim() == len(model.input_shape) + 1 else x0.unsqueeze(0)
    dims = model.latent_dim
    with inference(model):
        mu, _ = model.encode(x0[:1].to(model_device(model)))
        z = mu.repeat(dims * steps, 1)
        sweep = torch.linspace(-span, span, steps, device=z.device, dtype=z.dtype)
        for d in range(dims):
            z[d * steps : (d + 1) * steps, d] = sweep
        images = model.likelihood.mean(model.decode(z))
    return _save_grid(images, path, nrow=steps)


# --- charts over arrays -----------------------------------------------------------------


def _discrete_cmap(n: int) -> ListedColormap:
    """n clearly distinct colours: tab10 / tab20 where they suffice, else turbo sampled evenly."""
    if n <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:n]
    elif n <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:n]
    else:
        colours = matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n))
    return ListedColormap(colours)


def latent_pca(means: np.ndarray, labels: np.ndarray, path: Path, seed: int = 0) -> Path:
    """Do classes separate in the latent space? Posterior means projected on 2 principal axes.

    Points are coloured by label (legend of class ids up to 20 classes, a discrete colorbar
    beyond) and drawn in a shuffled order so no class hides under another. Both axes are in
    one unit, the SD along PC 1 (given in the title), in a fixed frame of ±PCA_FRAME_SD: the
    shape reads the same both ways, trials compare side by side, and every trial's chart is
    blitted on the same static part. A 1-D latent is drawn against a zero axis, jittered
    vertically so overlapping points stay visible; rows with a non-finite coordinate are dropped.
    """
    means = np.asarray(means, dtype=float)
    means = means.reshape(len(means), -1)
    labels = np.asarray(labels)
    keep = np.isfinite(means).all(axis=1)
    means, labels = means[keep], labels[keep]
    rng = np.random.default_rng(seed)
    projected = means.shape[1] >= 2 and len(means) >= 2
    method = "PCA" if projected else "no projection"
    title = f"Posterior means, {method} ({len(means)} examples, {means.shape[1]}-D latent)\n"
    if projected:
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(means)
        title += "PC 1 and PC 2 hold {:.1f}% and {:.1f}% of the variance; ".format(*100 * pca.explained_variance_ratio_)
    else:
        jitter = rng.uniform(-0.4, 0.4, len(means))
        xy = np.column_stack([means[:, 0] - means[:, 0].mean() if means.shape[1] else np.zeros(len(means)), jitter])
    sd = float(np.std(xy[:, 0])) if len(xy) else 0.0
    if sd > 0:  # both axes in one unit, the first axis's SD: one frame for every trial, shapes kept
        xy[:, : 2 if projected else 1] /= sd
    outside = int(np.sum(np.abs(xy[:, : 2 if projected else 1]) > PCA_FRAME_SD))
    title += f"1 unit = {sd:.3g}" + (f"; {outside} beyond the frame" if outside else "")
    classes, index = np.unique(labels, return_inverse=True)
    order = rng.permutation(len(xy))

    def build() -> tuple[Figure, tuple[Artist, ...]]:
        cmap = _discrete_cmap(max(len(classes), 1))
        norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, cmap.N)
        if len(classes) <= 20:  # a legend of class ids right of the axes, else a colorbar
            right = 0.55 + _text_inches(max(["label", *map(str, classes)], key=len))
        else:
            right = 0.15
        fig = _fixed_figure(6.4, 5.4, left=0.8, right=right, bottom=0.6, top=0.6)
        ax = fig.add_subplot()
        points = ax.scatter([], [], c=[], cmap=cmap, norm=norm, s=10, alpha=0.75, linewidths=0, animated=True)
        if len(classes) <= 20:
            handles = [
                Line2D([], [], marker="o", linestyle="", color=cmap(i), label=str(c)) for i, c in enumerate(classes)
            ]
            ax.legend(handles=handles, title="label", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        else:
            ticks = np.arange(0, len(classes), -(-len(classes) // 30))  # at most 30 tick labels
            bar = fig.colorbar(points, ax=ax, ticks=ticks, fraction=0.1 + 0.02 * max(len(str(c)) for c in classes))
            bar.ax.set_yticklabels([str(classes[i]) for i in ticks])
            bar.set_label("label")
        ax.set_xlim(-PCA_FRAME_SD, PCA_FRAME_SD)
        if projected:
            ax.set_ylim(-PCA_FRAME_SD, PCA_FRAME_SD)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel("PC 1 [SD of PC 1]")
            ax.set_ylabel("PC 2 [SD of PC 1]")
        else:
            ax.set_ylim(-1, 1)
            ax.set_yticks([])
            ax.set_xlabel("z \u2212 mean [SD of z] (posterior mean)")
            ax.set_ylabel("zero axis (jitter only)")
        return fig, (points, _heading(fig))

    def update(points: Artist, heading: Artist) -> None:
        points.set_offsets(xy[order])
        points.set_array(index[order])
        heading.set_text(title)

    key = ("latent_pca", projected, tuple(map(str, classes)))
    return _blitted(key, build, update, path)


def kl_per_dim(kl: np.ndarray, path: Path, threshold: float | None = None) -> Path:
    """Which latent dimensions are used: mean KL(q(z_d|x) || p(z_d)) per dimension.

    Bars are in index order (dimension 0 first, as the rows of `traversals`), on a log axis
    from KL_FLOOR nats (a bar below it is not drawn) to KL_TOP or the next decade above the
    largest value. `kl` is either the per-dimension means (D,) or per-example values (N, D),
    averaged here. With `threshold` a dashed line marks the active-unit cut and the title
    counts the dims above it.
    """
    kl = np.asarray(kl, dtype=float)
    if kl.ndim == 2:
        kl = np.nanmean(kl, axis=0)
    dims = np.arange(len(kl))
    lines = [f"KL per latent dimension, total {np.nansum(kl):.2f} {NATS}"]
    if threshold is not None:
        lines.append(f"{int(np.sum(kl > threshold))} of {len(kl)} dimensions above {threshold:g} {NATS} (dashed line)")
    # a log axis of whole decades from KL_FLOOR: collapsed dimensions (~1e-4 nats) and used ones
    # (~1-10) both show, and one study's charts share their static part
    top = max(KL_TOP, 10.0 ** math.ceil(math.log10(max(float(np.nanmax(kl, initial=0.0)), KL_TOP))))

    def build() -> tuple[Figure, tuple[Artist, ...]]:
        fig = _fixed_figure(max(6.0, min(12.0, 0.35 * len(kl) + 2.0)), 3.6, left=0.8, right=0.15, bottom=0.55, top=0.55)
        ax = fig.add_subplot()
        bars = ax.bar(dims, np.zeros(len(kl)), bottom=KL_FLOOR, color="tab:blue", width=0.8, animated=True)
        # drawn after the bars (over them), so the cut is a per-call artist too
        cut = [] if threshold is None else [ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1,
                                                       animated=True)]
        ax.set_xlabel("latent dimension (index order)")
        ax.set_ylabel(f"mean KL [{NATS}]")
        ax.set_xlim(-0.6, len(kl) - 0.4)
        ax.set_yscale("log")
        ax.set_ylim(KL_FLOOR, top)
        ax.yaxis.set_minor_locator(NullLocator())  # decades only: a full draw of minor ticks costs more than a blit
        if len(kl) <= 32:
            ax.set_xticks(dims)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return fig, (*bars, *cut, _heading(fig))

    def update(*artists: Artist) -> None:
        for bar, value in zip(artists, np.nan_to_num(kl)):
            bar.set_height(max(value - KL_FLOOR, 0.0))  # from the floor up to the value
        artists[-1].set_text("\n".join(lines))

    key = ("kl_per_dim", len(kl), threshold, top)  # top: one study's trials share KL_TOP but for outliers
    return _blitted(key, build, update, path)


def _colour_norm(values: np.ndarray, log: bool) -> Normalize:
    """LogNorm for a positive range when asked (β spans decades), else a linear norm."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if log and lo > 0 and hi > lo:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1.0)


def _padded(values: np.ndarray, fallback: float, fraction: float = 0.08) -> tuple[float, float]:
    """Axis limits around `values` with a margin, `fallback` when they are all equal."""
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = (hi - lo) * fraction or fallback
    return lo - pad, hi + pad


def _elbo_label(level: float) -> str:
    return f"ELBO = {-level:g}".replace("-", "\N{MINUS SIGN}")


def rate_distortion(
    rate: np.ndarray,
    distortion: np.ndarray,
    colour: np.ndarray,
    colour_label: str,
    path: Path,
    log_colour: bool = True,
    colour_names: list[str] | None = None,
) -> Path:
    """The rate-distortion plane of a sweep (e.g. over β): one point per trial.

    x = rate = KL (nats), y = distortion = -log p(x|z) (nats); colour is the swept value,
    log-scaled when positive and `log_colour`; with `colour_names`, `colour` holds category
    codes 0..n-1 (e.g. objectives) named in a legend. Dashed lines are iso-ELBO lines, rate +
    distortion = -ELBO = const, at round levels: points on the same line have the same ELBO
    and trade rate for distortion. Rows with a non-finite value are dropped.
    """
    rate, distortion, colour = (np.asarray(a, dtype=float).ravel() for a in (rate, distortion, colour))
    keep = np.isfinite(rate) & np.isfinite(distortion) & np.isfinite(colour)
    rate, distortion, colour = rate[keep], distortion[keep], colour[keep]

    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel(f"rate: KL(q(z|x) \u2016 p(z)) [{NATS}]")
    ax.set_ylabel(f"distortion: \u2212log p(x|z) [{NATS}]")
    ax.set_title(f"Rate\u2013distortion ({len(rate)} trial{'' if len(rate) == 1 else 's'})")
    if len(rate) == 0:
        ax.text(0.5, 0.5, "no trial with finite rate and distortion", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)

    # Equal fallback margins keep iso-ELBO lines at a readable slope when a range is empty.
    fallback = max(0.1 * float(np.max(np.abs(np.concatenate([rate, distortion])))), 1.0)
    (x0, x1), (y0, y1) = _padded(rate, fallback), _padded(distortion, fallback)
    grid_x, grid_y = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    levels = [v for v in MaxNLocator(nbins=5).tick_values(x0 + y0, x1 + y1) if x0 + y0 < v < x1 + y1]
    if levels:
        lines = ax.contour(
            grid_x, grid_y, grid_x + grid_y, levels=levels, colors="0.55", linestyles="dashed", linewidths=0.9
        )
        ax.clabel(lines, fmt=_elbo_label, fontsize=8, inline=True)
    if colour_names is not None:  # categories: one colour each, named in a legend below
        palette = _discrete_cmap(len(colour_names)).colors
        for code, name in enumerate(colour_names):
            mine = colour == code
            ax.scatter(rate[mine], distortion[mine], color=palette[code], label=name, s=42,
                       edgecolors="black", linewidths=0.5, zorder=3)
        ax.legend(title=colour_label, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    else:
        points = ax.scatter(rate, distortion, c=colour, cmap="viridis", norm=_colour_norm(colour, log_colour),
                            s=42, edgecolors="black", linewidths=0.5, zorder=3)
        bar = fig.colorbar(points, ax=ax)
        bar.set_label(colour_label)
        if len(values := np.unique(colour)) <= 12:  # a grid: tick the swept values, 0.25 not 2.5x10^-1
            bar.set_ticks(values, labels=[f"{v:g}" for v in values])
            bar.minorticks_off()
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return _save(fig, path)


def _unit(metric: str) -> str:
    """The unit of a vaebench metric name, for a y label ('' when unitless)."""
    if metric.endswith("_per_s"):
        return "samples / s"
    if metric.split("_")[-1] in {"elbo", "recon", "kl", "nll", "iwae", "loss", "ll", "rate", "distortion"}:
        return NATS
    return ""


def _positions(x: np.ndarray) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """(positions, tick labels or None, order): numeric x sorted, anything else categorical in given order."""
    try:
        values = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return np.arange(len(x), dtype=float), [str(v) for v in x], np.arange(len(x))
    order = np.argsort(values, kind="stable")
    return values[order], None, order


def metrics_vs_param(
    x: np.ndarray,
    means: Mapping[str, np.ndarray],
    ci: Mapping[str, np.ndarray],
    param_label: str,
    path: Path,
    log_x: bool = False,
) -> Path:
    """How each metric moves with a swept parameter: one small panel per metric.

    Each panel shows the mean over seeds with a ±CI error bar (a missing or NaN CI draws the
    point without a bar). Numeric x is sorted; any other x (e.g. objective names) is drawn
    at categorical positions in the given order. `ci` holds half-widths.
    """
    x = np.asarray(x)
    pos, ticks, order = _positions(x)
    names = list(means)
    ncols = min(3, max(len(names), 1))
    nrows = max(math.ceil(len(names) / ncols), 1)
    fig = Figure(figsize=(3.7 * ncols, 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        mean = np.asarray(means[name], dtype=float)[order]
        half = np.asarray(ci.get(name, np.full(len(x), np.nan)), dtype=float)[order]
        ax.plot(pos, mean, marker="o", markersize=4, color="tab:blue", linestyle="-" if ticks is None else "none")
        bars = np.isfinite(half) & np.isfinite(mean)
        if bars.any():
            ax.errorbar(pos[bars], mean[bars], yerr=half[bars], fmt="none", ecolor="tab:blue", capsize=3, linewidth=1)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(_unit(name))
        ax.set_xlabel(param_label)
        if ticks is not None:
            ax.set_xticks(pos, ticks, rotation=30 if max(map(len, ticks), default=0) > 6 else 0)
            ax.set_xlim(-0.5, len(ticks) - 0.5)
        elif log_x and np.all(pos > 0):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"Metrics against {param_label} (mean \u00b1 CI)")
    return _save(fig, path)


def budget_curve(n: np.ndarray, expected: np.ndarray, sd: np.ndarray, metric: str, path: Path) -> Path:
    """Expected best `metric` against the number of trials, with a ±1 SD band."""
    n, expected, sd = (np.asarray(a, dtype=float) for a in (n, expected, sd))
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(n, expected, color="tab:blue", marker="o", markersize=3, label="expected best")
    ax.fill_between(n, expected - sd, expected + sd, color="tab:blue", alpha=0.2, linewidth=0, label="\u00b1 1 SD")
    ax.set_xlabel("trials")
    ax.set_ylabel(f"best {metric}" + (f" ({_unit(metric)})" if _unit(metric) else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Expected best of n trials (Dodge et al. 2019)", fontsize=10)
    return _save(fig, path)


# --- Optuna study ---------------------------------------------------------------------------


def _optuna_target(study: optuna.Study, name: str | None) -> tuple[Callable | None, str]:
    """(target, name) for Optuna's plots: the first objective of a multi-objective study."""
    names = study.metric_names
    name = name or (names[0] if names else "objective value")
    if len(study.directions) > 1:
        return (lambda t: t.values[0]), name
    return None, name


def _importances_computable(study: optuna.Study, target: Callable | None) -> bool:
    """True when importances mean something: >= 2 finite completed trials, a parameter that varied."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if all(math.isfinite(v) for v in t.values)
    ]
    if len(trials) < 2:
        return False
    names = {name for t in trials for name in t.params}
    if not any(len({repr(t.params.get(name)) for t in trials}) > 1 for name in names):
        return False
    try:
        return bool(optuna.importance.get_param_importances(study, target=target))
    except (ValueError, RuntimeError) as err:
        warnings.warn(f"parameter importances not computed: {err}", stacklevel=3)
        return False


def _optuna_pair(stem: str, plot: Callable[[object], object], folder: Path, integer_x: bool = False) -> list[Path]:
    """`stem`.png with Optuna's matplotlib backend and `stem`.html with its plotly one."""
    import matplotlib.pyplot as plt  # Optuna draws with pyplot; keep its style inside rc_context

    png, html = folder / f"{stem}.png", folder / f"{stem}.html"
    with warnings.catch_warnings(), matplotlib.rc_context(), plt.ioff():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax: Axes = plot(optuna.visualization.matplotlib)
        if integer_x:  # trial numbers; widen a one-trial axis so whole numbers fit
            lo, hi = ax.get_xlim()
            if hi - lo < 2:
                ax.set_xlim((lo + hi) / 2 - 1, (lo + hi) / 2 + 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        try:
            ax.figure.savefig(png, dpi=DPI, bbox_inches="tight")
        finally:
            plt.close(ax.figure)
    written = [png]
    try:
        plot(optuna.visualization).write_html(html, include_plotlyjs="cdn")  # kilobytes, not megabytes: reports are committed
        written.append(html)
    except ImportError as err:
        warnings.warn(f"{html.name} not written: {err}", stacklevel=3)
    return written


def optuna_figures(study: optuna.Study, folder: Path, objective_name: str | None = None) -> list[Path]:
    """A study at a glance: optimization history and parameter importances, as PNG and HTML.

    PNGs come from optuna.visualization.matplotlib, HTML (interactive) from
    optuna.visualization; the HTML loads plotly.js from its CDN, so it stays small but needs
    the network to display. Importances are skipped
    unless at least 2 trials completed and some parameter took more than one value. A
    multi-objective study is plotted for its first objective. `objective_name` (e.g.
    "val_elbo") labels the value axis, else the study's metric name. Returns the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target, name = _optuna_target(study, objective_name)
    written = _optuna_pair(
        "optimization_history",
        lambda vis: vis.plot_optimization_history(study, target=target, target_name=name),
        folder,
        integer_x=True,
    )
    if _importances_computable(study, target):
        written += _optuna_pair(
            "param_importances",
            lambda vis: vis.plot_param_importances(study, target=target, target_name=name),
            folder,
        )
    return written

