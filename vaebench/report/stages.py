"""The learning curve at a schedule's stage ends: where a shortened schedule was heading.

A study with `eval.stage_points` logs `test_iwae_ll_subset` (k = eval.iwae_k on the first
stage_points test examples) at the end of every learning-rate stage (step = epoch). The
report tabulates it per configuration: mean ± 95% CI over seeds at each stage end.
"""
from __future__ import annotations

import pandas as pd

from vaebench.report.stats import ci95, fmt_ci

METRIC = "test_iwae_ll_subset"


def curve(points: pd.DataFrame) -> pd.DataFrame:
    """`points` (config, seed, epoch, METRIC: one row per trial and stage end) to one row per
    configuration and stage end: mean, SD, 95% CI half-width (Student t) and n over seeds."""
    grouped = points.groupby(["config", "epoch"], sort=True)[METRIC]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["ci95"] = ci95(out["std"], out["n"])
    return out


def markdown(table: pd.DataFrame, k: int | str, examples: int | str) -> list[str]:
    """The report's section: one row per configuration, one column per stage end."""
    epochs = sorted(table["epoch"].unique())
    lines = [
        "## Schedule stages",
        "",
        f"`{METRIC}` (log-likelihood, k = {k} importance samples, first {examples} test examples) at "
        "the end of each learning-rate stage, by epoch; mean ± 95% CI over seeds. Per seed: "
        "[stages.csv](stages.csv).",
        "",
        "| config | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for config, rows in table.groupby("config", sort=False):
        by_epoch = {r.epoch: fmt_ci(r.mean, r.ci95) for r in rows.itertuples()}
        lines.append(f"| {config} | " + " | ".join(by_epoch.get(e, "") for e in epochs) + " |")
    return lines + [""]

