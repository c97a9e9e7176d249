"""Shared fixtures: a real smoke study run once per session through the CLI, an empty MLflow
store to copy, and a temp current folder. Tests that need a subprocess are marked `slow`."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest

CALL_REPORT = pytest.StashKey[pytest.TestReport]()  # a test's outcome, for fixtures that keep evidence of failures


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the session's smoke study waits for a real `vaebench run` process: slow."""
    for item in items:
        if "smoke" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which `vaebench run --study smoke` has finished (2 betas x 2 seeds), with
    the charts and MLflow model for the best trial only (the default, all, is tested apart)."""
    from helpers import vaebench

    cwd = tmp_path_factory.mktemp("smoke")
    result = vaebench(cwd, "run", "--study", "smoke", "--no-progress", "--tensorboard", "tb", "--artifacts", "best")
    assert result.returncode == 0, result.stderr
    assert "leaderboard: results/smoke/leaderboard.csv" in result.stdout
    return cwd


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated mlflow.db: copied into a test folder, it spares each run the ~5 s
    of MLflow's schema migrations. (The SQLite worker test starts from nothing on purpose.)"""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    with contextlib.chdir(path.parent):  # MLflow roots the Default experiment's artifacts here
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp current folder; MLflow's tracking URI and torch's threads (process-wide) are put
    back afterwards."""
    import mlflow
    import torch

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    mlflow.set_tracking_uri(before)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _dataset_registry() -> Iterator[None]:
    """A dataset a test registers is gone after it: the registry is one dict shared by the
    modules of vaebench.data, so it is restored in place."""
    from vaebench import data

    saved = dict(data.DATASETS)
    yield
    if data.DATASETS != saved:
        data.DATASETS.clear()
        data.DATASETS.update(saved)
        data.clear_cache()


@pytest.fixture(autouse=True)
def _model_registries() -> Iterator[None]:
    """Models a test's plugin registers are gone after it (restored in place, as above), and the
    plugin files count as not run, so the next test that loads one runs it again."""
    from vaebench.models import plugins, registry

    saved = {kind: dict(entries) for kind, entries in registry.REGISTRIES.items()}
    origins, loaded = dict(registry.ORIGINS), dict(plugins._LOADED)
    yield
    for kind, entries in registry.REGISTRIES.items():
        if entries != saved[kind]:
            entries.clear()
            entries.update(saved[kind])
    registry.ORIGINS.clear()
    registry.ORIGINS.update(origins)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
