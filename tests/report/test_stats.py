"""Statistics of the report on constructed data whose answer is known."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from vaebench.report import stats


def long(table: dict[str, list[float]], seeds: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """{config: values per seed} -> the long table (config, seed, value)."""
    rows = [{"config": c, "seed": (seeds or {}).get(c, list(range(len(v))))[i], "value": x}
            for c, v in table.items() for i, x in enumerate(v)]
    return pd.DataFrame(rows)


def by_config(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("config")


def test_identical_configurations_are_tied() -> None:
    out = by_config(stats.compare_to_best(long({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})))
    assert out.loc["b", "p"] == 1.0 and out.loc["b", "diff"] == 0.0
    assert bool(out["tied_with_best"].all())


def test_same_distribution_under_fixed_noise_is_tied() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 5)  # per-seed effect shared by both
    table = long({"a": list(base + rng.normal(0, 0.1, 5)), "b": list(base + rng.normal(0, 0.1, 5))})
    out = by_config(stats.compare_to_best(table))
    assert out["tied_with_best"].all() and (out["comparison"] != "welch").all()


def test_a_shift_of_five_sd_with_five_seeds_is_not_tied() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 5)
    table = long({"good": list(10 + noise), "bad": list(5 + rng.normal(0, 1, 5))})
    out = by_config(stats.compare_to_best(table, "maximize"))
    assert out.loc["good", "comparison"] == "best" and out.loc["good", "tied_with_best"]
    assert out.loc["bad", "comparison"] == "paired"
    assert not out.loc["bad", "tied_with_best"] and out.loc["bad", "p_holm"] < 0.05
    assert out.loc["bad", "ci_low"] < out.loc["bad", "diff"] < out.loc["bad", "ci_high"] < 0


def test_direction_picks_the_best_and_the_sign_of_the_difference() -> None:
    table = long({"low": [1.0, 1.1, 0.9], "high": [3.0, 3.2, 2.9]})
    assert stats.best_config(table, "minimize") == "low"
    out = by_config(stats.compare_to_best(table, "minimize"))
    assert out.loc["high", "diff"] == pytest.approx(np.mean([3.0, 3.2, 2.9]) - 1.0)


def test_paired_when_seeds_match_welch_otherwise() -> None:
    a, b = [5.0, 6.0, 7.5, 6.1], [4.0, 5.5, 6.0]
    table = long({"a": a, "b": b}, seeds={"a": [0, 1, 2, 3], "b": [0, 1, 2]})
    out = by_config(stats.compare_to_best(table))
    welch = sps.ttest_ind(b, a, equal_var=False)
    assert out.loc["b", "comparison"] == "welch"
    assert out.loc["b", "p"] == pytest.approx(welch.pvalue)
    assert out.loc["b", "ci_low"] == pytest.approx(welch.confidence_interval().low)
    paired = by_config(stats.compare_to_best(long({"a": a[:3], "b": b})))
    assert paired.loc["b", "comparison"] == "paired"
    assert paired.loc["b", "p"] == pytest.approx(sps.ttest_rel(b, a[:3]).pvalue)


def test_one_seed_is_undecidable() -> None:
    out = by_config(stats.compare_to_best(long({"a": [2.0], "b": [1.0]})))
    assert out.loc["b", "comparison"] == "none" and math.isnan(out.loc["b", "p"])
    assert pd.isna(out.loc["b", "tied_with_best"]) and out.loc["b", "diff"] == -1.0
    assert out.loc["a", "tied_with_best"] and out.loc["a", "p_holm"] == 1.0


def test_holm_against_a_hand_computed_example() -> None:
    # sorted 0.01, 0.02, 0.04, 0.30 -> 4*0.01, 3*0.02, max(0.06, 2*0.04), max(0.08, 0.30)
    p = [0.04, 0.01, 0.30, 0.02, np.nan]
    adjusted = stats.holm(p)
    assert adjusted[:4] == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1 and monotone


def test_holm_decides_tied_per_configuration() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 4)
    table = long({"best": list(base + 10), "near": list(base + 10 - rng.normal(0.05, 0.2, 4)),
                  "far": list(base + 10 - 5 - rng.normal(0, 0.2, 4))})
    out = by_config(stats.compare_to_best(table))
    raw = out.loc[["near", "far"], "p"].to_numpy()
    assert out.loc[["near", "far"], "p_holm"].to_numpy() == pytest.approx(stats.holm(raw))
    assert out.loc["near", "tied_with_best"] and not out.loc["far", "tied_with_best"]


def test_power_returns_the_smallest_n_with_80_percent() -> None:
    for effect in (0.3, 0.8, 1.5, 3.0):
        n = stats.seeds_for_power(effect)
        assert stats.paired_power(n, effect) >= 0.8
        if n > 2:
            assert stats.paired_power(n - 1, effect) < 0.8


def test_power_formula_matches_simulation() -> None:
    rng = np.random.default_rng(3)
    n, effect, reps = 8, 1.0, 4000
    diffs = rng.normal(effect, 1.0, (reps, n))
    rejected = np.mean(sps.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05)
    assert rejected == pytest.approx(float(stats.paired_power(n, effect)), abs=0.025)


def test_seeds_needed_uses_the_closest_configuration() -> None:
    table = long({"best": [10.0, 11.0, 12.0], "close": [9.0, 10.5, 11.0], "far": [1.0, 2.0, 3.0]})
    out = stats.seeds_needed(table)
    d = np.array([9.0, 10.5, 11.0]) - np.array([10.0, 11.0, 12.0])
    assert out.closest == "close" and out.paired and out.n_seeds == 3
    assert out.sd == pytest.approx(d.std(ddof=1)) and out.diff == pytest.approx(d.mean())
    assert out.n_needed == stats.seeds_for_power(abs(d.mean()) / d.std(ddof=1))
    assert stats.seeds_needed(long({"a": [1.0, 2.0], "b": [1.0, 2.0]})) is None  # no non-zero gap


def test_expected_best_against_brute_force_enumeration() -> None:
    values = [0.3, -1.0, 2.5, 0.3, 1.7]
    for direction, pick in (("maximize", max), ("minimize", min)):
        curve = stats.expected_best(values, direction, n_max=3).set_index("n")
        for n in (1, 2, 3):
            bests = np.array([pick(t) for t in itertools.product(values, repeat=n)])
            assert curve.loc[n, "expected_best"] == pytest.approx(bests.mean())
            assert curve.loc[n, "sd"] == pytest.approx(bests.std(ddof=0))


def test_expected_best_rises_to_the_maximum() -> None:
    curve = stats.expected_best(np.arange(10.0), n_max=200)
    assert curve["expected_best"].is_monotonic_increasing
    assert curve["expected_best"].iloc[0] == pytest.approx(4.5)
    assert curve["expected_best"].iloc[-1] == pytest.approx(9.0, abs=1e-6)


def test_best_per_seed() -> None:
    table = long({"a": [1.0, 5.0, 2.0], "b": [3.0, 4.0, 0.0]})
    out = stats.best_per_seed(table, "maximize")
    assert list(out["config"]) == ["b", "a", "a"] and list(out["value"]) == [3.0, 5.0, 2.0]
    assert list(stats.best_per_seed(table, "minimize")["value"]) == [1.0, 4.0, 0.0]
