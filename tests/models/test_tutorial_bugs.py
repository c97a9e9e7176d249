"""examples/tutorial_vae.py: check-model passes the correct tutorial VAE and refuses each
planted bug by the check that names it."""
from __future__ import annotations

from pathlib import Path

import pytest
from vaebench import data
from vaebench.models import checks, plugins

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tutorial_vae.py"
CAUGHT_BY = {
    "logvar_as_std": "elbo_monte_carlo",
    "pixel_mean_recon": "elbo_monte_carlo",
    "batch_summed_kl": "per_example",
    "tanh_bce": "gradients_finite",
}


def rows(name: str) -> dict[str, checks.Row]:
    plugins.load_file(EXAMPLE)
    x = data.load("mnist5k", binarize="static").train.x[:64]
    return {r.name: r for r in checks.run_checks(checks.subject(name, x, latent_dim=4, hidden=32))}


def test_the_correct_tutorial_vae_passes_every_check() -> None:
    assert {n: r.status for n, r in rows("tutorial_vae").items()} == dict.fromkeys(checks.CHECKS, checks.PASSED)


@pytest.mark.parametrize(("bug", "check"), sorted(CAUGHT_BY.items()))
def test_each_planted_bug_fails_the_check_that_names_it(bug: str, check: str) -> None:
    found = rows(f"tutorial_vae_{bug}")
    assert found[check].status == checks.FAILED, found[check]
    assert found[check].reason
