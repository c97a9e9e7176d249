"""The examples outside the package: their study files validate with their plugins, and the
VQ-VAE passes every check-model check that applies to it."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from vaebench import data, models
from vaebench.config import load_study
from vaebench.models import checks, registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_vqvae_study_file_loads_its_plugin_and_validates() -> None:
    spec, _ = load_study(str(EXAMPLES / "vqvae" / "study.yaml"))
    assert spec.plugins == ("model.py",) and spec.model.arch == "vqvae"
    assert registry.describe_origin("model", "vqvae") == f"plugin {EXAMPLES / 'vqvae' / 'model.py'}"


def test_the_vqvae_passes_check_model_and_its_kl_is_log_k_per_position() -> None:
    load_study(str(EXAMPLES / "vqvae" / "study.yaml"))
    x = data.load("mnist5k", binarize="static").train.x[:64]

    def build(seed: int):
        torch.manual_seed(seed)
        return models.build("vqvae", latent_dim=4, input_shape=x.shape[1:], codebook=16, positions=3)

    rows = {r.name: r for r in checks.run_checks(checks.Subject(build, x))}
    lacking = {"elbo_monte_carlo", "iwae_bound"}  # a deterministic posterior has no density
    assert all(r.status == checks.PASSED for n, r in rows.items() if n not in lacking), rows
    assert all(rows[n].status == checks.NA for n in lacking)
    record = build(0).loss(x)
    torch.testing.assert_close(record.kl, torch.full((64,), 3 * math.log(16)))
