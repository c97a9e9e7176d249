"""The report's generation section, from what the trials tracked: per configuration the
feature distance, precision/recall, density/coverage and class scores of each sampler (mean
± 95% CI over seeds; paired tests in leaderboard.csv like every test metric), beside the
reference rows each trial recorded (real data: the floor; the mean image: near the ceiling),
one chart (feature distance against the swept value and the precision-recall plane) and the
sample grids of one trial per configuration.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient

from vaebench.metrics.sampling import GMM_COMPONENTS, METRICS, PER_SAMPLER
from vaebench.report.stats import fmt_ci
from vaebench.tracking import (
    GENERATION_REFERENCE,
    GENERATION_SAMPLES,
    GENERATION_SEED,
    GENERATION_SHA256,
)
from vaebench.tracking.artifacts import GENERATION_PICTURE
from vaebench.tracking.charts import save_figure

SAMPLER_NAMES = {"prior": "prior N(0, I)", "gmm": f"GMM on training codes ({GMM_COMPONENTS} components)"}
REFERENCE_NAMES = {"real_data": "real data: training images (floor)",
                   "mean_image": "mean image, pixel-wise Bernoulli (near ceiling)"}
COLUMNS = PER_SAMPLER  # FD first
HEADS = ("FD", "precision", "recall", "density", "coverage", "classes", "class KL")


def measured(board: pd.DataFrame) -> list[str]:
    """The generation metrics some configuration has a value for."""
    return [m for m in METRICS if board.get(f"{m}_mean", pd.Series(dtype=float)).notna().any()]


def _tag(trials: pd.DataFrame, name: str) -> str | None:
    values = trials.get(f"tag.{name}", pd.Series(dtype=object)).dropna()
    return str(values.mode().iloc[0]) if len(values) else None


def references(trials: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The reference rows the trials recorded (the most common, should datasets differ)."""
    text = _tag(trials, GENERATION_REFERENCE)
    return json.loads(text) if text else {}


def _row(label: str, sampler: str, cells: list[str]) -> str:
    return "| " + " | ".join([label, sampler, *cells]) + " |"


def table(board: pd.DataFrame, refs: dict[str, dict[str, float]]) -> list[str]:
    """Configurations (best objective first) by sampler, then the reference rows."""
    lines = [_row("config", "images", list(HEADS)), "|" + "---|" * (2 + len(HEADS))]
    for _, row in board.iterrows():
        for sampler, name in SAMPLER_NAMES.items():
            cells = [fmt_ci(row.get(f"test_{m}_{sampler}_mean", np.nan), row.get(f"test_{m}_{sampler}_ci95", np.nan))
                     for m in COLUMNS]
            lines.append(_row(row["config"], name, cells))
        recon = fmt_ci(row.get("test_fd_recon_mean", np.nan), row.get("test_fd_recon_ci95", np.nan))
        lines.append(_row(row["config"], "test-set reconstructions", [recon] + [""] * (len(HEADS) - 1)))
    for key, name in REFERENCE_NAMES.items():
        if key in refs:
            lines.append(_row("reference", name, [fmt_ci(refs[key].get(m, np.nan), np.nan) for m in COLUMNS]))
    return lines


