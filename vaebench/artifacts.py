"""What a trial leaves in its MLflow run besides metrics: pictures, its weights, the model.

Every trial gets the cheap part (about 25 ms for the flagship MLP): image grids
(reconstructions, prior samples), the KL of each latent dimension as a CSV, and its weights
(`weights/state_dict.pt`, enough to rebuild the model from the run's params). The costly
part, latent traversals, matplotlib charts (latent PCA, KL per dimension) and the MLflow
model in its `pt2` (torch.export) format, costs about 0.35 s, 10% of a flagship trial:
every trial gets it by default, so each child run shows its pictures and model in the
MLflow UI; with `vaebench run --artifacts best` only the study's best trial gets it,
rebuilt from its weights at the end of the run.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient

from vaebench import data, figures, metrics, models, tracking
from vaebench.tracking import TensorBoardRun, TrialRun

WEIGHTS = "weights/state_dict.pt"
MODEL_URI_TAG = "vaebench.model_uri"  # set once a run has the full set


def log_trial(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, board: TensorBoardRun | None = None, step: int = 0,
) -> None:
    """The per-trial set: reconstructions and samples, KL per dimension (CSV), the weights."""
    x = ds.test.x
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [figures.reconstructions(model, x, folder / "reconstructions.png")]
        if model.is_variational:
            files.append(figures.samples(model, folder / "samples.png"))
            kl = metrics.kl_per_dim(model, x)
            table = folder / "kl_per_dim.csv"
            table.write_text("dim,kl_nats\n" + "".join(f"{d},{v:.6g}\n" for d, v in enumerate(kl)))
            files.append(table)
        for path in files:
            run.log_artifact(path)
            if board and path.suffix == ".png":
                board.log_picture(path, step)
        weights = folder / Path(WEIGHTS).name
        torch.save(model.state_dict(), weights)
        run.log_artifact(weights, Path(WEIGHTS).parent.as_posix())


def log_full(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, experiment_id: str,
    name: str = "model", params: dict[str, Any] | None = None,
) -> str:
    """The costly set: latent traversals, latent PCA and KL-per-dimension charts and the
    MLflow model, a logged model of the study's experiment (not the process's active one)
    named `name`, with `params`; MLflow links the run's step-0 metrics (the final scores) to
    it. Returns the model's URI."""
    import mlflow.pytorch

    x = ds.test.x
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        means = metrics.posterior_means(model, x)
        run.log_artifact(figures.latent_pca(means, ds.test.y.numpy(), folder / "latent_pca.png"))
        if model.is_variational:
            run.log_artifact(figures.traversals(model, x[:1], folder / "traversals.png"))
            run.log_artifact(figures.kl_per_dim(metrics.kl_per_dim(model, x), folder / "kl_per_dim.png"))
    model.cpu().eval()  # exported on the CPU, with a CPU example, wherever it was trained
    model_id = tracking.create_model(run.client, experiment_id, run.run_id, name, params or {})
    info = mlflow.pytorch.log_model(
        model, name="model", model_id=model_id, run_id=run.run_id,
        input_example=x[:2].cpu().numpy(), pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
    run.set_tags({MODEL_URI_TAG: info.model_uri})
    return info.model_uri


def has_full(client: MlflowClient, run_id: str) -> bool:
    return MODEL_URI_TAG in client.get_run(run_id).data.tags


def load_weights(client: MlflowClient, run_id: str, model: models.VAEModel) -> models.VAEModel:
    """Loads a trial's logged weights into `model` (built from the same config)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, WEIGHTS, tmp)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
