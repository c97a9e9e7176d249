"""What a trial leaves in its MLflow run besides metrics: pictures, its weights, the model.

Every trial gets the cheap part: image grids (reconstructions, prior samples), the KL of each
latent dimension as a CSV, and its weights (`weights/state_dict.pt`, enough to rebuild the
model from the run's params). The costly part (latent traversals, matplotlib charts of the
latent PCA and KL per dimension, and the MLflow model) goes to every trial by default, so each
child run shows its pictures and model in the MLflow UI. The model is in the standalone
`pt2` (torch.export) format: no pickle is ever written or loaded (`standalone=False` pickles,
about 4x cheaper, for benchmarks only). With `vaebench run --artifacts best` only the best
trial gets the costly part, rebuilt from its weights at the end.
benchmarks/README.md gives what each part costs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaebench import data, figures, metrics, models
from vaebench.board import TensorBoardRun
from vaebench.tracking import MODEL_FORMAT, MODEL_URI, TrialRun

WEIGHTS = "weights/state_dict.pt"


def log_trial(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, board: TensorBoardRun | None = None, step: int = 0,
) -> np.ndarray | None:
    """The per-trial set: reconstructions and samples, KL per dimension (CSV), the weights.
    Returns the KL per dimension (None for a deterministic model), for `log_full`'s chart."""
    x, kl = ds.test.x, None
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
    return kl


def log_full(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, experiment_id: str, name: str = "model",
    params: dict[str, Any] | None = None, *, step: int = 0, standalone: bool = True, kl: np.ndarray | None = None,
) -> str:
    """The costly set: latent traversals, latent PCA and KL-per-dimension charts and the
    MLflow model, a logged model of the study's experiment (not the process's active one)
    named `name`, with `params`, output at `step` (the last epoch). `standalone`: the `pt2`
    format (torch.export: loads without vaebench), else pickled (about 4x cheaper). `kl`:
    `log_trial`'s result, not computed again. Returns the model's URI."""
    x = ds.test.x
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        means = metrics.posterior_means(model, x)
        run.log_artifact(figures.latent_pca(means, ds.test.y.numpy(), folder / "latent_pca.png"))
        if model.is_variational:
            run.log_artifact(figures.traversals(model, x[:1], folder / "traversals.png"))
            kl = metrics.kl_per_dim(model, x) if kl is None else kl
            run.log_artifact(figures.kl_per_dim(kl, folder / "kl_per_dim.png"))
    model.cpu().eval()  # exported on the CPU, with a CPU example, wherever it was trained
    fmt = "pt2" if standalone else "pickle"
    uri = run.log_model(model, experiment_id, name, params or {}, step, input_example=x[:2].cpu().numpy(),
                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], serialization_format=fmt)
    run.set_tags({MODEL_URI: uri, MODEL_FORMAT: fmt})
    return uri


def has_full(run: TrialRun, standalone: bool = False) -> bool:
    """Whether the run has the costly set (with its model in the `pt2` format, if `standalone`)."""
    tags = run.tags()
    return MODEL_URI in tags and (not standalone or tags.get(MODEL_FORMAT, "pt2") == "pt2")


def load_weights(run: TrialRun, model: models.VAEModel) -> models.VAEModel:
    """Loads a trial's logged weights into `model` (built from the same config)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = run.download(WEIGHTS, tmp)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
