"""Leaderboard columns and report.md sections that say whether a configuration is really better."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vaebench import report

from vaebench.report import significance

from vaebench.report import stats

RNG = np.random.default_rng(0)
SEED_EFFECT = RNG.normal(0, 3, 5)  # shared by every configuration: what pairing removes


def study(values: dict[str, list[float]], sampler_space: dict | None = None) -> report.StudyRecord:
    """A finished study: {beta: val_elbo per seed}; test_elbo = val_elbo + 1."""
    rows = [{"trial": 0, "param.model.beta": beta, "param.seed": str(seed), "val_elbo": v, "test_elbo": v + 1.0}
            for beta, vs in values.items() for seed, v in enumerate(vs)]
    trials = pd.DataFrame(rows).assign(trial=lambda d: range(len(d)), state="COMPLETE", run_name="r", run_id="i")
    space = sampler_space or {"model.beta": list(values), "seed": [0, 1, 2, 3, 4]}
    return report.StudyRecord("s", "x", None, trials, "val_elbo", "maximize", space)


def noisy(shift: float, sd: float = 0.2) -> list[float]:
    return list(-100 + shift + SEED_EFFECT + RNG.normal(0, sd, 5))


@pytest.fixture(scope="module")
def record() -> report.StudyRecord:
    best = noisy(0.0)
    return study({"1.0": best, "2.0": list(np.array(best) + [0.3, -0.3, 0.2, -0.4, 0.1]), "4.0": noisy(-5 * 3.0)})


def test_columns_come_after_the_existing_ones(record: report.StudyRecord) -> None:
    board = report.per_config(record)
    first = board.columns.get_loc("val_elbo_diff_to_best")
    assert list(board.columns[first:first + 6]) == [
        "val_elbo_diff_to_best", "val_elbo_diff_ci95_low", "val_elbo_diff_ci95_high", "val_elbo_p_holm",
        "tied_with_best", "comparison"]
    assert all(not c.startswith(("val_elbo_diff", "test_elbo_diff", "tied")) for c in board.columns[:first])
    assert "test_elbo_p_holm" in board.columns and "test_recon_p_holm" not in board.columns  # not measured


def test_verdicts_on_constructed_configurations(record: report.StudyRecord) -> None:
    board = report.per_config(record).set_index("config")
    assert board.loc["beta=1", "comparison"] == "best" and board.loc["beta=1", "val_elbo_p_holm"] == 1.0
    assert board.loc["beta=2", "tied_with_best"] and board.loc["beta=2", "comparison"] == "paired"
    assert not board.loc["beta=4", "tied_with_best"] and board.loc["beta=4", "val_elbo_p_holm"] < 0.05
    gap = board.loc["beta=4", "val_elbo_mean"] - board.loc["beta=1", "val_elbo_mean"]
    assert board.loc["beta=4", "val_elbo_diff_to_best"] == pytest.approx(gap)
    assert board.loc["beta=4", "val_elbo_diff_ci95_low"] < gap < board.loc["beta=4", "val_elbo_diff_ci95_high"]
    # test_elbo is val_elbo + 1 per trial: the same differences against the same reference
    assert board.loc["beta=4", "test_elbo_diff_to_best"] == pytest.approx(gap)


def test_a_single_seed_is_written_as_undecided(tmp_path: Path) -> None:
    record = study({"1.0": [-100.0], "2.0": [-101.0]}, {"model.beta": ["1.0", "2.0"], "seed": [0]})
    board = report.per_config(record)
    assert pd.isna(board.loc[1, "tied_with_best"]) and math.isnan(board.loc[1, "val_elbo_p_holm"])
    csv = pd.read_csv(report.write_csv(board, tmp_path / "board.csv"))
    assert pd.isna(csv.loc[1, "tied_with_best"]) and csv.loc[0, "tied_with_best"]
    assert significance.verdict(board.iloc[1], "val_elbo") == "undecided (1 seed)"


def test_missing_metric_for_the_best_gives_empty_columns() -> None:
    record = study({"1.0": noisy(0.0), "2.0": noisy(-1.0)})
    record.trials.loc[record.trials["param.model.beta"] == "1.0", "test_elbo"] = np.nan
    board = report.per_config(record)
    assert board["test_elbo_diff_to_best"].isna().all() and board["val_elbo_p_holm"].notna().all()


def test_report_sections_name_the_tied_configurations(record: report.StudyRecord) -> None:
    board = report.per_config(record)
    lines = report.leaderboard_lines(board, record.finished, "val_elbo", "maximize", ["val_elbo", "test_elbo"])
    text = "\n".join(lines)
    table = report.parse_markdown_table(text[text.index("| rank"):].split("\n\n")[0]).set_index("config")
    assert table.loc["beta=1", "vs best"] == "best"
    assert table.loc["beta=2", "vs best"].startswith("tied (p = ")
    assert table.loc["beta=4", "vs best"].startswith("worse (p")
    assert "Not distinguishable from beta=2 with 5 seed(s)" in text and "Ahead of beta=4" in text
    need = stats.seeds_needed(significance.long_values(board, record.finished, "val_elbo"), "maximize", "beta=1")
    assert need.closest == "beta=2" and f"about {need.n_needed} seeds" in text and "noncentral t" in text


def test_budget_of_a_sampled_search_writes_the_curve(tmp_path: Path) -> None:
    record = study({"1.0": noisy(0.0), "2.0": noisy(-1.0)})
    board = report.per_config(record)
    lines = significance.budget_lines(board, record.finished, "val_elbo", "maximize", "tpe", True, tmp_path)
    curve = pd.read_csv(tmp_path / "budget_curve.csv")
    assert list(curve["n"]) == list(range(1, 11)) and curve["expected_best"].is_monotonic_increasing
    assert curve["expected_best"].iloc[0] == pytest.approx(record.finished["val_elbo"].mean())
    assert (tmp_path / "figures" / "budget_curve.png").is_file()
    assert "](figures/budget_curve.png)" in "\n".join(lines) and "Dodge" in "\n".join(lines)


def test_budget_of_a_grid_over_seeds_is_the_best_per_seed(tmp_path: Path, record: report.StudyRecord) -> None:
    board = report.per_config(record)
    lines = significance.budget_lines(board, record.finished, "val_elbo", "maximize", "grid", True, tmp_path)
    per_seed = pd.read_csv(tmp_path / "best_per_seed.csv")
    expected = record.finished.assign(v=record.finished["val_elbo"]).groupby("param.seed")["v"].max()
    assert list(per_seed["value"]) == pytest.approx(list(expected))
    assert "## Budget" in lines
    assert significance.budget_lines(board, record.finished, "val_elbo", "maximize", "grid", False, tmp_path) == []


def test_a_grid_of_one_configuration_over_seeds_has_no_budget_section(tmp_path: Path) -> None:
    """Only seeds vary (the IWAE-protocol studies): there is no best of several to pick."""
    record = study({"1.0": noisy(0.0)})
    board = report.per_config(record)
    assert len(board) == 1
    assert significance.budget_lines(board, record.finished, "val_elbo", "maximize", "grid", True, tmp_path) == []
    assert not (tmp_path / "best_per_seed.csv").exists()
