"""check-model's checks: every built-in objective and likelihood passes; a planted bug fails
its named check; --dataset takes a registered dataset."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from vaebench import models
from vaebench.cli import check_model
from vaebench.models import checks
from vaebench.models.likelihoods import Bernoulli, Gaussian, sum_per_sample
from vaebench.models.objectives import OBJECTIVES

X = (torch.rand(64, 1, 8, 8) > 0.5).float()


def subject(objective: str, likelihood: str = "bernoulli") -> checks.Subject:
    return checks.subject("mlp", X, latent_dim=4, objective=objective, likelihood=likelihood, hidden=(32,))


@pytest.mark.parametrize("objective", sorted(models.OBJECTIVES))
def test_every_builtin_objective_passes(objective: str) -> None:
    rows = checks.run_checks(subject(objective))
    assert [r.name for r in rows] == list(checks.CHECKS)
    assert all(r.status != checks.FAILED for r in rows), rows
    status = {r.name: r.status for r in rows}
    if objective != "ae":  # every variational objective gets the new checks, not a pass by default
        assert status["kl_monte_carlo"] == status["likelihood"] == checks.PASSED, rows
    takes_beta = "beta" in models.objective_hparams(objective)
    assert status["beta_elbo"] == (checks.PASSED if takes_beta else checks.NA), rows


@pytest.mark.parametrize("likelihood", ["gaussian", "discretized_logistic"])
def test_the_other_likelihoods_pass_or_say_why_not(likelihood: str) -> None:
    rows = {r.name: r for r in checks.run_checks(subject("vae", likelihood))}
    assert all(r.status != checks.FAILED for r in rows.values()), rows
    expected = checks.PASSED if likelihood == "gaussian" else checks.NA  # no torch form: not checked
    assert rows["likelihood"].status == expected and rows["likelihood"].reason


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


class ProbabilitiesAsLogits(Bernoulli):
    """Planted: the decoder's probabilities fed to BCE-with-logits, as if they were logits."""

    def nll(self, params, x):
        return sum_per_sample(F.binary_cross_entropy_with_logits(torch.sigmoid(params), x, reduction="none"))


class NoNormaliser(Gaussian):
    """Planted: a Gaussian -log p(x|z) without its normaliser D/2 log 2 pi sigma^2."""

    def nll(self, params, x):
        return sum_per_sample(0.5 * ((x - params) / self.log_sigma.exp()).pow(2))


@pytest.mark.parametrize(("likelihood", "planted"), [("bernoulli", ProbabilitiesAsLogits), ("gaussian", NoNormaliser)])
def test_a_recon_that_is_not_the_declared_likelihood_fails_likelihood(likelihood: str, planted: type) -> None:
    """The declared distribution (torch's Bernoulli on logits, its Normal) stays right; the
    reported recon does not: check-model names the likelihood check."""
    correct = subject("vae", likelihood)

    def build(seed: int):
        model = correct.build(seed)
        model.likelihood = planted()
        return model

    assert checks.likelihood(correct).status == checks.PASSED
    row = checks.likelihood(checks.Subject(build, X))
    assert row.status == checks.FAILED and "declared" in row.reason, row


def test_a_kl_that_is_not_the_declared_distributions_fails_kl_monte_carlo() -> None:
    """A KL computed against another prior than the one declared (here half of it)."""
    halved = with_record(lambda r, x: models.LossRecord(loss=r.loss, recon=r.recon, kl=r.kl / 2, elbo=-(r.recon + r.kl / 2)))
    row = checks.kl_monte_carlo(halved)
    assert row.status == checks.FAILED and "reported KL" in row.reason
    assert checks.kl_monte_carlo(subject("vae")).status == checks.PASSED


def test_a_beta_weighted_loss_reported_as_the_elbo_fails_beta_elbo(monkeypatch: pytest.MonkeyPatch) -> None:
    """An objective that puts beta into its record: right at beta = 1, wrong at any other."""
    def weighted_record(model, x, *, beta=1.0, kl_weight=1.0, generator=None):
        r = OBJECTIVES["beta_vae"](model, x, beta=beta, kl_weight=kl_weight, generator=generator)
        return models.LossRecord(loss=r.loss, recon=r.recon, kl=beta * r.kl, elbo=-(r.recon + beta * r.kl))

    monkeypatch.setitem(OBJECTIVES, "weighted_record", weighted_record)
    rows = {r.name: r for r in checks.run_checks(subject("weighted_record"))}
    assert rows["beta_elbo"].status == checks.FAILED and "moves with beta" in rows["beta_elbo"].reason
    assert rows["loss_weight"].status == checks.PASSED  # the loss weight alone does not see it


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    check_model.add_arguments(parser)
    return check_model.run(parser.parse_args(argv))


def test_dataset_picks_a_registered_datasets_real_images_and_a_bad_name_is_one_line(capsys) -> None:
    assert run_cli(["mlp", "--dataset", "digits", "--latent-dim", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(checks.CHECKS) and "failed" not in out
    assert run_cli(["mlp", "--dataset", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaebench: error: unknown dataset 'imagenet'") and err.count("\n") == 1
