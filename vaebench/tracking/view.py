"""The MLflow UI's view of a study: a saved runs-page view and the link that opens it.

MLflow 3's runs page keeps saved views as experiment tags `mlflow.sharedViewState.<key>`
and opens one with `?viewStateShareKey=<key>`. The tag's value is an envelope
`{"name", "createdAt", "updatedAt", "state"}` whose `state` is the JSON text of the page's
search facets (filter, sort) merged with its UI state (columns, group-by, charts). This is
the UI's own, undocumented format (read from MLflow 3.17's JavaScript: the saved-view
envelope and `ExperimentPageUIState`), so a view is written only for the MLflow versions in
`TESTED_MLFLOW`, where tests/test_ui_browser.py proves a browser loads it; elsewhere the
link still opens the runs page in model-training mode, without the view.

Everything here is a pure function of the StudySpec: tracking_ui.py writes the tag.
"""
from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlencode

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vaebench.config import Range, StudySpec, choice_label
from vaebench.tracking.runs import ROLE

TESTED_MLFLOW = SpecifierSet(">=3.17,<3.18")
TAG_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "vaebench-comparison"  # one saved view per experiment, rewritten by each run
ROLE_FILTER = f"tags.`{ROLE}` = 'trial'"  # trials, not the parent
HEADLINE = ("test_elbo", "test_recon", "test_kl")
SECTION = "vaebench-study"
AGGREGATE = "average"  # grouped rows: the mean; charts: the mean curve in a min..max band


def view_supported(mlflow_version: str) -> bool:
    """Whether a saved view is known to load in this MLflow version's UI."""
    return Version(mlflow_version) in TESTED_MLFLOW


def swept_params(spec: StudySpec) -> list[str]:
    """The MLflow params a study sweeps, as logged (TrialConfig.flat keys): a space key whose
    choices are mappings sweeps each of their keys (`model.objective`, `model.beta`)."""
    keys: list[str] = []
    for key, dom in spec.search.space.items():
        if isinstance(dom, Range) or not any(isinstance(c, dict) for c in dom):
            keys.append(key)
        else:
            keys += [f"{key}.{sub}" for c in dom if isinstance(c, dict) for sub in c]
    return list(dict.fromkeys(keys))


def group_params(spec: StudySpec) -> list[str]:
    """Swept params that name a configuration: all but the seed, whose runs are averaged."""
    return [k for k in swept_params(spec) if k != "seed"]


# Tableau's ten categorical colours: neighbours stay distinguishable.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def run_color(spec: StudySpec, values: dict[str, Any]) -> str:
    """A trial's colour (`mlflow.runColor`) from its swept values but the seed, so the seeds of
    one configuration share it: grid points in order, a range by where the value lies in it."""
    index = 0
    for key, dom in spec.search.space.items():
        if key == "seed":
            continue
        if isinstance(dom, Range):
            low, high, value = (math.log(v) if dom.log else v for v in (dom.low, dom.high, float(values[key])))
            size, pos = len(PALETTE), min(int((value - low) / (high - low) * len(PALETTE)), len(PALETTE) - 1)
        else:
            labels = list(spec.search.choices(key))
            size, pos = len(labels), labels.index(choice_label(values[key]))
        index = index * size + pos
    return PALETTE[index % len(PALETTE)]


def column(kind: str, key: str) -> str:
    """The runs table's column id (its canonical sort key): params.`model.beta`."""
    return f"{kind}.`{key}`"


def _card(kind: str, uuid: str, title: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": uuid, "displayName": title, "metricSectionId": SECTION,
            "deleted": False, "isGenerated": False, "runsCountToCompare": 100} | fields


def _line(metric: str) -> dict[str, Any]:
    return _card("LINE", f"vaebench-line-{metric}", f"{metric} per epoch", metricKey=metric,
                 selectedMetricKeys=[metric], xAxisKey="step", selectedXAxisMetricKey="", lineSmoothness=0,
                 xAxisScaleType="linear", scaleType="linear", yAxisKey="metric", yAxisExpressions=[],
                 ignoreOutliers=False, useGlobalXaxisKey=False, useGlobalLineSmoothing=False,
                 range={"xMin": None, "xMax": None, "yMin": None, "yMax": None})


