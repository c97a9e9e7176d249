"""The examples against beta_sweep's β = 1 VAE: mean over seeds, paired t-test over the seeds both ran.

    python examples/compare.py            # every example with results/trials.csv, as Markdown tables

Reads results/beta_sweep/trials.csv (its β = 1 trials) and examples/<name>/results/trials.csv,
pairs trials by seed, and prints the table of examples/README.md for each example, so every row
there comes from this one place.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "beta_sweep" / "trials.csv"
EXAMPLES = {"vqvae": "VQ-VAE", "vampprior": "VampPrior"}
METRICS = {  # column: (label, digits)
    "test_elbo": ("test ELBO (nats)", 2),
    "test_recon": ("test recon (nats)", 2),
    "test_kl": ("test KL (nats)", 2),
    "test_fd_recon": ("FD of test reconstructions", 1),
    "test_fd_prior": ("FD of prior samples", 1),
    "test_probe_acc": ("linear probe accuracy", 2),
    "test_nmi": ("NMI", 2),
}


def by_seed(path: Path, beta: float | None = None) -> pd.DataFrame:
    """The trials of `path` indexed by seed (only those at `beta`, if given)."""
    trials = pd.read_csv(path)
    if beta is not None:
        trials = trials[trials["param.model.beta"] == beta]
    return trials.set_index("param.seed")


def table(name: str, baseline: pd.DataFrame) -> list[str]:
    """The Markdown rows of one example against the baseline, paired by seed."""
    model = by_seed(ROOT / "examples" / name / "results" / "trials.csv")
    seeds = sorted(set(model.index) & set(baseline.index))
    label = EXAMPLES[name]
    lines = [f"{label}, seeds {', '.join(map(str, seeds))}:", "",
             f"| metric | {label} | VAE (β = 1) | difference | p |", "|---|---|---|---|---|"]
    for column, (what, digits) in METRICS.items():
        a, b = model.loc[seeds, column], baseline.loc[seeds, column]
        p = stats.ttest_rel(a, b).pvalue if (a - b).std() > 0 else float("nan")
        lines.append(f"| {what} | {a.mean():.{digits}f} | {b.mean():.{digits}f} | {a.mean() - b.mean():+.{digits}f} | {p:.2g} |")
    return lines


def main() -> int:
    baseline = by_seed(BASELINE, beta=1.0)
    names = [n for n in EXAMPLES if (ROOT / "examples" / n / "results" / "trials.csv").is_file()]
    for name in names:
        print("\n".join(table(name, baseline)), end="\n\n")
    return 0 if names else 1


if __name__ == "__main__":
    sys.exit(main())
