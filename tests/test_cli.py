"""Flags and study settings the CLI checks before anything is written: exit 2, one line."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from vaebench import cli
from vaebench.config import load_study

STUDY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "objective": "vae", "latent_dim": 2, "hidden": [8]},
    "train": {"epochs": 1},
    "search": {"sampler": "grid", "space": {"seed": [0, 1]}},
}


def refused(folder: Path, monkeypatch: pytest.MonkeyPatch, *argv: str, **settings: object) -> str:
    """Run the CLI in `folder` on tiny.yaml (STUDY with `settings`): it must exit 2 with one
    line on stderr, print nothing else, and leave the folder as it was. Returns the line."""
    monkeypatch.chdir(folder)
    Path("tiny.yaml").write_text(yaml.safe_dump(STUDY | settings))
    before = sorted(p.name for p in folder.iterdir())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    lines = err.getvalue().splitlines()
    assert (code, out.getvalue(), len(lines)) == (2, "", 1), (code, out.getvalue(), lines)
    assert sorted(p.name for p in folder.iterdir()) == before
    return lines[0]


RUN = ("run", "--study", "tiny.yaml", "--storage", "sqlite:///optuna.db", "--tracking-uri", "sqlite:///mlflow.db")


@pytest.mark.parametrize("device", ["meta", "", "tpu", "cuda:x"])
def test_a_device_flag_vaebench_cannot_run_on_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    line = refused(tmp_path, monkeypatch, *RUN, "--device", device)
    assert line == f"vaebench: error: --device {device}: '{device}' is not a device: use auto, cpu, cuda, cuda:N or mps"


def test_a_missing_gpu_is_refused_for_the_flag_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = refused(tmp_path, monkeypatch, *RUN, "--device", "cuda")
    assert line == "vaebench: error: --device cuda: 'cuda' requested but this machine has 0 CUDA devices"
    line = refused(tmp_path, monkeypatch, *RUN, device="cuda")
    assert line == "vaebench: error: tiny.yaml: device: 'cuda' requested but this machine has 0 CUDA devices"
    line = refused(tmp_path, monkeypatch, *RUN, "--device", "cpu", search={
        "sampler": "grid", "space": {"device": ["cpu", "cuda"]}})
    assert line.startswith('vaebench: error: tiny.yaml: search.space.device = "cuda": \'cuda\' requested')


def test_the_flag_overrides_the_files_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(STUDY | {"device": "cuda"}))
    spec, _ = load_study(str(path))
    cli.check_devices(spec, path, "cpu")  # the file's cuda is never used
    with pytest.raises(cli.InputError, match="gpu.yaml: device: 'cuda' requested"):
        cli.check_devices(spec, path, None)


@pytest.mark.parametrize("study", ["..", ".", "../elsewhere", "/tmp"])
def test_leaderboard_refuses_a_study_name_that_leads_out_of_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, study: str
) -> None:
    line = refused(tmp_path, monkeypatch, "leaderboard", "--study", study, "--tracking-uri", "sqlite:///mlflow.db")
    assert line.startswith(f"vaebench: error: {study!r}: not a usable name for a folder in results")


@pytest.mark.parametrize("name", ["..", ".", "a" * 300])
def test_run_refuses_a_study_name_that_is_not_a_plain_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    line = refused(tmp_path, monkeypatch, *RUN, name=name)
    assert line.startswith("vaebench: error: tiny.yaml: name: ") and "not a usable study name" in line