def charts(spec: StudySpec) -> list[dict[str, Any]]:
    """Objective, val_kl and val_recon curves; test_kl vs test_recon; parallel coordinates over
    the swept params (but the seed, which the groups average over) and the objective; one bar
    chart per headline test metric."""
    objective = spec.search.objective
    curves = list(dict.fromkeys([objective, "val_kl", "val_recon"]))
    scatter = _card("SCATTER", "vaebench-scatter", "test_kl vs test_recon",
                    xaxis={"key": "test_recon", "type": "METRIC"}, yaxis={"key": "test_kl", "type": "METRIC"})
    parallel = _card("PARALLEL", "vaebench-parallel", "swept params and objective",
                     selectedParams=group_params(spec) or swept_params(spec), selectedMetrics=[objective],
                     showAllRuns=True)
    bars = [_card("BAR", f"vaebench-bar-{m}", m, metricKey=m) for m in HEADLINE]
    return [*map(_line, curves), scatter, parallel, *bars]


def view_state(spec: StudySpec) -> dict[str, Any]:
    """The runs page's state (search facets + UI state) for comparing the study's trials; the
    page fills every field left out with its default."""
    objective = spec.search.objective
    grouped = group_params(spec)
    columns = [column("params", k) for k in swept_params(spec)]
    columns += [column("metrics", m) for m in dict.fromkeys([objective, *HEADLINE])]
    columns += [column("attributes", "Dataset"), column("attributes", "Models")]
    sections = [
        {"uuid": SECTION, "name": f"{spec.name}: comparison", "display": True, "isReordered": True,
         "deleted": False, "isGenerated": False},
        # MLflow files the charts it adds by itself (every other metric) under these two.
        {"uuid": "vaebench-model-metrics", "name": "Model metrics", "display": False, "isReordered": False},
        {"uuid": "vaebench-system-metrics", "name": "System metrics", "display": False, "isReordered": False},
    ]
    return {
        "searchFilter": ROLE_FILTER,
        "orderByKey": column("metrics", objective),
        "orderByAsc": spec.search.direction == "minimize",
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts(spec),
        "compareRunSections": sections,
        "isAccordionReordered": True,
        "groupBy": {"aggregateFunction": AGGREGATE, "groupByKeys": [{"mode": "param", "groupByData": k} for k in grouped]}
        if grouped else None,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def view_tag(spec: StudySpec, now_ms: int) -> tuple[str, str]:
    """(tag key, tag value) of the study's saved view, as the UI's "Save view" writes it."""
    envelope = {"name": f"{spec.name}: compare trials", "createdAt": now_ms, "updatedAt": now_ms,
                "state": json.dumps(view_state(spec), separators=(",", ":"))}
    return TAG_PREFIX + VIEW_KEY, json.dumps(envelope, separators=(",", ":"))


def runs_url(base_url: str, experiment_id: str, with_view: bool = True, charts: bool = False) -> str:
    """The link that opens the experiment's runs in model-training mode (not the GenAI
    overview), with the saved view when it was written, as the table or the charts."""
    query: dict[str, str] = {"workflowType": "machine_learning"}
    if with_view:
        query["viewStateShareKey"] = VIEW_KEY
    if charts:
        query["compareRunsMode"] = "CHART"
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def study_link(experiment_id: str, port: int = 5000) -> str:
    """The link `vaebench ui` (default port) prints for a study just run."""
    import importlib.metadata

    with_view = view_supported(importlib.metadata.version("mlflow"))
    return runs_url(f"http://127.0.0.1:{port}", experiment_id, with_view=with_view)


# MLflow's job executor (a job runner and its huey consumer processes) runs GenAI jobs, which
# vaebench never submits: the UI needs one web worker and nothing else.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """MLflow's server on the store, one worker (run with SERVER_ENV)."""
    import sys

    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def study_links(tracking_uri: str, base_url: str) -> list[tuple[str, str]]:
    """(experiment name, link) for every active experiment of the store but MLflow's Default
    one; the link opens the saved view where the experiment has it."""
    from mlflow import MlflowClient

    experiments = MlflowClient(tracking_uri).search_experiments(order_by=["name ASC"])
    return [(e.name, runs_url(base_url, e.experiment_id, with_view=TAG_PREFIX + VIEW_KEY in e.tags))
            for e in experiments if e.experiment_id != "0"]