def chart(board: pd.DataFrame, param: str | None, refs: dict[str, dict[str, float]], path: Path) -> Path:
    """Left: feature distance of each sampler against the swept value (mean ± CI, log y), the
    references as horizontal lines. Right: the precision-recall plane, one point per
    configuration and sampler, and the references."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = pd.to_numeric(board[f"param.{param}"], errors="coerce") if param and f"param.{param}" in board else None
    numeric = x is not None and x.notna().all()
    pos = x.to_numpy(float) if numeric else np.arange(len(board), dtype=float)
    order = np.argsort(pos, kind="stable")
    for sampler, colour in (("prior", "tab:blue"), ("gmm", "tab:orange"), ("recon", "tab:green")):
        key = f"test_fd_{sampler}"
        if f"{key}_mean" in board:
            mean, ci = board[f"{key}_mean"].to_numpy(float), board[f"{key}_ci95"].to_numpy(float)
            left.errorbar(pos[order], mean[order], yerr=np.nan_to_num(ci[order]), marker="o", capsize=3,
                          color=colour, label=SAMPLER_NAMES.get(sampler, "reconstructions"))
        if sampler != "recon":
            right.scatter(board.get(f"test_recall_{sampler}_mean"), board.get(f"test_precision_{sampler}_mean"),
                          color=colour, label=SAMPLER_NAMES[sampler])
    for (key, name), style in zip(REFERENCE_NAMES.items(), ("k--", "k:")):
        if key in refs:
            left.axhline(refs[key]["fd"], color="k", linestyle=style[1:], linewidth=1, label=name)
            right.plot([refs[key]["recall"]], [refs[key]["precision"]], style[0] + ("s" if key == "real_data" else "x"),
                       label=name)
    left.set_yscale("log")
    left.set_xlabel(param.rsplit(".", 1)[-1] if numeric else "configuration")
    if numeric and pos.min() > 0 and pos.max() / pos.min() >= 10:
        left.set_xscale("log")
    elif not numeric:
        left.set_xticks(pos, list(board["config"]), rotation=30)
    left.set_ylabel("Fréchet distance (LeNet features)")
    left.set_title("Feature distance to the test set (lower is better)", fontsize=10)
    right.set(xlabel="recall", ylabel="precision", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    right.set_title("Precision-recall plane (k = 3)", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    return save_figure(fig, path)


def sample_grids(board: pd.DataFrame, trials: pd.DataFrame, tracking_uri: str, path: Path) -> Path | None:
    """One row per configuration: the generation picture of its lowest-seed trial (prior left,
    GMM right). None when no trial logged one."""
    client, rows = MlflowClient(tracking_uri), []
    folder = path.parent / ".generation"
    folder.mkdir(parents=True, exist_ok=True)
    for _, row in board.iterrows():
        mine = trials[trials["trial"].isin([int(t) for t in str(row["trials"]).split()])]
        mine = mine.assign(_seed=pd.to_numeric(mine.get("param.seed", mine["trial"]), errors="coerce"))
        first = mine.sort_values(["_seed", "trial"]).iloc[0]
        if GENERATION_PICTURE not in {a.path for a in client.list_artifacts(first["run_id"])}:
            continue
        local = Path(client.download_artifacts(first["run_id"], GENERATION_PICTURE, str(folder / str(first["trial"]))))
        rows.append((f"{row['config']} (trial {first['trial']}, seed {first['_seed']:g}): prior | GMM", local))
    if not rows:
        os.rmdir(folder)
        return None
    import matplotlib.image

    images = [matplotlib.image.imread(p) for _, p in rows]
    height, width = images[0].shape[:2]
    fig = Figure(figsize=(width / 100, len(rows) * (height / 100 + 0.3)), layout="constrained")
    for ax, (title, _), image in zip(fig.subplots(len(rows), 1, squeeze=False).ravel(), rows, images):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    save_figure(fig, path)
    for _, p in rows:
        os.remove(p)
    for sub in sorted(folder.rglob("*"), reverse=True):
        sub.rmdir()
    folder.rmdir()
    return path


def lines(board: pd.DataFrame, trials: pd.DataFrame, swept: list[str], tracking_uri: str, folder: Path) -> list[str]:
    """The `## Generation` section of report.md (empty when no trial measured generation)."""
    if not measured(board):
        return []
    refs = references(trials)
    n, seed, sha = (_tag(trials, t) for t in (GENERATION_SAMPLES, GENERATION_SEED, GENERATION_SHA256))
    out = ["## Generation", "",
           f"{n} images per sampler (as many as the test split holds), sample seed {seed}, scored against the "
           f"whole test split by the pinned LeNet feature network (sha256 `{sha}`): Fréchet distance (FD) of its "
           "128-d features, improved precision/recall and density/coverage (k = 3), classes covered and the KL of "
           "the predicted-class histogram to the test set's. Numbers compare with other vaebench numbers at the "
           "same sample count only, never with Inception FIDs. Mean ± 95% CI over seeds; paired tests against "
           "the best configuration in [leaderboard.csv](leaderboard.csv).", "", *table(board, refs), ""]
    if "real_data" in refs and "test_fd_prior_mean" in board:
        fds = board[[f"test_fd_{s}_mean" for s in ("prior", "gmm") if f"test_fd_{s}_mean" in board]].to_numpy(float)
        below = bool(np.all(refs["real_data"]["fd"] < fds[np.isfinite(fds)]))
        out += [f"The real-data floor (FD {refs['real_data']['fd']:.2f}) is "
                f"{'below every' if below else 'not below every'} configuration's sampled FD.", ""]
    figures = folder / "figures"
    picture = chart(board, swept[0] if swept else None, refs, figures / "generation.png")
    out += [f"![Generation scores]({picture.relative_to(folder).as_posix()})", ""]
    grids = sample_grids(board, trials, tracking_uri, figures / "generation_samples.png")
    if grids is not None:
        out += ["Samples of one trial per configuration (pixel means; prior left, fitted mixture right):", "",
                f"![Samples per configuration]({grids.relative_to(folder).as_posix()})", ""]
    return out
