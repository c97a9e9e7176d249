"""replay: a study's manifest reruns one trial and checks its numbers.

The fast tests build report folders by hand; the slow ones run a tiny study (digits, one
epoch) through the CLI and replay it in a fresh process."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from helpers import vaebench, write_study
from vaebench import cli, config, manifest
from vaebench.cli import replay
from vaebench import tracking as tk
from vaebench.errors import InputError

SMOKE, _ = config.load_study("smoke")


def report_folder(folder: Path, rows: list[dict], doc: dict | None = None) -> Path:
    """A report folder with trials.csv `rows` and (unless None) manifest.json `doc`."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    if doc is not None:
        manifest.write(doc, folder)
    return folder


def smoke_manifest() -> dict:
    return manifest.collect(SMOKE.model_dump(mode="json"), {"digits": "abc"}, command=["vaebench", "run"])


ROW = {"rank": 1, "trial": 3, "run_name": "t003 beta=4 seed=1", "run_id": "x", "state": "COMPLETE",
       "param.model.beta": 4.0, "param.seed": 1, "param.model.hidden": "[64]", "val_elbo": -30.5}


# --- bad input: one line, exit 2, before any training ----------------------------------------

@pytest.mark.parametrize("text", [None, "{", '{"study": {}}'])
def test_a_missing_or_garbled_manifest_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None) -> None:
    folder = report_folder(tmp_path / "study", [ROW])
    if text is not None:
        (folder / "manifest.json").write_text(text)
    assert cli.main(["replay", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"{folder / 'manifest.json'}: " in err


def test_a_manifest_with_an_invalid_study_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = smoke_manifest()
    doc["study"]["search"]["sampler"] = "annealing"
    folder = report_folder(tmp_path / "study", [ROW], doc)
    assert cli.main(["replay", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: study: not a valid study (search.sampler" in err


def test_an_unknown_trial_or_a_missing_folder_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = report_folder(tmp_path / "study", [ROW], smoke_manifest())
    assert cli.main(["replay", str(folder), "--trial", "7"]) == 2
    assert "--trial 7: no such finished trial (trials 3)" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "no such report folder" in capsys.readouterr().err


def test_missing_data_files_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = smoke_manifest()
    doc["study"]["dataset"]["name"] = "mnist"
    folder = report_folder(tmp_path / "study", [ROW], doc)
    assert cli.main(["replay", str(folder), "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mnist: missing files in " + str(tmp_path / "empty") in err


# --- the parts, on constructed inputs ------------------------------------------------------------

def test_trial_config_takes_the_trials_values_and_checks_its_params() -> None:
    cfg = replay.trial_config(SMOKE, pd.Series(ROW), Path("trials.csv"))
    assert cfg.model.beta == 4.0 and cfg.seed == 1 and cfg.dataset.name == "digits"
    with pytest.raises(InputError, match=r"trial 3: param\.model\.hidden: \[32\] in trials.csv but \[64\]"):
        replay.trial_config(SMOKE, pd.Series(ROW | {"param.model.hidden": "[32]"}), Path("trials.csv"))
    with pytest.raises(InputError, match=r"param\.model\.beta: missing or not a value"):
        replay.trial_config(SMOKE, pd.Series(ROW | {"param.model.beta": 2.0}), Path("trials.csv"))


def test_timing_and_missing_metrics_are_not_compared() -> None:
    got = replay.compared({"train_seconds": 3.0, "eval_samples_per_s": 9.0, "train_samples_per_s": 1.0,
                           "test_elbo": "-1.5", "test_mig": float("nan"), "n_params": 10})
    assert got == {"test_elbo": -1.5, "n_params": 10.0}


def test_changes_name_what_moved_and_what_each_explains() -> None:
    old = smoke_manifest()
    new = json.loads(json.dumps(old))
    assert replay.changes(old, new, "digits") == []
    new["packages"]["scikit-learn"] = "99.0"
    new["hardware"]["torch_threads"] = old["hardware"]["torch_threads"] + 1
    new["datasets"]["digits"] = "def"
    found = replay.changes(old, new, "digits")
    texts = [c.text for c in found]
    assert texts == [f"scikit-learn {old['packages']['scikit-learn']} -> 99.0",
                     f"torch threads {old['hardware']['torch_threads']} -> {new['hardware']['torch_threads']}",
                     "digits fingerprint abc -> def (other data)"]
    sklearn = found[0]
    assert sklearn.explains("test_nmi") and sklearn.explains("test_mig") and sklearn.explains("test_dci_completeness")
    assert not sklearn.explains("test_elbo") and not sklearn.explains("val_recon")
    assert replay.Change("torch 1 -> 2", "torch").explains("test_elbo")
    assert not replay.Change("mlflow 1 -> 2", "mlflow").explains("test_nmi")
    table = replay.differences({"test_elbo": -2.0, "test_nmi": 0.5, "n_params": 3.0},
                               {"test_elbo": -2.0, "test_nmi": 0.25, "n_params": 3.0}, found)
    assert table["metric"].tolist() == ["test_nmi"] and table["difference"].tolist() == ["-0.25"]
    assert texts[0] in table["explained by"].iloc[0]



def test_a_torch_build_tag_is_named_as_the_change_behind_every_metric() -> None:
    """2.14.1 and 2.14.1+cu130 are different builds of torch: the manifest records the full
    version (torch.__version__; the distribution's metadata drops the tag), and replay names it
    beside a moved probe accuracy, before the commit."""
    import torch

    now = smoke_manifest()
    assert now["packages"]["torch"] == torch.__version__
    old, new = json.loads(json.dumps(now)), json.loads(json.dumps(now))
    old["packages"]["torch"], new["packages"]["torch"] = "2.14.1", "2.14.1+cu130"
    old["vaebench"]["git"], new["vaebench"]["git"] = {"commit": "a" * 40}, {"commit": "b" * 40}
    del old["packages"]["scipy"]  # a manifest of an older vaebench, which did not list it
    found = replay.changes(old, new, "digits")
    assert [c.text for c in found] == ["torch 2.14.1 -> 2.14.1+cu130", f"scipy None -> {new['packages']['scipy']}",
                                       "vaebench commit aaaaaaaaaa -> bbbbbbbbbb"]
    table = replay.differences({"test_probe_acc": 0.840}, {"test_probe_acc": 0.838}, found)
    assert table["explained by"].tolist() == ["; ".join(c.text for c in found)]


# --- end to end: a tiny study run through the CLI, replayed in a fresh process ---------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which `vaebench run` finished a tiny study: digits, 1 epoch, two betas."""
    cwd = tmp_path_factory.mktemp("replay")
    path = write_study(cwd, "tiny", {"model.beta": [1.0, 4.0]}, epochs=1)
    result = vaebench(cwd, "run", "--study", path.name, "--no-progress", "--artifacts", "best")
    assert result.returncode == 0, result.stderr
    return cwd


@pytest.mark.slow
def test_the_manifest_is_on_the_parent_run_and_in_the_report(tiny: Path) -> None:
    folder = tiny / "results" / "tiny"
    written = manifest.read(folder)
    client = MlflowClient(f"sqlite:///{tiny / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags[tk.ROLE] == "study")
    assert json.loads(Path(client.download_artifacts(parent.info.run_id, "manifest.json", str(tiny))).read_text()) == written
    assert written["command"] == ["vaebench", "run", "--study", "tiny.yaml", "--no-progress", "--artifacts", "best"]
    assert written["study"]["name"] == "tiny" and written["study"]["search"]["space"] == {"model.beta": [1.0, 4.0]}
    children = [r for r in runs if r.data.tags[tk.ROLE] == "trial"]
    assert len(children) == 2
    for child in children:  # the runs' own tags agree with the manifest
        assert written["datasets"] == {"digits": child.data.tags[tk.DATASET_FINGERPRINT]}
        assert written["packages"]["torch"] == child.data.tags[tk.TORCH_VERSION]
        assert f"{written['hardware']['torch_threads']} torch threads" in child.data.tags[tk.HOST]
    assert "python -m vaebench replay results/tiny" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_replay_of_the_best_trial_is_identical(tiny: Path) -> None:
    result = vaebench(tiny, "replay", "results/tiny")
    assert result.returncode == 0, result.stdout + result.stderr
    best = pd.read_csv(tiny / "results" / "tiny" / "trials.csv")["trial"].iloc[0]
    assert result.stdout.startswith(f"replay of trial {best} ") and ": identical (" in result.stdout


@pytest.mark.slow
def test_an_altered_metric_is_named_and_exit_1(tiny: Path) -> None:
    altered = tiny / "altered"
    shutil.copytree(tiny / "results" / "tiny", altered)
    trials = pd.read_csv(altered / "trials.csv", dtype=str)
    other = int(trials["trial"].iloc[1])
    trials.loc[1, "test_nmi"] = repr(float(trials.loc[1, "test_nmi"]) + 1e-9)
    trials.to_csv(altered / "trials.csv", index=False)
    result = vaebench(tiny, "replay", "altered", "--trial", str(other))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"replay of trial {other} ") and "1 of " in lines[0] and "metrics differ" in lines[0]
    assert "nothing the manifest records" in lines[1]
    rows = [ln.split()[0] for ln in lines[3:]]
    assert rows == ["metric", "test_nmi"] and "no recorded change" in lines[-1]
