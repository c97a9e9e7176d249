"""The linear probe (test_probe_acc) is solved to a tight tolerance: a function of the codes,
the same whatever solver, starting point or row order reaches the optimum."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vaebench import metrics
from vaebench.metrics import latent
from vaebench.metrics.evaluate import NAN_REASONS


def codes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5,000 x 16 codes of 10 overlapping classes (a probe accuracy near 0.94: points near the
    boundaries, where an unconverged fit moves predictions)."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 1.0, (10, 16))
    labels = np.random.default_rng(seed).integers(0, 10, n)
    return means[labels] + np.random.default_rng(seed + 1).normal(0, 1.0, (n, 16)), labels


def optimum(x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
    """The same problem solved another way: Newton steps by conjugate gradients, to 1e-10."""
    scaler = StandardScaler().fit(x)
    return scaler, LogisticRegression(solver="newton-cg", tol=1e-10, max_iter=1000).fit(scaler.transform(x), y)


def test_the_probe_is_the_optimum_not_a_solvers_path() -> None:
    x, y = codes(5000, seed=1)
    x_test, y_test = codes(1000, seed=2)
    probe = latent.fit_probe(x, y)
    assert probe is not None and latent.probe_gradient(probe, x, y) < 1e-9
    scaler, reference = optimum(x, y)
    # the old probe (lbfgs, scikit-learn's default tol=1e-4) stopped 0.05 away, accuracy 0.941 against 0.940
    np.testing.assert_allclose(probe[-1].coef_, reference.coef_, rtol=0, atol=1e-6)
    centred = [b - b.mean() for b in (probe[-1].intercept_, reference.intercept_)]  # softmax ignores a common shift
    np.testing.assert_allclose(*centred, rtol=0, atol=1e-6)
    accuracy = latent.probe_accuracy(x, y, x_test, y_test)
    assert accuracy == reference.score(scaler.transform(x_test), y_test)
    order = np.random.default_rng(3).permutation(len(x))
    assert latent.probe_accuracy(x[order], y[order], x_test, y_test) == accuracy
    np.testing.assert_allclose(latent.fit_probe(x[order], y[order])[-1].coef_, probe[-1].coef_, rtol=0, atol=1e-6)


def test_a_probe_that_ran_out_of_newton_steps_is_nan_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latent, "PROBE_MAX_ITER", 2)
    x, y = codes(500, seed=1)
    assert latent.fit_probe(x, y) is None
    with pytest.warns(ConvergenceWarning):  # two lbfgs steps: a probe stopped far from its optimum
        stopped = latent.make_pipeline(StandardScaler(), LogisticRegression(max_iter=2)).fit(x, y)
    assert latent.probe_gradient(stopped, x, y) > 1e-3
    assert math.isnan(latent.probe_accuracy(x, y, x, y))


def test_a_line_search_stopped_by_rounding_at_the_optimum_is_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn warns when rounding stops a line search, which happens at the optimum of
    real VAE codes: the probe there is the converged one, not NaN."""
    class Rounding(LogisticRegression):
        def fit(self, *args: object, **kwargs: object) -> Rounding:
            fitted = super().fit(*args, **kwargs)
            warnings.warn("Line search of Newton solver did not converge", ConvergenceWarning)
            return fitted

    monkeypatch.setattr(latent, "LogisticRegression", Rounding)
    x, y = codes(500, seed=1)
    assert latent.probe_accuracy(x, y, x, y) > 0.5


def test_a_nan_score_is_never_left_without_a_reason() -> None:
    scores = {"test_probe_acc": math.nan, "test_nmi": 0.5, "test_elbo": math.nan, "test_mig": math.nan}
    reasons = metrics.nan_reasons(scores, {"test_elbo": "skipped: no elbo"})
    assert reasons == {"test_probe_acc": "the linear probe did not converge (metrics.latent.fit_probe)",
                       "test_mig": "not a finite number for this model"}


@pytest.mark.slow  # one tiny study
def test_an_unconverged_probe_is_tagged_on_its_run(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import mlflow_runs, run_cli, write_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(latent, "fit_probe", lambda *_: None)
    code, _, err = run_cli(tmp_path, write_study(tmp_path, "probe", {"seed": [0]}))
    assert code == 0, err
    _, (run,) = mlflow_runs(tmp_path, "probe")
    assert "test_probe_acc" not in run.data.metrics and run.data.metrics["test_nmi"] >= 0
    assert run.data.tags["vaebench.skipped.test_probe_acc"] == NAN_REASONS["probe_acc"]
