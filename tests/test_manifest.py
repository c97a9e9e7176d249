"""The manifest: versions, git state, hardware, the resolved study and the fingerprints."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import REPO
from vaebench import config, manifest
from vaebench.errors import InputError


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder), *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_package_versions_are_the_installed_ones() -> None:
    versions = manifest.package_versions(["numpy", "torch", "no-such-package-here"])
    assert versions["numpy"] == importlib.metadata.version("numpy")
    # torch with its build tag (+cu130, +cpu), which its distribution metadata leaves out
    assert versions["torch"] == torch.__version__
    assert versions["torch"].split("+")[0] == importlib.metadata.version("torch").split("+")[0]
    assert versions["no-such-package-here"] is None


def test_git_state_of_a_checkout_and_of_a_plain_folder(tmp_path: Path) -> None:
    assert manifest.git_state(tmp_path) is None
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "one")
    assert manifest.git_state(repo) == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "a.txt").write_text("2")
    assert manifest.git_state(repo)["dirty"] is True


def test_hardware_counts() -> None:
    hw = manifest.hardware("cpu")
    assert hw["cpu_count"] == os.cpu_count() and hw["torch_threads"] == torch.get_num_threads()
    assert "cuda_device" not in hw
    assert isinstance(hw["cpu"], str)


def test_collect_write_read_round_trip(tmp_path: Path) -> None:
    spec, _ = config.load_study("smoke")
    study = spec.model_dump(mode="json")
    doc = manifest.collect(study, {"digits": "abc123"}, command=["vaebench", "run", "--study", "smoke"])
    path = manifest.write(doc, tmp_path / "out")
    assert path.name == "manifest.json" and os.listdir(tmp_path / "out") == ["manifest.json"]
    back = manifest.read(tmp_path / "out")
    assert back == doc
    assert back["study"] == study and back["datasets"] == {"digits": "abc123"}
    assert back["command"] == ["vaebench", "run", "--study", "smoke"]
    assert back["python"]["version"] and back["packages"]["scikit-learn"]
    if (REPO / ".git").exists():  # this test runs from a checkout: its commit is recorded
        assert back["vaebench"]["git"]["commit"] == git(REPO, "rev-parse", "HEAD")


@pytest.mark.parametrize(("text", "says"), [
    (None, "no manifest"),
    ("{", "not a manifest"),
    ("[1, 2]", "a JSON object is expected"),
    ('{"command": [], "vaebench": {}, "python": {}, "packages": {}, "hardware": {}, "datasets": {}}', "study: missing"),
    ('{"command": "run", "vaebench": {}, "python": {}, "packages": {}, "hardware": {}, "datasets": {}, "study": {}}',
     "command: missing or not a JSON list"),
])
def test_read_refuses_a_missing_or_malformed_manifest_in_one_line(tmp_path: Path, text: str | None, says: str) -> None:
    if text is not None:
        (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(InputError) as err:
        manifest.read(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'manifest.json'}: ") and says in message and "\n" not in message
