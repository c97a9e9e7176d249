"""The report's answer to "is it really better?", built from the per-trial table alone.

The leaderboard's first row (best mean objective) is the reference: every configuration's
difference to it, for the objective and each headline test metric, with a 95% CI and a
Holm-adjusted p (vaebench.report.stats), becomes leaderboard columns; report.md gets the verdict
per row, an honest "best configuration" sentence, the seeds that would settle the closest
call, and a budget section (expected best of n trials, or the best per seed of a grid).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vaebench.report import stats

PER_METRIC = ("diff_to_best", "diff_ci95_low", "diff_ci95_high", "p_holm")
TEST_NAME = {"paired": "paired t-test over seeds", "welch": "Welch's t-test (seeds differ)"}


def _keys(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One string per row naming its configuration (the values of its config columns)."""
    if not columns:
        return pd.Series("", index=df.index)
    return df[columns].map(str).agg("\x1f".join, axis=1)  # str(NaN) = "nan" on both sides


def long_values(board: pd.DataFrame, trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(config, seed, value) per trial, `config` being the board's label of the trial's row."""
    columns = [c for c in board.columns if c.startswith("param.")]
    label = dict(zip(_keys(board, columns), board["config"]))
    seeds = trials["param.seed"] if "param.seed" in trials else trials["trial"]
    values = trials[metric] if metric in trials else pd.Series(np.nan, index=trials.index)
    return pd.DataFrame({"config": _keys(trials, columns).map(label),
                         "seed": pd.to_numeric(seeds, errors="coerce").to_numpy(),
                         "value": pd.to_numeric(values, errors="coerce").to_numpy()})


def add_columns(board: pd.DataFrame, trials: pd.DataFrame, objective: str, direction: str,
                metrics: list[str]) -> pd.DataFrame:
    """`board` (best first) with, after its columns, `<m>_diff_to_best`, `<m>_diff_ci95_low`,
    `<m>_diff_ci95_high`, `<m>_p_holm` for the objective and each of `metrics`, and after the
    objective's, `tied_with_best` (True/False, empty when undecidable) and `comparison`
    (best / paired / welch / none). NaN where a metric is missing for the best configuration."""
    board = board.copy()
    best = board["config"].iloc[0] if not board.empty else None
    for m in [objective] + [m for m in metrics if m != objective]:
        values = long_values(board, trials, m)
        has_best = values.loc[values["config"] == best, "value"].notna().any()
        table = stats.compare_to_best(values, direction, best).set_index("config") if has_best else None
        def column(name: str, default: object = np.nan) -> list:
            return [table[name].get(c, default) if table is not None else default for c in board["config"]]
        for suffix, name in zip(PER_METRIC, ("diff", "ci_low", "ci_high", "p_holm")):
            board[f"{m}_{suffix}"] = column(name)
        if m == objective:
            board["tied_with_best"] = pd.array(column("tied_with_best", pd.NA), dtype="boolean")
            board["comparison"] = column("comparison", "none")
    return board


def verdict(row: pd.Series, objective: str) -> str:
    """The leaderboard cell that says whether a row can be told apart from the best."""
    if row["comparison"] == "best":
        return "best"
    if pd.isna(row["tied_with_best"]):
        return "undecided (1 seed)"
    p = row[f"{objective}_p_holm"]
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    return f"tied ({shown})" if row["tied_with_best"] else f"worse ({shown})"


def _fmt(x: float, spread: float) -> str:
    """`x` to two decimals, or finer so that `spread` shows two significant digits."""
    digits = 2 if not spread > 0 else min(max(2, 1 - int(np.floor(np.log10(spread)))), 8)
    return f"{x:.{digits}f}"


def _names(configs: list[str]) -> str:
    return configs[0] if len(configs) == 1 else ", ".join(configs[:-1]) + f" and {configs[-1]}"


def best_lines(board: pd.DataFrame, trials: pd.DataFrame, objective: str, direction: str) -> list[str]:
    """What the best configuration's lead is worth, and how many seeds would settle the closest call."""
    others = board.iloc[1:]
    if others.empty or "tied_with_best" not in board:
        return []
    tied = list(others.loc[others["tied_with_best"].fillna(False).astype(bool), "config"])
    worse = list(others.loc[~others["tied_with_best"].fillna(True).astype(bool), "config"])
    open_ = list(others.loc[others["tied_with_best"].isna(), "config"])
    seeds = board["n_seeds"].iloc[0]
    tests = sorted({TEST_NAME[c] for c in others["comparison"] if c in TEST_NAME})
    how = f"{' / '.join(tests)}, Holm-corrected over {len(others)} comparisons, 5% level"
    parts = []
    if tied:
        parts.append(f"Not distinguishable from {_names(tied)} with {seeds} seed(s) ({how}).")
    elif worse:
        parts.append(f"Better than every other configuration with {seeds} seed(s) ({how}).")
    if tied and worse:
        parts.append(f"Ahead of {_names(worse)}.")
    if open_:
        parts.append(f"Not tested against {_names(open_)} (a single seed on one side).")
    lines = [" ".join(parts)] if parts else []
    need = stats.seeds_needed(long_values(board, trials, objective), direction, board["config"].iloc[0])
    if need is not None:
        spread = "paired differences" if need.paired else "differences (unpaired: sqrt(s1² + s2²))"
        count = (f"about {need.n_needed} seeds per configuration" if need.n_needed
                 else f"more than {stats.MAX_SEEDS} seeds")
        lines += ["", f"Seeds needed: the closest configuration, {need.closest}, is {abs(need.diff):.3g} from the best "
                  f"in {objective}; the seed-to-seed SD of its {spread} is {need.sd:.3g}, so {count} would detect "
                  f"a gap that size with 80% power (power with the {need.n_seeds} seeds now: {need.power_now:.2f}; "
                  f"method: {stats.SeedsNeeded.METHOD}). Gap and SD are themselves estimates from "
                  f"{need.n_seeds} seeds: a rough guide, not a guarantee."]
    return lines


def budget_lines(board: pd.DataFrame, trials: pd.DataFrame, objective: str, direction: str,
                 sampler: str | None, seeded_grid: bool, folder: Path) -> list[str]:
    """The `## Budget` section; writes budget_curve.csv and figures/budget_curve.png (a
    sampled search) or best_per_seed.csv (a grid over seeds) into `folder`. Empty otherwise, and
    for a grid of one configuration (its seeds) there is no best to pick, so nothing to budget."""
    if sampler == "grid" and seeded_grid and len(board) > 1:
        return _best_per_seed(board, trials, objective, direction, folder)
    if sampler and sampler != "grid":
        return _budget_curve(trials, objective, direction, sampler, folder)
    return []


def _best_per_seed(board: pd.DataFrame, trials: pd.DataFrame, objective: str, direction: str,
                   folder: Path) -> list[str]:
    table = stats.best_per_seed(long_values(board, trials, objective), direction)
    if table.empty:
        return []
    table.to_csv(folder / "best_per_seed.csv", index=False)
    v = table["value"]
    spread = v.std(ddof=1) if len(v) > 1 else np.nan
    sd = f" ± {_fmt(spread, spread)} (mean ± SD)" if len(v) > 1 else ""
    wins = int((table["config"] == board["config"].iloc[0]).sum())
    lines = ["## Budget", "",
             f"A grid run with one seed reports the best of its configurations under that seed. Over the "
             f"{len(v)} seed draws here that best {objective} is {_fmt(v.mean(), spread)}{sd}, from "
             f"{_fmt(v.min(), spread)} to {_fmt(v.max(), spread)}; the leaderboard's best configuration "
             f"wins on {wins} of {len(v)} seeds ([best_per_seed.csv](best_per_seed.csv)).", "",
             f"| seed | best configuration | {objective} |", "|---|---|---|"]
    lines += [f"| {s:g} | {c} | {_fmt(x, spread)} |" for s, c, x in table.itertuples(index=False)]
    return lines + [""]


def _budget_curve(trials: pd.DataFrame, objective: str, direction: str, sampler: str, folder: Path) -> list[str]:
    from vaebench.report import figures

    values = pd.to_numeric(trials.get(objective), errors="coerce").dropna().to_numpy()
    if values.size == 0:
        return []
    curve = stats.expected_best(values, direction)
    curve.to_csv(folder / "budget_curve.csv", index=False)
    figure = figures.budget_curve(curve["n"], curve["expected_best"], curve["sd"], objective,
                                  folder / "figures" / "budget_curve.png")
    picks = sorted({1, max(1, len(curve) // 4), max(1, len(curve) // 2), len(curve)})
    shown = ", ".join(f"n = {n}: {_fmt(curve.loc[n - 1, 'expected_best'], curve['sd'].max())} ± "
                      f"{_fmt(curve.loc[n - 1, 'sd'], curve['sd'].max())}" for n in picks)
    caveat = (" TPE's trials are not independent draws (each depends on those before), so the curve "
              "describes the pool of values this search found rather than a fresh TPE run of n trials."
              if sampler == "tpe" else "")
    return ["## Budget", "",
            f"Expected best {objective} of n trials drawn with replacement from the {len(values)} finished "
            f"ones, ± its SD (Dodge et al. 2019, \"Show Your Work\"): {shown}.{caveat} "
            "Every n in [budget_curve.csv](budget_curve.csv).", "",
            f"![Expected best of n trials]({figure.relative_to(folder).as_posix()})", ""]
