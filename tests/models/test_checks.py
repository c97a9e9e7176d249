"""check-model's checks: every built-in objective passes; a planted bug fails its named check."""
from __future__ import annotations

import pytest
import torch

from vaebench import models
from vaebench.models import checks

X = (torch.rand(64, 1, 8, 8) > 0.5).float()


def subject(objective: str) -> checks.Subject:
    def build(seed: int):
        torch.manual_seed(seed)
        return models.build(arch="mlp", objective=objective, latent_dim=4, input_shape=(1, 8, 8), hidden=(32,))
    return checks.Subject(build, X)


@pytest.mark.parametrize("objective", sorted(models.OBJECTIVES))
def test_every_builtin_objective_passes(objective: str) -> None:
    rows = checks.run_checks(subject(objective))
    assert [r.name for r in rows] == list(checks.CHECKS)
    assert all(r.status != checks.FAILED for r in rows), rows


def with_record(change) -> checks.Subject:
    """A vae whose loss record is passed through `change(record, x) -> record`: a planted bug."""
    inner = subject("vae").build

    def build(seed: int):
        model = inner(seed)
        loss = model.loss
        model.loss = lambda x, kl_weight=1.0, generator=None: change(loss(x, kl_weight, generator), x)
        return model

    return checks.Subject(build, X)


def test_batch_summed_kl_fails_per_example() -> None:
    def summed(r, x):
        kl = r.kl.sum().expand(len(x))
        return models.LossRecord(loss=r.loss, recon=r.recon, kl=kl, elbo=-(r.recon + kl))

    rows = {r.name: r for r in checks.run_checks(with_record(summed))}
    assert rows["per_example"].status == checks.FAILED


def test_an_iwae_below_the_reported_elbo_fails_iwae_bound() -> None:
    """A record that reports an ELBO 5 nats above the true one is refused: the
    importance-weighted bound of the declared distributions stays below it at every k."""
    flattering = with_record(lambda r, x: models.LossRecord(loss=r.loss, recon=r.recon, kl=r.kl, elbo=r.elbo + 5.0))
    row = checks.iwae_bound(flattering)
    assert row.status == checks.FAILED and "< ELBO" in row.reason
    assert checks.iwae_bound(subject("vae")).status == checks.PASSED
