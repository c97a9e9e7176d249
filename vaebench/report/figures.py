"""Pictures of a study: the rate-distortion plane, metrics against a swept value, the budget
curve, Optuna's plots. Drawn on bare matplotlib Figures (no pyplot state), except
`optuna_figures`, which goes through pyplot because Optuna's matplotlib plots do; its style
changes are kept inside an `rc_context`. Likelihood numbers are nats per example.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib
import numpy as np
import optuna
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from vaebench.tracking.charts import DPI, NATS, discrete_cmap, save_figure


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
        return save_figure(fig, path)

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
        palette = discrete_cmap(len(colour_names)).colors
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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


# --- Optuna study ---------------------------------------------------------------------------


def _optuna_target(study: optuna.Study, name: str | None) -> tuple[Callable | None, str]:
    """(target, name) for Optuna's plots: the first objective of a multi-objective study."""
    names = study.metric_names
    name = name or (names[0] if names else "objective value")
    if len(study.directions) > 1:
        return (lambda t: t.values[0]), name
    return None, name


def _importances_computable(study: optuna.Study, target: Callable | None) -> bool:
    """True when importances mean something: >= 2 finite completed trials, and a parameter other
    than the seed that varied (over seeds alone, the seed's importance is 1 and says nothing)."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if all(math.isfinite(v) for v in t.values)
    ]
    if len(trials) < 2:
        return False
    names = {name for t in trials for name in t.params} - {"seed"}
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
    the network to display. Importances are skipped unless at least 2 trials completed and some
    parameter other than the seed took more than one value. A multi-objective study is plotted
    for its first objective. `objective_name` (e.g. "val_elbo") labels the value axis, else the
    study's metric name. Returns the paths written.
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
