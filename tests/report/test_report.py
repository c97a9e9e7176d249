"""Reports: seed-aware aggregation, the Markdown table, and the results folder of a real study."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from helpers import vaebench
from vaebench import report

T_975_DF2 = 4.302653  # Student t quantile 0.975 with 2 degrees of freedom (statistical tables)
T_975_DF3 = 3.182446


def trials(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"trial": i, **r} for i, r in enumerate(rows)])


def test_aggregate_against_hand_computed_values() -> None:
    df = trials([
        {"param.model.beta": "1.0", "param.seed": "0", "m": 1.0},
        {"param.model.beta": "1.0", "param.seed": "1", "m": 2.0},
        {"param.model.beta": "1.0", "param.seed": "2", "m": 3.0},
        {"param.model.beta": "4.0", "param.seed": "0", "m": 10.0},
        {"param.model.beta": "4.0", "param.seed": "1", "m": 14.0},
        {"param.model.beta": "4.0", "param.seed": "2", "m": 12.0},
        {"param.model.beta": "4.0", "param.seed": "3", "m": 16.0},
    ])
    out = report.aggregate(df, ["param.model.beta"], ["m"]).set_index("param.model.beta")
    # beta=1: mean 2, sample std 1, CI half-width t(0.975, 2) * 1 / sqrt(3)
    assert out.loc["1.0", "m_mean"] == pytest.approx(2.0)
    assert out.loc["1.0", "m_std"] == pytest.approx(1.0)
    assert out.loc["1.0", "m_ci95"] == pytest.approx(T_975_DF2 / math.sqrt(3), rel=1e-5)
    assert out.loc["1.0", "m_n"] == 3 and out.loc["1.0", "seeds"] == "0 1 2"
    # beta=4: mean 13, sample variance (9+1+1+9)/3 = 20/3
    assert out.loc["4.0", "m_mean"] == pytest.approx(13.0)
    assert out.loc["4.0", "m_std"] == pytest.approx(math.sqrt(20 / 3))
    assert out.loc["4.0", "m_ci95"] == pytest.approx(T_975_DF3 * math.sqrt(20 / 3) / 2, rel=1e-5)
    assert out.loc["4.0", "n_seeds"] == 4 and out.loc["4.0", "trials"] == "3 4 5 6"


def test_single_seed_and_missing_values_stay_empty() -> None:
    df = trials([
        {"param.model.beta": "1.0", "param.seed": "0", "m": 5.0, "only_some": np.nan},
        {"param.model.beta": "1.0", "param.seed": "1", "m": 7.0, "only_some": 3.0},
        {"param.model.beta": "2.0", "param.seed": "0", "m": 1.0, "only_some": np.nan},
    ])
    out = report.aggregate(df, ["param.model.beta"], ["m", "only_some"]).set_index("param.model.beta")
    assert out.loc["1.0", "only_some_n"] == 1 and out.loc["1.0", "only_some_mean"] == 3.0
    assert math.isnan(out.loc["1.0", "only_some_std"]) and math.isnan(out.loc["1.0", "only_some_ci95"])
    assert out.loc["2.0", "only_some_n"] == 0 and math.isnan(out.loc["2.0", "only_some_mean"])  # never 0
    assert math.isnan(out.loc["2.0", "m_ci95"])  # one seed: no interval


def test_grouping_ignores_seed_only() -> None:
    df = trials([
        {"param.model.beta": "1.0", "param.train.lr": "0.001", "param.seed": "0", "m": 1.0},
        {"param.model.beta": "1.0", "param.train.lr": "0.001", "param.seed": "1", "m": 3.0},
        {"param.model.beta": "1.0", "param.train.lr": "0.01", "param.seed": "0", "m": 5.0},
        {"param.model.beta": "2.0", "param.train.lr": "0.001", "param.seed": "0", "m": 7.0},
    ])
    record = report.StudyRecord("s", "x", None, df.assign(state="COMPLETE", run_name="r", run_id="i"),
                                "m", "maximize", {"model.beta": [1.0, 2.0], "train.lr": [0.001, 0.01], "seed": [0, 1]})
    board = report.per_config(record)
    assert len(board) == 3
    assert sorted(board["n_seeds"]) == [1, 1, 2]
    assert list(board["m_mean"]) == [7.0, 5.0, 2.0]  # maximised: best first
    assert board.loc[board["m_mean"] == 2.0, "config"].item() == "beta=1 lr=0.001"


def test_ci_shrinks_with_more_seeds() -> None:
    assert report.ci95(1.0, 10) < report.ci95(1.0, 3) < report.ci95(1.0, 2)


def test_markdown_table_parses_back_to_the_csv(smoke: Path) -> None:
    folder = smoke / "results" / "smoke"
    board = pd.read_csv(folder / "leaderboard.csv")
    text = (folder / "report.md").read_text()
    table = text[text.index("| rank | config"):]
    parsed = report.parse_markdown_table(table.split("\n\n")[0])
    assert list(parsed["config"]) == list(board["config"])
    for _, (row, csv_row) in enumerate(zip(parsed.to_dict("records"), board.to_dict("records"))):
        assert "test_iwae_ll" not in row  # not measured by the smoke study: no column
        for metric in ("val_elbo", "test_elbo", "test_kl", "test_nmi", "test_active_units"):
            mean, ci = (float(v) for v in row[metric].split(" ± "))
            assert mean == pytest.approx(csv_row[f"{metric}_mean"], abs=0.006)
            assert ci == pytest.approx(csv_row[f"{metric}_ci95"], abs=0.006)


def test_report_references_only_files_that_exist(smoke: Path) -> None:
    folder = smoke / "results" / "smoke"
    text = (folder / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    images = [l for l in links if l.endswith(".png")]
    assert {"figures/rate_distortion.png", "figures/metrics_vs_beta.png", "figures/best_reconstructions.png",
            "figures/best_samples.png", "figures/best_latent_pca.png", "figures/best_traversals.png",
            "figures/optuna/optimization_history.png"} <= set(images)
    for link in links:
        assert (folder / link).is_file(), link
    assert (folder / "figures" / "optuna" / "optimization_history.html").is_file()
    for heading in ("## Settings", "## Leaderboard", "## Best configuration", "## Budget", "## Environment",
                    "## Reproduce"):
        assert text.count(f"\n{heading}\n") == 1, heading
    assert "python -m vaebench run --study" in text and "dataset fingerprint" in text
    commit = json.loads((folder / "manifest.json").read_text())["vaebench"]["git"]["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and f"- run by vaebench at git commit `{commit}`" in text


def test_report_rebuilds_from_the_tracking_store_alone(smoke: Path, tmp_path: Path) -> None:
    (smoke / "optuna.db").rename(smoke / "optuna.db.away")  # no Optuna storage, no retraining
    try:
        result = vaebench(smoke, "report", "--study", "smoke", "--results", str(tmp_path / "out"))
    finally:
        (smoke / "optuna.db.away").rename(smoke / "optuna.db")
    assert result.returncode == 0, result.stderr
    rebuilt = tmp_path / "out" / "smoke"
    assert pd.read_csv(rebuilt / "leaderboard.csv").equals(pd.read_csv(smoke / "results" / "smoke" / "leaderboard.csv"))
    assert (rebuilt / "figures" / "optuna" / "param_importances.png").is_file()


def test_report_of_unknown_study_exits_2_and_writes_nothing(smoke: Path, tmp_path: Path) -> None:
    result = vaebench(smoke, "report", "--study", "nope", "--results", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "nope" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_study_whose_choices_set_objective_and_hyperparameters_together(tmp_path: Path) -> None:
    """A mapping choice under `model` (as in studies/disentangle.yaml): each trial gets only the
    settings its objective takes, the leaderboard tells the configurations apart by the keys
    the mappings set, and the report, Optuna figures included, is built."""
    import yaml

    (tmp_path / "pairs.yaml").write_text(yaml.safe_dump({
        "name": "pairs", "dataset": {"name": "digits"},
        "model": {"arch": "mlp", "objective": "vae", "latent_dim": 2, "hidden": [16]},
        "train": {"epochs": 1, "batch_size": 256},
        "search": {"sampler": "grid", "space": {
            "model": [{"objective": "beta_vae", "beta": 4.0}, {"objective": "annealed_vae", "c_max": 5.0}],
            "seed": [0, 1]}},
    }, sort_keys=False))
    result = vaebench(tmp_path, "run", "--study", "pairs.yaml", "--no-progress")
    assert result.returncode == 0, result.stderr
    board = pd.read_csv(tmp_path / "results" / "pairs" / "leaderboard.csv")
    assert sorted(board["config"]) == ["objective=annealed_vae c_max=5", "objective=beta_vae beta=4"]
    assert list(board["n_seeds"]) == [2, 2]
    annealed = board.set_index("config").loc["objective=annealed_vae c_max=5"]
    assert pd.isna(annealed["param.model.beta"]) and annealed["param.model.c_max"] == 5.0
    folder = tmp_path / "results" / "pairs"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pairs").experiment_id], "tags.`vaebench.role` = 'trial'")
    assert len(runs) == 4
    best = max(runs, key=lambda r: r.data.metrics["val_elbo"])
    for run in runs:  # by default every trial gets the charts and an MLflow model: the best one standalone (pt2)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"latent_pca.png", "traversals.png", "kl_per_dim.png", "weights"} <= artifacts
        assert run.data.tags["vaebench.model_uri"].startswith("models:/")
        assert run.data.tags["vaebench.model_format"] == ("pt2" if run is best else "vaebench")
    experiment = client.get_experiment_by_name("pairs").experiment_id
    assert len(client.search_logged_models(experiment_ids=[experiment])) == 4  # one per trial
    import mlflow.pyfunc
    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    x = torch.zeros(2, 1, 8, 8)
    for run in runs:  # every trial's model loads back and reconstructs
        uri = run.data.tags["vaebench.model_uri"]
        out = mlflow.pytorch.load_model(uri)(x) if run is best else mlflow.pyfunc.load_model(uri).predict(x.numpy())
        assert tuple(out.shape) == tuple(x.shape)
    assert folder.is_dir() and (folder / "figures" / "metrics_vs_objective.png").is_file()
    assert (folder / "figures" / "rate_distortion.png").is_file()  # coloured by configuration
    assert "model.c_max" not in (folder / "report.md").read_text().split("fixed settings")[1].split("\n")[0]
    assert (folder / "figures" / "optuna" / "optimization_history.png").is_file()


def test_the_reproduce_commands_name_a_shipped_study_and_ask_for_the_data_folder_it_needs() -> None:
    lines = report.reproduce_lines("burda_mnist_cpu", "/elsewhere/studies/burda_mnist_cpu.yaml", False, needs_data=True)
    assert "python -m vaebench run --study burda_mnist_cpu --data-dir DIR" in lines
    lines = report.reproduce_lines("mine", "/home/me/mine.yaml", True)
    assert "python -m vaebench run --study /home/me/mine.yaml" in lines
    assert any(line.startswith("python -m vaebench replay results/mine ") for line in lines)
