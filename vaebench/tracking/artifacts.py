"""What a trial leaves in its MLflow run besides metrics: pictures, its weights, the model.

Every trial gets the cheap part, written in line: image grids (reconstructions, prior samples,
latent traversals), the KL of each latent dimension as a CSV, and its weights
(`weights/state_dict.pt`, enough to rebuild the model from the run's params). The costly part,
matplotlib charts of the latent PCA and of the KL per dimension and an MLflow model, goes to
every trial by default too. A trial's model is the light one (vaebench.tracking.light_model: its weights,
loaded by vaebench); the study's best trial gets the standalone `pt2` model (torch.export,
loads without vaebench) at the end, which replaces its light one. No pickle is ever written
or loaded. With `vaebench run --artifacts best` only the best trial gets the costly part,
rebuilt from its weights. benchmarks/README.md gives what each part costs.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import torch
from mlflow.models import infer_signature
from safetensors.torch import save_file

from vaebench import __version__, data, metrics, models
from vaebench.models import plugins
from vaebench.metrics.sampling import Generated

from vaebench.tracking import charts as figures
from vaebench.tracking import grids
from vaebench.tracking.tensorboard import TensorBoardRun
from vaebench.tracking.runs import (
    GENERATION_REFERENCE,
    GENERATION_SAMPLES,
    GENERATION_SEED,
    GENERATION_SHA256,
    MODEL_FORMAT,
    MODEL_URI,
    SKIPPED,
    TrialRun,
)

WEIGHTS = "weights/state_dict.pt"
GENERATION_PICTURE = "generation_samples.png"  # prior samples left, fitted-mixture samples right
# The light model: MLflow runs this file to load one (so it is not imported here: it registers
# itself with MLflow), which reads its files by these artifact names.
LIGHT_MODEL = Path(__file__).with_name("light_model.py")
LIGHT_ARTIFACTS = ("weights", "config")
LIGHT_PLUGIN = "plugin"  # and, for a plugin's model, the plugin file, run before the model is built
LIGHT_TYPE = "vaebench-light"  # the logged model's type, so that the standalone one can replace it


def log_trial(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, board: TensorBoardRun | None = None, step: int = 0,
) -> np.ndarray | None:
    """The per-trial set: reconstructions, samples and traversals, KL per dimension (CSV), the
    weights. Returns the KL per dimension (None for a deterministic model), for `log_full`."""
    x, kl = ds.test.x, None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [grids.reconstructions(model, x, folder / "reconstructions.png")]
        can = models.capabilities(model)
        if "sample" in can:
            files.append(grids.samples(model, folder / "samples.png"))
        if gaussian_vae(model):  # traversals and the KL per dimension read a Gaussian posterior and N(0, I)
            files.append(grids.traversals(model, x[:1], folder / "traversals.png"))
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


def gaussian_vae(model: Any) -> bool:
    """A built-in VAE (a Gaussian posterior, N(0, I), a decoder with a likelihood): what the
    traversal and per-dimension KL pictures are drawn for."""
    return isinstance(model, models.VAEModel) and model.is_variational


def skipped_tags(reasons: dict[str, str]) -> dict[str, str]:
    """{metric: why it is NaN} as run tags `vaebench.skipped.<metric>`."""
    return {SKIPPED + name: why[:4000] for name, why in reasons.items()}


def generation_tags(generated: Generated) -> dict[str, str]:
    """The generation protocol (feature network sha256, sample seed and count, reference rows)
    and why a score is NaN, as run tags."""
    tags = {GENERATION_SHA256: generated.feature_net_sha256, GENERATION_SEED: str(generated.seed)}
    if generated.samples is not None:
        tags[GENERATION_SAMPLES] = str(generated.samples)
    if generated.reference is not None:
        tags[GENERATION_REFERENCE] = json.dumps(generated.reference, sort_keys=True)
    return tags | skipped_tags(generated.skipped)


def log_generation(generated: Generated, run: TrialRun, board: TensorBoardRun | None = None, step: int = 0) -> None:
    """The generation protocol and reasons as tags (`generation_tags`), and the pixel means of
    each sampler that ran side by side (prior left, fitted mixture right) as GENERATION_PICTURE."""
    run.set_tags(generation_tags(generated))
    if not generated.grids:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = grids.side_by_side(list(generated.grids.values()), Path(tmp) / GENERATION_PICTURE)
        run.log_artifact(path)
        if board:
            board.log_picture(path, step)


def log_full(
    model: models.VAEModel, ds: data.Dataset, run: TrialRun, experiment_id: str, name: str = "model",
    params: dict[str, Any] | None = None, *, step: int = 0, kl: np.ndarray | None = None,
    standalone: bool = False, charts: bool = True,
) -> None:
    """The costly set: the PCA and KL charts (unless `charts` is False: the run has them) and
    a logged model of the study's experiment (not the process's active one) named `name`,
    with `params`, output at `step`; the light one, or with `standalone` the `pt2` one, which
    replaces it. `kl`: `log_trial`'s result, not computed again."""
    x = ds.test.x
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if charts:
            if "codes" in models.capabilities(model):
                means = metrics.posterior_means(model, x)
                run.log_artifact(figures.latent_pca(means, ds.test.y.numpy(), folder / "latent_pca.png"))
            if gaussian_vae(model):
                kl = metrics.kl_per_dim(model, x) if kl is None else kl
                run.log_artifact(figures.kl_per_dim(kl, folder / "kl_per_dim.png"))
        model.cpu().eval()  # saved on the CPU, with a CPU example, wherever it was trained
        example, params = x[:2].cpu().numpy(), {k: str(v) for k, v in (params or {}).items()}
        if standalone:
            _log_standalone(run, experiment_id, name, params, step, model, example)
            run.delete_models(experiment_id, LIGHT_TYPE)  # one model per trial: it replaces the light one
        elif run.tags().get(MODEL_FORMAT) != "pt2":  # else another worker's end of study came first
            _log_light(run, experiment_id, name, params, step, model, example, folder)


def _requirements() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}"]


def _log_standalone(run: TrialRun, experiment_id: str, name: str, params: dict[str, str], step: int,
                    model: models.VAEModel, example: np.ndarray) -> None:
    # Not loaded back and run on the example as MLflow's Model.log would (a third of the
    # cost): the tests load and run the models instead.
    run.log_model(mlflow.pytorch, experiment_id, name, params, step, "pt2", pytorch_model=model,
                  input_example=example, serialization_format="pt2", pip_requirements=_requirements())


def _log_light(run: TrialRun, experiment_id: str, name: str, params: dict[str, str], step: int,
               model: models.VAEModel, example: np.ndarray, folder: Path) -> None:
    weights, config = folder / "weights.safetensors", folder / "config.json"
    files = dict(zip(LIGHT_ARTIFACTS, [str(weights), str(config)]))
    if source := plugins.source_file(model.config["arch"]):  # a plugin's model loads with its file
        files[LIGHT_PLUGIN] = source
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    config.write_text(json.dumps(model.config))
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    with warnings.catch_warnings():  # the signature is given: an example would only be run
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        run.log_model(mlflow.pyfunc, experiment_id, name, params, step, "vaebench", model_type=LIGHT_TYPE,
                      python_model=str(LIGHT_MODEL),
                      signature=signature, artifacts=files,
                      pip_requirements=[f"vaebench=={__version__}", *_requirements()])


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
