"""Charts of one trained model over arrays (latent codes, KL per dimension): one file per
call, its Path returned. (Its image grids are in `vaebench.tracking.grids`.)

They draw on a bare `matplotlib.figure.Figure`, with no pyplot state and no backend switch,
so they are safe in threads and leave a notebook's settings alone. The two charts drawn in
every trial (`latent_pca`, `kl_per_dim`) are blitted on a static part kept per process
(`_blitted`), under a lock. Likelihood numbers are nats per example.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator
from PIL import Image
from sklearn.decomposition import PCA

DPI = 130
PCA_FRAME_SD = 4.0  # latent_pca's frame: ±4 SDs of PC 1
KL_FLOOR, KL_TOP = 1e-4, 1e2  # kl_per_dim's log axis, nats
TRIAL_DPI = 100  # the charts drawn in every trial: matplotlib's default, 40% fewer pixels to draw and encode
NATS = "nats"


def save_figure(fig: Figure, path: Path) -> Path:
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
_STATIC_KEPT = 8  # static parts kept, ~5 MB each (canvas and background)
_STATIC_LOCK = threading.Lock()
_STATIC: OrderedDict[tuple, _Static] = OrderedDict()


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


# --- charts over arrays -----------------------------------------------------------------


def discrete_cmap(n: int) -> ListedColormap:
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
        cmap = discrete_cmap(max(len(classes), 1))
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
