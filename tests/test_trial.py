"""vaebench.trial: one trial without Optuna, as notebooks and benchmarks call it."""
from __future__ import annotations

import torch

from vaebench import tracking, trial
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
