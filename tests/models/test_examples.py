"""The examples outside the package: their study files validate with their plugins, and
`python -m vaebench check-model` passes each plugin model (exit 0, every row passed or not
applicable with its reason), as CI runs it."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaebench import data, models
from vaebench.config import load_study
from vaebench.models import checks, registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# What each example cannot be checked for, and why (the rest must pass).
NOT_APPLICABLE = {
    "vqvae": {"elbo_monte_carlo", "kl_monte_carlo", "likelihood", "iwae_bound", "beta_elbo"},  # no posterior density, no beta
    "vampprior": {"beta_elbo"},  # takes no beta
}


@pytest.mark.parametrize("name", sorted(NOT_APPLICABLE))
def test_the_study_file_loads_its_plugin_and_validates(name: str) -> None:
    spec, _ = load_study(str(EXAMPLES / name / "study.yaml"))
    assert spec.plugins == ("model.py",) and spec.model.arch == name
    assert registry.describe_origin("model", name) == f"plugin {EXAMPLES / name / 'model.py'}"


@pytest.mark.parametrize("name", sorted(NOT_APPLICABLE))
def test_check_model_passes_the_example_from_the_command_line(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vaebench", "check-model", name, "--plugin", str(EXAMPLES / name / "model.py"),
         "--latent-dim", "4"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line[:18].strip(): line[19:34].strip() for line in done.stdout.splitlines()}
    assert list(rows) == list(checks.CHECKS), done.stdout
    assert {n for n, status in rows.items() if status == checks.NA} == NOT_APPLICABLE[name], done.stdout
    assert {n for n, status in rows.items() if status != checks.NA} == {n for n in rows if n not in NOT_APPLICABLE[name]}
    assert set(rows.values()) <= {checks.PASSED, checks.NA}, done.stdout


def test_the_vqvae_kl_is_log_k_per_position() -> None:
    load_study(str(EXAMPLES / "vqvae" / "study.yaml"))
    x = data.load("mnist5k", binarize="static").train.x[:64]
    record = models.build("vqvae", latent_dim=4, input_shape=x.shape[1:], codebook=16, positions=3).loss(x)
    torch.testing.assert_close(record.kl, torch.full((64,), 3 * math.log(16)))


def test_the_vampprior_samples_its_learned_prior_and_its_kl_is_monte_carlo() -> None:
    """Samples come from the mixture at the pseudo-inputs (not N(0, I)); the KL has no closed form."""
    load_study(str(EXAMPLES / "vampprior" / "study.yaml"))
    torch.manual_seed(0)
    model = models.build("vampprior", latent_dim=3, input_shape=(1, 8, 8), hidden=(16,), components=5)
    prior = model.prior()
    torch.testing.assert_close(prior.mixture_distribution.probs, torch.full((5,), 0.2))
    _, how = models.kl_divergence(model.posterior(torch.rand(4, 1, 8, 8)), prior, samples=7)
    assert how == "monte carlo, 7 samples"
    with torch.no_grad():
        model.pseudo_inputs.fill_(1.0)  # every component at the all-ones image: the prior moves with it
        moved = model.sample(3, torch.Generator().manual_seed(0))
        model.pseudo_inputs.fill_(0.0)
        assert not torch.allclose(moved, model.sample(3, torch.Generator().manual_seed(0)))
    assert moved.shape == (3, 1, 8, 8) and 0 <= moved.min() and moved.max() <= 1
