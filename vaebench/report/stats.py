"""Is a configuration really better? Tests against the best, seeds needed, budget curves.

Pure functions over plain arrays and long tables (one row per finished trial: a `config`
label, its `seed` and the metric's `value`). SciPy does the t-tests and the noncentral t;
only what SciPy lacks is written here: Holm's step-down adjustment, the power search over n
and the expected maximum of n draws (Dodge et al. 2019).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1_000_000  # the power search gives up beyond this (a gap of ~0.003 SD)
COMPARISON_COLUMNS = ["config", "n", "diff", "ci_low", "ci_high", "p", "p_holm", "tied_with_best", "comparison"]


def ci95(std: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """Half-width of the two-sided 95% Student-t interval of a mean; NaN where n < 2."""
    std, n = np.asarray(std, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


def fmt_ci(mean: float, ci: float) -> str:
    """`-134.06 ± 1.23` (± omitted when there is a single seed); empty when missing."""
    if mean is None or not math.isfinite(mean):
        return ""
    digits = 2 if abs(mean) >= 1 else 4
    if ci is None or not math.isfinite(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def holm(p: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN and
    is not counted in the family. Reject at level a where the adjusted p is below a."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def best_config(values: pd.DataFrame, direction: str) -> str:
    """The configuration with the best mean `value` (ties: the first label in sort order)."""
    means = values.groupby("config")["value"].mean().dropna().sort_index()
    if means.empty:
        raise ValueError("no configuration has a value")
    return str(means.idxmax() if direction == "maximize" else means.idxmin())


def _paired(a: pd.Series, b: pd.Series) -> bool:
    """Both measured on exactly the same seeds, each seed once, at least two of them."""
    return a.index.is_unique and b.index.is_unique and len(a) >= 2 and set(a.index) == set(b.index)


def _test(a: pd.Series, b: pd.Series) -> dict:
    """Difference mean(a) - mean(b), its 95% CI and two-sided p: paired t-test when the
    seeds match, Welch's t-test otherwise; no test (NaN) when a side has a single value.
    Differences that are all exactly zero (identical results) give p = 1 and CI [0, 0]."""
    diff = float(a.mean() - b.mean())
    paired = _paired(a, b)
    kind = "paired" if paired else "welch"
    if (paired and len(a) < 2) or (not paired and min(len(a), len(b)) < 2):
        return {"diff": diff, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "comparison": "none"}
    spread = (a - b.loc[a.index]).std(ddof=1) if paired else math.hypot(a.std(ddof=1), b.std(ddof=1))
    if spread == 0:  # SciPy returns NaN (0/0) or p = 0 here; decide it directly
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "p": 1.0 if diff == 0 else 0.0, "comparison": kind}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical data: SciPy warns, the result stands
        res = stats.ttest_rel(a, b.loc[a.index]) if paired else stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    return {"diff": diff, "ci_low": float(ci.low), "ci_high": float(ci.high), "p": float(res.pvalue), "comparison": kind}


def compare_to_best(values: pd.DataFrame, direction: str = "maximize", best: str | None = None,
                    alpha: float = ALPHA) -> pd.DataFrame:
    """Each configuration against the best one (by mean, `direction` aware, unless `best`
    names it), one row per configuration (COMPARISON_COLUMNS).

    `diff` = mean(config) - mean(best), with its 95% CI and two-sided p from a paired t-test
    over seeds when both have exactly the same seeds, Welch's t-test otherwise. `p_holm` is
    Holm-adjusted over the configurations that could be tested; `tied_with_best` is True
    when the difference is not significant at `alpha` after Holm. The best row itself has
    diff 0, CI [0, 0], p = p_holm = 1 and tied_with_best True (comparison "best"). With a
    single seed on either side no test is possible: p, p_holm and the CI are NaN and
    tied_with_best is missing (pandas NA: undecidable), comparison "none".
    """
    values = values.dropna(subset=["value"])
    best = best_config(values, direction) if best is None else best
    by_config = {c: g.set_index("seed")["value"].astype(float) for c, g in values.groupby("config", sort=True)}
    reference = by_config[best]
    rows = []
    for config, v in by_config.items():
        if config == best:
            rows.append({"config": config, "n": len(v), "diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p": 1.0,
                         "comparison": "best"})
        else:
            rows.append({"config": config, "n": len(v), **_test(v, reference)})
    out = pd.DataFrame(rows)
    others = out["comparison"] != "best"
    out["p_holm"] = np.where(others, np.nan, 1.0)
    out.loc[others, "p_holm"] = holm(out.loc[others, "p"].to_numpy())
    decided = out["p_holm"].notna()
    out["tied_with_best"] = pd.array([pd.NA] * len(out), dtype="boolean")
    out.loc[decided, "tied_with_best"] = out.loc[decided, "p_holm"] >= alpha
    return out[COMPARISON_COLUMNS]


def paired_power(n: int | np.ndarray, effect: float, alpha: float = ALPHA) -> np.ndarray:
    """Power of a two-sided paired t-test with n pairs at standardised effect
    d = |mean difference| / SD of the differences: P(|T| > t_crit) for T noncentral t with
    n - 1 degrees of freedom and noncentrality d * sqrt(n)."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = abs(effect) * np.sqrt(n)
    return stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)


