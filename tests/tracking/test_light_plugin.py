"""A plugin's model as a trial's light MLflow model: logged with its plugin file, it loads back,
in this process and in a fresh one that never saw the plugin, and gives the same outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch

from vaebench import data, models
from vaebench.models import plugins
from vaebench.tracking import MODEL_URI, StudyTracker, artifacts, resolve_tracking_uri

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "vampprior" / "model.py"
LOAD = "import sys, numpy as np, mlflow.pyfunc; np.save(sys.argv[2], mlflow.pyfunc.load_model(sys.argv[1]).predict(np.load(sys.argv[3])))"


def test_a_plugin_model_is_logged_with_its_plugin_file_and_loads_back_anywhere(tmp_path: Path) -> None:
    plugins.load_file(PLUGIN)
    ds = data.load("digits", seed=0)
    torch.manual_seed(0)
    model = models.build("vampprior", latent_dim=3, input_shape=ds.input_shape, hidden=(16,), components=4).eval()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    resolve_tracking_uri(uri)
    tracker = StudyTracker.open(uri, "writer")
    run = tracker.start_trial(tracker.create_parent({}, {}), 0, "t000", {})
    artifacts.log_full(model, ds, run, tracker.experiment_id, "t000", charts=False)
    model_uri = run.tags()[MODEL_URI]
    x = ds.test.x[:5]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.array_equal(mlflow.pyfunc.load_model(model_uri).predict(x.numpy()), expected)  # same process: run once

    np.save(tmp_path / "x.npy", x.numpy())
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD, model_uri, str(tmp_path / "out.npy"), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)
