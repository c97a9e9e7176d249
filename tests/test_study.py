"""End to end: the CLI runs a real study into real MLflow and Optuna stores in a temp folder.

The smoke study runs once per module as a user would (`python -m vaebench run`, MLflow's
default store in the current folder); the tests then read what landed.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from helpers import REPO, vaebench

REQUIRED_METRICS = {
    "train_loss", "val_elbo", "val_recon", "val_kl", "test_elbo", "test_recon", "test_kl",
    "test_nmi", "test_ari", "test_cluster_acc", "test_silhouette", "test_probe_acc",
    "train_samples_per_s", "eval_samples_per_s", "n_params", "train_seconds",
}


def client_for(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def runs_of(cwd: Path, study: str = "smoke") -> tuple[object, list]:
    client = client_for(cwd)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("vaebench.role") == "study"]
    children = [r for r in runs if r.data.tags.get("vaebench.role") == "trial"]
    return parents, children


def test_default_stores_are_in_the_current_folder(smoke: Path) -> None:
    assert (smoke / "mlflow.db").is_file() and (smoke / "optuna.db").is_file()
    assert (smoke / "mlruns").is_dir()
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke / 'optuna.db'}")
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_one_parent_and_one_nested_child_per_trial(smoke: Path) -> None:
    parents, children = runs_of(smoke)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke / 'optuna.db'}")
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["vaebench.state"] == "COMPLETE"
        number, beta = int(child.data.tags["vaebench.trial_number"]), float(child.data.params["model.beta"])
        assert child.info.run_name == f"t{number:03d} beta={beta:g} seed={child.data.params['seed']}"


def test_children_are_comparable_side_by_side(smoke: Path) -> None:
    _, children = runs_of(smoke)
    param_keys = [set(c.data.params) for c in children]
    metric_keys = [set(c.data.metrics) for c in children]
    assert all(k == param_keys[0] for k in param_keys) and all(k == metric_keys[0] for k in metric_keys)
    assert REQUIRED_METRICS <= metric_keys[0]
    assert {"model.beta", "seed", "dataset.name", "model.arch", "train.lr", "train.epochs"} <= param_keys[0]
    assert sorted((float(c.data.params["model.beta"]), c.data.params["seed"]) for c in children) == [
        (1.0, "0"), (1.0, "1"), (4.0, "0"), (4.0, "1")]
    for child in children:
        tags = child.data.tags
        assert len(tags["vaebench.dataset_fingerprint"]) == 16
        assert {"vaebench.torch_version", "vaebench.device", "vaebench.seed", "vaebench.trial_number"} <= set(tags)


def test_per_epoch_history_and_artifacts(smoke: Path) -> None:
    client = client_for(smoke)
    _, children = runs_of(smoke)
    epochs = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())["train"]["epochs"]
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_elbo")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"reconstructions.png", "samples.png", "traversals.png", "kl_per_dim.csv", "weights"} <= artifacts


def test_best_trial_alone_gets_charts_and_a_loadable_model_in_its_experiment(smoke: Path) -> None:
    """Every trial keeps its weights; only the best one (by val_elbo) gets the costly set,
    rebuilt from those weights, its MLflow model created in the study's experiment."""
    import mlflow.pytorch
    import torch

    client = client_for(smoke)
    _, children = runs_of(smoke)
    best = max(children, key=lambda c: c.data.metrics["val_elbo"])
    for child in children:
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        has_full = {"latent_pca.png", "kl_per_dim.png"} <= artifacts
        assert has_full == ("vaebench.model_uri" in child.data.tags) == (child.info.run_id == best.info.run_id)
        weights = client.download_artifacts(child.info.run_id, "weights/state_dict.pt", str(smoke / "dl" / child.info.run_id))
        assert any(k.startswith("encoder") for k in torch.load(weights, weights_only=True))
    experiment = client.get_experiment_by_name("smoke").experiment_id
    logged = client.search_logged_models(experiment_ids=[experiment])
    assert [m.source_run_id for m in logged] == [best.info.run_id]
    assert not client.search_logged_models(experiment_ids=["0"])  # nothing strays into Default
    mlflow.set_tracking_uri(f"sqlite:///{smoke / 'mlflow.db'}")
    model = mlflow.pytorch.load_model(best.data.tags["vaebench.model_uri"])
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        reconstruction = model(x)
    assert reconstruction.shape == x.shape and 0 <= float(reconstruction.min()) <= float(reconstruction.max()) <= 1


def test_trials_csv_equals_the_tracked_metrics(smoke: Path) -> None:
    board = pd.read_csv(smoke / "results" / "smoke" / "trials.csv")
    assert list(board["rank"]) == [1, 2, 3, 4]
    assert board["val_elbo"].is_monotonic_decreasing  # maximised objective, best first
    _, children = runs_of(smoke)
    by_id = {c.info.run_id: c for c in children}
    assert set(board["run_id"]) == set(by_id)
    for _, row in board.iterrows():
        tracked = by_id[row["run_id"]].data.metrics
        for name in REQUIRED_METRICS:
            assert row[name] == pytest.approx(tracked[name], rel=1e-12), name


