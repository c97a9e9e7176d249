"""mlflow_view.py: the study's saved runs-page view and its link, from constructed studies;
and tracking_ui.py, which fills what the MLflow UI shows, on a real SQLite store."""
from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow import MlflowClient

import mlflow.pytorch
import torch
from mlflow.entities import LoggedModelStatus, Metric

from vaebench import data, tracking

from vaebench.tracking import view as mlflow_view

from vaebench.tracking import ui as tracking_ui
from vaebench.config import StudySpec


def study(space: dict[str, Any], direction: str = "maximize", objective: str = "val_elbo",
          model: dict[str, Any] | None = None) -> StudySpec:
    return StudySpec.model_validate({
        "name": "s", "description": "a study", "dataset": {"name": "digits"},
        "model": model or {"objective": "beta_vae", "beta": 1.0},
        "search": {"sampler": "grid", "objective": objective, "direction": direction, "space": space},
    })


BETA_SEED = {"model.beta": [0.5, 4.0], "seed": [0, 1, 2]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One store for the module (creating one costs seconds); each test its own experiments."""
    tracking.quiet()
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracking.resolve_tracking_uri(uri)  # log_model writes through MLflow's global URI, as in a study
    return MlflowClient(uri)


@pytest.fixture
def client(store: MlflowClient) -> MlflowClient:
    return store


def fresh(client: MlflowClient, name: str = "x") -> str:
    """A new experiment in the module's store."""
    return client.create_experiment(f"{name}-{uuid.uuid4().hex}")


# -- the view ---------------------------------------------------------------------------

def test_swept_params_are_the_logged_params_and_groups_leave_out_the_seed() -> None:
    spec = study({"model": [{"objective": "beta_vae", "beta": 4.0}, {"objective": "vae"}], "seed": [0, 1]},
                 model={"objective": "vae"})
    assert mlflow_view.swept_params(spec) == ["model.objective", "model.beta", "seed"]
    assert mlflow_view.group_params(spec) == ["model.objective", "model.beta"]


@pytest.mark.parametrize(("direction", "ascending"), [("maximize", False), ("minimize", True)])
def test_the_view_sorts_by_the_objective_in_its_direction(direction: str, ascending: bool) -> None:
    state = mlflow_view.view_state(study(BETA_SEED, direction, "val_recon"))
    assert state["orderByKey"] == "metrics.`val_recon`" and state["orderByAsc"] is ascending


def test_the_view_shows_trials_grouped_by_the_swept_params_but_the_seed() -> None:
    state = mlflow_view.view_state(study(BETA_SEED))
    assert state["searchFilter"] == f"tags.`{tracking.ROLE}` = 'trial'"
    assert state["groupBy"] == {"aggregateFunction": "average",
                                "groupByKeys": [{"mode": "param", "groupByData": "model.beta"}]}
    assert state["selectedColumns"][:6] == ["params.`model.beta`", "params.`seed`", "metrics.`val_elbo`",
                                            "metrics.`test_elbo`", "metrics.`test_recon`", "metrics.`test_kl`"]
    assert state["runsHiddenMode"] == "SHOW_ALL"  # every run in the charts, not the first ten


def test_a_seed_only_sweep_is_not_grouped() -> None:
    assert mlflow_view.view_state(study({"seed": [0, 1]}))["groupBy"] is None


def test_the_charts_are_the_curves_the_scatter_the_parallel_coordinates_and_the_bars() -> None:
    cards = mlflow_view.charts(study(BETA_SEED))
    assert [(c["type"], c.get("metricKey")) for c in cards] == [
        ("LINE", "val_elbo"), ("LINE", "val_kl"), ("LINE", "val_recon"), ("SCATTER", None), ("PARALLEL", None),
        ("BAR", "test_elbo"), ("BAR", "test_recon"), ("BAR", "test_kl")]
    scatter, parallel = cards[3], cards[4]
    assert (scatter["xaxis"]["key"], scatter["yaxis"]["key"]) == ("test_recon", "test_kl")
    assert parallel["selectedParams"] == ["model.beta"] and parallel["selectedMetrics"] == ["val_elbo"]
    assert len({c["uuid"] for c in cards}) == len(cards)
    sections = {s["uuid"] for s in mlflow_view.view_state(study(BETA_SEED))["compareRunSections"]}
    assert {c["metricSectionId"] for c in cards} <= sections


def test_an_objective_among_the_curves_is_drawn_once() -> None:
    cards = mlflow_view.charts(study(BETA_SEED, "minimize", "val_kl"))
    assert [c["metricKey"] for c in cards if c["type"] == "LINE"] == ["val_kl", "val_recon"]


def test_the_tag_is_the_envelope_the_ui_reads() -> None:
    """The UI's check: a string `name`, a number `createdAt`, a string `state` of JSON."""
    spec = study(BETA_SEED)
    key, value = mlflow_view.view_tag(spec, now_ms=1_700_000_000_000)
    envelope = json.loads(value)
    assert key == "mlflow.sharedViewState." + mlflow_view.VIEW_KEY
    assert isinstance(envelope["name"], str) and envelope["createdAt"] == envelope["updatedAt"] == 1_700_000_000_000
    assert json.loads(envelope["state"]) == mlflow_view.view_state(spec)
    assert len(value) < 20_000  # the UI refuses to save a larger view


def test_the_link_opens_the_runs_in_model_training_mode_with_the_view() -> None:
    url = urlsplit(mlflow_view.runs_url("http://127.0.0.1:5000/", "7"))
    route, query = url.fragment.split("?")
    assert url.netloc == "127.0.0.1:5000" and route == "/experiments/7/runs"
    assert parse_qs(query) == {"workflowType": ["machine_learning"], "viewStateShareKey": [mlflow_view.VIEW_KEY]}
    bare = parse_qs(mlflow_view.runs_url("http://h:1", "7", with_view=False, charts=True).split("?", 1)[1])
    assert bare == {"workflowType": ["machine_learning"], "compareRunsMode": ["CHART"]}


@pytest.mark.parametrize(("version", "supported"), [("3.17.0", True), ("3.17.2", True), ("3.16.1", False), ("3.18.0", False)])
def test_the_view_is_written_only_for_tested_mlflow_versions(version: str, supported: bool) -> None:
    assert mlflow_view.view_supported(version) is supported


def test_seeds_of_one_configuration_share_a_colour() -> None:
    spec = study(BETA_SEED)
    colours = {(b, s): mlflow_view.run_color(spec, {"model.beta": b, "seed": s}) for b in (0.5, 4.0) for s in (0, 1, 2)}
    assert colours[(0.5, 0)] == colours[(0.5, 2)] != colours[(4.0, 0)] == colours[(4.0, 1)]


def test_a_range_is_coloured_by_where_the_value_lies() -> None:
    spec = StudySpec.model_validate({
        "name": "s", "dataset": {"name": "digits"},
        "search": {"sampler": "random", "n_trials": 3, "space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
    })
    assert mlflow_view.run_color(spec, {"train.lr": 1e-4}) == mlflow_view.PALETTE[0]
    assert mlflow_view.run_color(spec, {"train.lr": 1e-2}) == mlflow_view.PALETTE[-1]
    assert mlflow_view.run_color(spec, {"train.lr": 10 ** -2.9}) == mlflow_view.PALETTE[5]  # 55% of the way, in logs


def test_study_links_name_each_study_and_open_its_view_where_written(client: MlflowClient) -> None:
    tag = uuid.uuid4().hex
    with_view, without = client.create_experiment(f"{tag}-b"), client.create_experiment(f"{tag}-a")
    assert tracking_ui.save_view(tracking.StudyTracker(client, with_view, "b"), study(BETA_SEED))
    links = mlflow_view.study_links(client.tracking_uri, "http://127.0.0.1:5000")
    assert "Default" not in dict(links)
    assert [link for link in links if link[0].startswith(tag)] == [
        (f"{tag}-a", mlflow_view.runs_url("http://127.0.0.1:5000", without, with_view=False)),
        (f"{tag}-b", mlflow_view.runs_url("http://127.0.0.1:5000", with_view)),
    ]


# -- what tracking_ui.py writes for the UI -------------------------------------------------

def test_save_view_writes_the_tag_only_for_a_tested_version(client: MlflowClient) -> None:
    experiment = fresh(client)
    tracker = tracking.StudyTracker(client, experiment, "x")
    assert not tracking_ui.save_view(tracker, study(BETA_SEED), mlflow_version="3.18.0")
    assert not any(k.startswith("mlflow.sharedViewState.") for k in client.get_experiment(experiment).tags)
    assert tracking_ui.save_view(tracker, study(BETA_SEED), mlflow_version="3.17.2")
    value = client.get_experiment(experiment).tags["mlflow.sharedViewState." + mlflow_view.VIEW_KEY]
    assert json.loads(json.loads(value)["state"]) == mlflow_view.view_state(study(BETA_SEED))


def test_log_dataset_records_the_fingerprint_source_shapes_and_context(client: MlflowClient) -> None:
    ds = data.load("digits", seed=0)
    run = tracking.TrialRun(client, client.create_run(fresh(client)).info.run_id)
    assert tracking_ui.log_dataset(run, ds, "vaebench.data:digits") == ("digits", ds.fingerprint)
    (logged,) = client.get_run(run.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("digits", ds.fingerprint)
    assert json.loads(logged.dataset.source) == {"uri": "vaebench.data:digits"}
    assert json.loads(logged.dataset.profile) == {f"{s}_shape": list(ds.split(s).x.shape) for s in data.SPLITS}
    features = json.loads(json.loads(logged.dataset.schema)["mlflow_tensorspec"]["features"])
    assert features[0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "training")]


@pytest.mark.parametrize("reopened", [False, True], ids=["same-run-object", "reopened-run"])
def test_final_metrics_are_at_step_0_and_the_logged_model_links_them_with_the_dataset(
    client: MlflowClient, reopened: bool,
) -> None:
    ds = data.load("digits", seed=0)
    experiment = fresh(client)
    run = tracking.TrialRun(client, client.create_run(experiment).info.run_id)
    tracking_ui.log_dataset(run, ds, "vaebench.data:digits")
    run.log_metrics({"test_elbo": -41.5}, step=2)  # an earlier epoch: not linked
    run.log_metrics({"test_elbo": -40.0, "val_elbo": -41.0}, step=3)  # the last epoch
    run.log_final({"test_elbo": -30.5, "test_kl": float("nan")})
    if reopened:  # the study's best model is logged from a new object: links read MLflow back
        run = tracking.TrialRun(client, run.run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "test_elbo")] == [(2, -41.5), (3, -40.0), (0, -30.5)]
    assert "test_kl" not in client.get_run(run.run_id).data.metrics  # not computed: left out, never NaN
    uri = run.log_model(mlflow.pytorch, experiment, "t005-beta0p5-seed1", {"model.beta": 0.5, "seed": 1}, step=3,
                        model_format="pt2", pytorch_model=torch.nn.Linear(2, 1),
                        input_example=torch.zeros(1, 2).numpy(), pip_requirements=["torch"], serialization_format="pt2")
    (model,) = client.search_logged_models([experiment])
    tags = client.get_run(run.run_id).data.tags
    assert (tags[tracking.MODEL_URI], tags[tracking.MODEL_FORMAT]) == (uri, "pt2") and uri == f"models:/{model.model_id}"
    assert (model.name, model.source_run_id, model.params) == ("t005-beta0p5-seed1", run.run_id, {"model.beta": "0.5", "seed": "1"})
    linked = sorted((m.key, m.value, m.step, m.dataset_name, m.dataset_digest) for m in model.metrics)
    assert linked == [("test_elbo", -40.0, 3, None, None), ("test_elbo", -30.5, 0, "digits", ds.fingerprint),
                      ("val_elbo", -41.0, 3, None, None)]
    # the run's own history is unchanged by the linking
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "test_elbo")] == [(2, -41.5), (3, -40.0), (0, -30.5)]
    assert model.status == LoggedModelStatus.READY and mlflow.pytorch.load_model(f"models:/{model.model_id}")