def seeds_for_power(effect: float, power: float = POWER, alpha: float = ALPHA, max_n: int = MAX_SEEDS) -> int | None:
    """Smallest n >= 2 with paired_power(n, effect) >= power; power grows with n, so the
    search doubles n until it is enough and then bisects. None beyond `max_n` (or d = 0)."""
    if not effect or not math.isfinite(effect):
        return None
    lo, hi = 1, 2  # power(lo) < power <= power(hi) once the doubling stops
    while paired_power(hi, effect, alpha) < power:
        lo, hi = hi, hi * 2
        if lo >= max_n:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if paired_power(mid, effect, alpha) >= power else (mid, hi)
    return hi if hi <= max_n else None


@dataclass(frozen=True)
class SeedsNeeded:
    """How many seeds would tell the closest configuration from the best."""

    best: str
    closest: str
    diff: float  # mean(closest) - mean(best)
    sd: float  # seed-to-seed SD of the paired differences (Welch: sqrt(s1^2 + s2^2))
    paired: bool
    n_seeds: int  # seeds the comparison used now
    n_needed: int | None  # for POWER at ALPHA two-sided; None: not computable or beyond MAX_SEEDS
    power_now: float

    METHOD = ("paired t-test, two-sided at α = 0.05, power 0.8 from the noncentral t distribution, "
              "taking the observed gap and seed-to-seed SD as the truth")


def seeds_needed(values: pd.DataFrame, direction: str = "maximize", best: str | None = None,
                 power: float = POWER, alpha: float = ALPHA) -> SeedsNeeded | None:
    """For the configuration closest to the best (smallest non-zero |gap| in mean), the SD of
    its per-seed differences to the best and the number of seeds a paired t-test needs to
    detect that gap with `power` (the estimates taken as the truth: with few seeds, a rough
    guide). None when there is no second configuration with a non-zero gap and an SD."""
    table = compare_to_best(values, direction, best, alpha)
    best = table.loc[table["comparison"] == "best", "config"].item()
    candidates = table[(table["comparison"] != "best") & (table["diff"] != 0)]
    if candidates.empty:
        return None
    row = candidates.loc[candidates["diff"].abs().idxmin()]
    a = values[values["config"] == row["config"]].set_index("seed")["value"].astype(float)
    b = values[values["config"] == best].set_index("seed")["value"].astype(float)
    paired = _paired(a, b)
    sd = float((a - b.loc[a.index]).std(ddof=1) if paired else math.hypot(a.std(ddof=1), b.std(ddof=1)))
    if not math.isfinite(sd):
        return None
    effect = abs(row["diff"]) / sd if sd > 0 else math.inf
    n_now = len(a) if paired else min(len(a), len(b))
    needed = 2 if effect == math.inf else seeds_for_power(effect, power, alpha)
    now = 1.0 if effect == math.inf else float(paired_power(n_now, effect, alpha))
    return SeedsNeeded(best, str(row["config"]), float(row["diff"]), sd, paired, n_now, needed, now)


def expected_best(values: np.ndarray | list[float], direction: str = "maximize",
                  n_max: int | None = None) -> pd.DataFrame:
    """Expected best of n trials, n = 1..n_max (default: as many as given), and its SD.

    Dodge et al. 2019 ("Show Your Work"): the best of n draws with replacement from the
    empirical distribution of the N finished trials' values. With v_(1) <= ... <= v_(N)
    sorted so the last is the best, P(best of n = v_(i)) = (i/N)^n - ((i-1)/N)^n, so
    E = sum_i v_(i) w_i and SD = sqrt(sum_i v_(i)^2 w_i - E^2). Columns: n, expected_best, sd.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite value")
    sign = 1.0 if direction == "maximize" else -1.0
    ordered = np.sort(sign * v)  # ascending in "goodness"
    big_n = len(ordered)
    i = np.arange(1, big_n + 1)
    rows = []
    for n in range(1, (n_max or big_n) + 1):
        w = (i / big_n) ** n - ((i - 1) / big_n) ** n
        mean = float(w @ ordered)
        var = max(float(w @ ordered**2) - mean**2, 0.0)
        rows.append({"n": n, "expected_best": sign * mean, "sd": math.sqrt(var)})
    return pd.DataFrame(rows)


def best_per_seed(values: pd.DataFrame, direction: str = "maximize") -> pd.DataFrame:
    """For a grid run over seeds: per seed, the configuration that came out best and its
    value, i.e. what a one-seed run of the whole grid would have reported. Columns: seed,
    config, value (rows in seed order)."""
    values = values.dropna(subset=["value"])
    pick = values.groupby("seed")["value"].idxmax() if direction == "maximize" else values.groupby("seed")["value"].idxmin()
    return values.loc[pick.to_numpy(), ["seed", "config", "value"]].sort_values("seed").reset_index(drop=True)