def test_leaderboard_groups_seeds_per_configuration(smoke: Path) -> None:
    board = pd.read_csv(smoke / "results" / "smoke" / "leaderboard.csv")
    trials = pd.read_csv(smoke / "results" / "smoke" / "trials.csv")
    assert list(board["rank"]) == [1, 2] and list(board["n_seeds"]) == [2, 2]
    assert sorted(board["config"]) == ["beta=1", "beta=4"]
    assert board["val_elbo_mean"].is_monotonic_decreasing
    for _, row in board.iterrows():
        mine = trials[trials["param.model.beta"] == row["param.model.beta"]]
        assert row["test_elbo_mean"] == pytest.approx(mine["test_elbo"].mean(), rel=1e-12)
        assert row["test_elbo_std"] == pytest.approx(mine["test_elbo"].std(ddof=1), rel=1e-12)
        assert row["test_elbo_n"] == 2


def test_leaderboard_command_rebuilds_the_same_csvs(smoke: Path) -> None:
    for extra, name in (((), "leaderboard.csv"), (("--per-trial",), "trials.csv")):
        out = smoke / f"again-{name}"
        result = vaebench(smoke, "leaderboard", "--study", "smoke", "--out", str(out), *extra)
        assert result.returncode == 0, result.stderr
        assert pd.read_csv(out).equals(pd.read_csv(smoke / "results" / "smoke" / name))


def test_leaderboard_and_report_take_the_study_file_run_takes(smoke: Path, folder: Path) -> None:
    """A YAML path means the study its `name:` gives, wherever the file is and whatever it is called."""
    from vaebench import cli

    study_file = folder / "renamed.yaml"
    study_file.write_text((REPO / "studies" / "smoke.yaml").read_text())
    store = ["--tracking-uri", f"sqlite:///{smoke / 'mlflow.db'}"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["leaderboard", "--study", str(study_file), "--out", "board.csv", *store]) == 0
        assert cli.main(["report", "--study", "renamed.yaml", "--results", "out", *store]) == 0
        assert cli.main(["leaderboard", "--study", "renamed.yaml", *store]) == 0
    expected = pd.read_csv(smoke / "results" / "smoke" / "leaderboard.csv")
    assert pd.read_csv(folder / "board.csv").equals(expected)
    assert pd.read_csv(folder / "out" / "smoke" / "leaderboard.csv").equals(expected)
    assert pd.read_csv(folder / "results" / "smoke" / "leaderboard.csv").equals(expected)


def test_tensorboard_event_files(smoke: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted((smoke / "tb" / "smoke").iterdir())
    assert len(runs) == 4
    events = EventAccumulator(str(runs[0])).Reload()
    assert {"val_elbo", "train_loss", "test_elbo"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_elbo")] == [1, 2]
    assert {"reconstructions", "samples"} <= set(events.Tags()["images"])


def test_running_again_adds_no_trials(smoke: Path) -> None:
    result = vaebench(smoke, "run", "--study", "smoke", "--no-progress")
    assert result.returncode == 0, result.stderr
    parents, children = runs_of(smoke)
    assert len(parents) == 1 and len(children) == 4


def test_interrupted_study_resumes_to_its_total(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    spec["name"] = "resume"
    spec["train"]["epochs"] = 1
    spec["search"] = {"sampler": "random", "n_trials": 3, "objective": "val_elbo",
                      "space": {"model.beta": {"low": 0.5, "high": 4.0}}}
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump(spec))
    first = vaebench(tmp_path, "run", "--study", "resume.yaml", "--trials", "2", "--no-progress")
    assert first.returncode == 0, first.stderr
    second = vaebench(tmp_path, "run", "--study", "resume.yaml", "--no-progress")
    assert second.returncode == 0, second.stderr
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    parents, children = runs_of(tmp_path, "resume")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(c.data.tags["vaebench.trial_number"]) for c in children) == [0, 1, 2]


def test_bad_study_file_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    spec["model"]["latnt_dim"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    result = vaebench(tmp_path, "run", "--study", "bad.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == ("vaebench: error: bad.yaml: model.latnt_dim: unknown setting for arch 'mlp' with "
                                     "objective 'beta_vae' (it takes: activation, arch, beta, hidden, latent_dim, "
                                     "likelihood, objective)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_bad_flag_exits_2(tmp_path: Path) -> None:
    result = vaebench(tmp_path, "run", "--study", "smoke", "--trials", "zero")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_list_shows_registries_and_studies(tmp_path: Path) -> None:
    result = vaebench(tmp_path, "list")
    assert result.returncode == 0
    for name in ("mlp", "conv", "tutorial_mlp", "ae", "vae", "beta_vae", "bernoulli", "gaussian",
                 "digits", "mnist5k", "beta_sweep", "smoke"):
        assert name in result.stdout
