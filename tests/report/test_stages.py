"""vaebench.report.stages: the stage-end curve, and the report's section built from a real study."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import run_cli
from scipy import stats

from vaebench import report

from vaebench.report import stages


def test_the_curve_is_the_mean_and_student_t_interval_over_seeds_at_each_stage_end() -> None:
    points = pd.DataFrame({"config": ["a", "a", "a", "a", "b"], "seed": [0, 1, 0, 1, 0],
                           "epoch": [1, 1, 4, 4, 1], stages.METRIC: [-10.0, -12.0, -8.0, -8.5, -20.0]})
    table = stages.curve(points).set_index(["config", "epoch"])
    assert table.loc[("a", 1), "mean"] == -11.0 and table.loc[("a", 1), "n"] == 2
    assert table.loc[("a", 1), "ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.sqrt(2) / np.sqrt(2))
    assert np.isnan(table.loc[("b", 1), "ci95"])  # one seed: no interval
    lines = stages.markdown(stages.curve(points), 5000, 1000)
    assert "| config | epoch 1 | epoch 4 |" in lines
    assert "| b | -20.00 |  |" in lines  # b has no epoch-4 point


def test_a_study_with_stage_points_gets_the_stage_table_and_stages_csv(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "staged.yaml"
    study.write_text(yaml.safe_dump({
        "name": "staged", "dataset": {"name": "digits"},
        "model": {"arch": "mlp", "objective": "vae", "latent_dim": 2, "likelihood": "bernoulli", "hidden": [16]},
        "train": {"epochs": 4, "batch_size": 256, "lr": 3e-3, "schedule": {"name": "staged", "stages": 3, "growth": 3}},
        "eval": {"iwae_k": 4, "stage_points": 30},
        "search": {"sampler": "grid", "space": {"seed": [0, 1]}},
    }))
    code, _, err = run_cli(tmp_path, study, "--artifacts", "best", "--results", str(tmp_path / "results"))
    assert code == 0, err
    folder = tmp_path / "results" / "staged"
    points = pd.read_csv(folder / "stages.csv")
    assert sorted(points["epoch"].unique()) == [1, 4] and len(points) == 4  # stage ends 1 and 1 + 3
    text = (folder / "report.md").read_text()
    assert "## Schedule stages" in text and "k = 4 importance samples, first 30 test examples" in text
    record = report.load_record(f"sqlite:///{tmp_path / 'mlflow.db'}", "staged")
    final = record.finished.set_index("trial")[stages.METRIC]  # the latest value: the epoch-4 point
    last = points[points["epoch"] == 4].set_index("trial")[stages.METRIC]
    assert np.allclose(last.sort_index(), final.sort_index())
