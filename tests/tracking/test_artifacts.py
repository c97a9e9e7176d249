"""A trial's costly set: charts and its MLflow model, light or standalone (pt2)."""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch

from vaebench import data, models, train

from vaebench.tracking import artifacts
from vaebench.tracking import MODEL_FORMAT, MODEL_URI, StudyTracker, TrialRun, resolve_tracking_uri


@pytest.fixture
def trained() -> tuple[models.VAEModel, data.Dataset]:
    ds = data.load("digits", seed=0)
    torch.manual_seed(0)
    model = models.build(arch="mlp", objective="vae", latent_dim=3, likelihood="bernoulli",
                         input_shape=ds.input_shape, hidden=(32,))
    train.fit(model, ds, epochs=1, batch_size=128, lr=3e-3, seed=0)
    return model.eval(), ds


def new_run(tmp_path: Path) -> tuple[StudyTracker, TrialRun]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    resolve_tracking_uri(uri)
    tracker = StudyTracker.open(uri, "writer")
    return tracker, tracker.start_trial(tracker.create_parent({}, {}), 0, "t000", {})


def test_every_trial_gets_charts_and_a_light_model_that_reproduces_the_trained_one(trained, tmp_path) -> None:
    model, ds = trained
    tracker, run = new_run(tmp_path)
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000-beta1", {"model.beta": 1.0}, step=1)
    names = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert {"latent_pca.png", "kl_per_dim.png"} <= names
    tags = run.tags()
    assert tags[MODEL_FORMAT] == "vaebench" and not artifacts.has_full(run, standalone=True)
    logged = run.client.get_logged_model(tags[MODEL_URI].removeprefix("models:/"))
    assert logged.name == "t000-beta1" and logged.params == {"model.beta": "1.0"}
    loaded = mlflow.pyfunc.load_model(tags[MODEL_URI])
    x = ds.test.x[:5]
    with torch.no_grad():
        assert np.array_equal(loaded.predict(x.numpy()), model(x).numpy())


def test_the_standalone_model_replaces_the_light_one_and_loads_without_vaebench_code(trained, tmp_path) -> None:
    model, ds = trained
    tracker, run = new_run(tmp_path)
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000")
    light = run.tags()[MODEL_URI]
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000", standalone=True, charts=False)
    tags = run.tags()
    assert tags[MODEL_FORMAT] == "pt2" and tags[MODEL_URI] != light and artifacts.has_full(run, standalone=True)
    models_left = run.client.search_logged_models(experiment_ids=[tracker.experiment_id])
    assert [m.model_id for m in models_left] == [tags[MODEL_URI].removeprefix("models:/")]  # one per trial
    loaded = mlflow.pytorch.load_model(tags[MODEL_URI])  # a torch.export program: no vaebench class in it
    x = ds.test.x[:5]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_light_model_written_after_the_standalone_one_does_not_replace_it(trained, tmp_path) -> None:
    """Another worker's end of study may give a trial its pt2 model before this worker's writer
    gets to the trial's light one."""
    model, ds = trained
    tracker, run = new_run(tmp_path)
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000", standalone=True)
    standalone = run.tags()[MODEL_URI]
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000")
    assert run.tags()[MODEL_URI] == standalone and run.tags()[MODEL_FORMAT] == "pt2"
    assert len(run.client.search_logged_models(experiment_ids=[tracker.experiment_id])) == 1


def test_the_standalone_model_deletes_only_light_models(trained, tmp_path) -> None:
    """Two workers ending together may both give the best trial its pt2 model: neither deletes
    the other's, which may still be being logged."""
    model, ds = trained
    tracker, run = new_run(tmp_path)
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000", standalone=True)
    first = run.tags()[MODEL_URI]
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000", standalone=True, charts=False)
    left = {f"models:/{m.model_id}" for m in run.client.search_logged_models(experiment_ids=[tracker.experiment_id])}
    assert left == {first, run.tags()[MODEL_URI]}
