"""vaebench.trial: one trial without Optuna, as notebooks and benchmarks call it."""
from __future__ import annotations

import torch

from vaebench import manifest, metrics, tracking, trial
from vaebench.config import StudySpec

SPEC = StudySpec.model_validate({
    "name": "t",
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "objective": "beta_vae", "latent_dim": 2, "likelihood": "bernoulli", "hidden": [16]},
    "train": {"epochs": 1},
    "search": {"sampler": "grid", "space": {"model.beta": [1.0, 4.0], "seed": [0, 1]}},
})


def test_run_name_is_the_number_and_the_sampled_values() -> None:
    assert trial.run_name(7, {"model.beta": 4.0, "seed": 1}) == "t007 beta=4 seed=1"
    assert trial.run_name(12, {"train.lr": 0.00123456, "model.hidden": [64, 32]}) == "t012 lr=0.001235 hidden=[64, 32]"


def test_the_same_config_builds_the_same_initial_weights() -> None:
    cfg = SPEC.with_params({"model.beta": 4.0, "seed": 1})
    ds = trial.load_data(cfg)
    first, again = trial.build_model(cfg, ds), trial.build_model(cfg, ds)
    other = trial.build_model(SPEC.with_params({"model.beta": 4.0, "seed": 0}), ds)
    pairs = list(zip(first.state_dict().values(), again.state_dict().values(), other.state_dict().values()))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)


def test_environment_tags_are_tracking_tag_names() -> None:
    env = trial.environment()
    assert set(env) == {tracking.VERSION, tracking.TORCH_VERSION, tracking.MLFLOW_VERSION, tracking.OPTUNA_VERSION,
                        tracking.PYTHON_VERSION, tracking.HOST}
    assert env[tracking.TORCH_VERSION] == torch.__version__


def test_environment_tags_agree_with_the_manifest() -> None:
    """The tags of every run and the study's manifest come from one source."""
    env, versions, hw = trial.environment(), manifest.package_versions(), manifest.hardware()
    assert env[tracking.MLFLOW_VERSION] == versions["mlflow"] and env[tracking.OPTUNA_VERSION] == versions["optuna"]
    assert env[tracking.TORCH_VERSION] == versions["torch"]
    assert env[tracking.PYTHON_VERSION] == manifest.python()["version"]
    assert f"{hw['cpu_count']} CPUs, {hw['torch_threads']} torch threads" in env[tracking.HOST]


def test_the_stage_evaluation_logs_the_subset_likelihood_at_each_stage_end() -> None:
    spec = StudySpec.model_validate({
        "name": "t",
        "dataset": {"name": "digits", "binarize": "dynamic", "val_fraction": 0},
        "model": {"arch": "mlp", "latent_dim": 2, "likelihood": "bernoulli", "hidden": [8], "activation": "tanh"},
        "train": {"epochs": 5, "batch_size": 64, "schedule": {"name": "staged", "stages": 3, "growth": 2}},
        "eval": {"iwae_k": 5, "stage_points": 20},
        "search": {"sampler": "grid", "objective": "train_loss", "direction": "minimize", "space": {"seed": [0]}},
    })
    cfg = spec.with_params({"seed": 0})
    ds = trial.load_data(cfg)
    model = trial.build_model(cfg, ds)
    logged: list[tuple[int, dict[str, float]]] = []
    callback = trial.stage_evaluation(cfg, model, ds, lambda m, step: logged.append((step, m)))
    assert callback is not None
    for epoch in range(1, 6):
        callback(epoch, {})
    # stages of 1, 2, 4 epochs end at epochs 1 and 3; training stops at 5
    assert [step for step, _ in logged] == [1, 3, 5]
    expected = metrics.iwae_log_likelihood(model, ds.test.x[:20], 5, seed=0).mean().item()
    assert logged[-1][1] == {"test_iwae_ll_subset": expected}
    assert trial.stage_evaluation(spec.with_params({"seed": 0}).model_copy(
        update={"eval": cfg.eval.model_copy(update={"stage_points": 0})}), model, ds, print) is None