@pytest.mark.parametrize(("number", "params", "name"), [
    (5, {"model.beta": 0.5, "seed": 1}, "t005-beta0p5-seed1"),
    (12, {"train.lr": 1e-05, "model.hidden": [512, 256]}, "t012-lr1em05-hidden512_256"),
    (0, {"model": {"objective": "beta_tcvae", "beta": 6.0}}, "t000-objectivebeta_tcvae-beta6"),
    (3, {"model.beta": -0.25}, "t003-betam0p25"),
])
def test_logged_model_names_are_readable_and_accepted_by_mlflow(
    client: MlflowClient, number: int, params: dict[str, Any], name: str,
) -> None:
    assert tracking_ui.logged_model_name(number, params) == name
    experiment = fresh(client)
    assert client.create_logged_model(experiment, name=name).name == name


def test_descriptions_of_experiment_trial_and_parent(client: MlflowClient) -> None:
    experiment = fresh(client)
    tracking_ui.describe_experiment(tracking.StudyTracker(client, experiment, "x"), "two β values x two seeds")
    assert client.get_experiment(experiment).tags[tracking.NOTE] == "two β values x two seeds"
    best = client.create_run(experiment, run_name="t001 beta=4 seed=0").info.run_id
    client.log_batch(best, metrics=[Metric(k, v, 0, 0) for k, v in
                                    {"val_elbo": -31.25, "test_elbo": -32.5, "test_recon": 30.0, "test_kl": 2.5, "train_loss": 9.0}.items()])
    summary = tracking_ui.trial_summary("t001 beta=4 seed=0", "val_elbo", {"val_elbo": -31.25, "test_elbo": -32.5})
    assert summary == "t001 beta=4 seed=0: val_elbo -31.25, test_elbo -32.5"
    parent = client.create_run(experiment, tags={tracking.DESCRIPTION: "two β values"}).info.run_id
    tracking_ui.summarize_parent(tracking.TrialRun(client, parent), best, "val_elbo")
    run = client.get_run(parent)
    assert run.data.metrics == {"val_elbo": -31.25, "test_elbo": -32.5, "test_recon": 30.0, "test_kl": 2.5}
    assert run.data.tags[tracking.NOTE] == (
        f"two β values\n\nBest trial: [t001 beta=4 seed=0](#/experiments/{experiment}/runs/{best})"
        " (val_elbo -31.25, test_elbo -32.5, test_recon 30, test_kl 2.5).")


def test_source_tags_fill_the_user_and_source_columns() -> None:
    tags = tracking_ui.source_tags()
    assert {"mlflow.user", "mlflow.source.name", "mlflow.source.type"} <= set(tags)
    assert all(k.startswith(("mlflow.source.", "mlflow.user")) for k in tags)


@pytest.mark.skipif(not tracking_ui.system_metrics_available(), reason="psutil is not installed (the system-metrics extra)")
def test_system_metrics_sample_while_the_block_runs_and_once_at_its_end(client: MlflowClient) -> None:
    import time

    run = tracking.TrialRun(client, client.create_run(fresh(client)).info.run_id)
    with tracking_ui.system_metrics(run, interval_s=3600):  # shorter than one interval: the end sample
        pass
    key = "system/cpu_utilization_percentage"
    assert [m.step for m in client.get_metric_history(run.run_id, key)] == [0]
    with tracking_ui.system_metrics(run, interval_s=0.2):  # a resumed trial goes on from the last step
        time.sleep(1.0)
    steps = [m.step for m in client.get_metric_history(run.run_id, key)]
    assert steps == list(range(len(steps))) and len(steps) >= 3
    assert "system/system_memory_usage_megabytes" in client.get_run(run.run_id).data.metrics
