"""A trial's MLflow model in its light form: vaebench's own weights, loaded by vaebench.

MLflow "models from code": MLflow copies this file into the model and runs it on
`mlflow.pyfunc.load_model`, which needs vaebench installed. Logging one costs a fraction of
torch.export (no tracing), so every trial gets one; the study's best trial gets the
standalone `pt2` model too (see vaebench.tracking.artifacts). `predict` returns what the `pt2`
model's forward returns: the reconstruction (decoder mean) of a batch in [0, 1].
"""
from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

WEIGHTS, CONFIG = "weights", "config"  # its artifacts (vaebench.tracking.artifacts.LIGHT_ARTIFACTS): safetensors
# weights and the JSON config of vaebench.models.build
PLUGIN = "plugin"  # a plugin's model also carries its plugin file (artifacts.LIGHT_PLUGIN), run before the build


class VAEPythonModel(PythonModel):
    # MLflow's own switch (a private name, used in this module only): predict takes a batch
    # array, described by the logged signature, not the list of records that MLflow's type-hint
    # validation expects; without it MLflow warns at every load that predict has no hints.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import json

        from safetensors.torch import load_file

        from vaebench import models
        from vaebench.models import plugins

        if PLUGIN in context.artifacts:  # registers the model's name (once per process, whatever the path)
            plugins.load_file(context.artifacts[PLUGIN])
        with open(context.artifacts[CONFIG]) as fh:
            self.model = models.build(**json.load(fh))
        self.model.load_state_dict(load_file(context.artifacts[WEIGHTS]))
        self.model.eval()

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow would read hints as a schema
        import numpy as np
        import torch

        with torch.no_grad():
            return self.model(torch.as_tensor(np.asarray(model_input), dtype=torch.float32)).numpy()


mlflow.models.set_model(VAEPythonModel())
