"""Study files as YAML (vaebench/studyfile.py): whatever the file holds, `run` answers with one
line naming the file, the line and the key, exit 2, before anything is read further or written."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from helpers import run_cli
from vaebench.errors import InputError
from vaebench.studyfile import MAX_BYTES, StudyLoader, read_study_file

BASE = """name: t
dataset: {name: digits}
model: {arch: mlp, latent_dim: 2}
train: {epochs: 1, lr: 0.001}
search: {sampler: grid, space: {seed: [0, 1]}}
"""


@pytest.mark.parametrize("old, new, expected", [
    ("latent_dim: 2", "latent_dim: " + "9" * 5000,
     ":3: model.latent_dim: 99999999999999999999... is not a valid int (Exceeds the limit (4300 digits)"),
    ("latent_dim: 2", "latent_dim: !!int abc", ":3: model.latent_dim: abc is not a valid int ("),
    ("lr: 0.001", "lr: !!float abc", ":4: train.lr: abc is not a valid float ("),
    ("[0, 1]", "[0, 2024-02-30]", ":5: search.space.seed[1]: 2024-02-30 is not a valid timestamp (day is out of range"),
    ("name: t", "name: t\ndescription: 2023-02-29", ":2: description: 2023-02-29 is not a valid timestamp ("),
])
def test_a_value_its_tag_cannot_hold_is_one_line_with_its_line_and_key(
    folder: Path, old: str, new: str, expected: str
) -> None:
    study = folder / "study.yaml"
    study.write_text(BASE.replace(old, new))
    code, out, err = run_cli(folder, study)
    assert (code, out) == (2, ""), err
    assert err.startswith(f"vaebench: error: {study}{expected}") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in folder.iterdir()) == ["study.yaml"]  # nothing written


def test_a_huge_flat_list_is_refused_while_it_is_read(tmp_path: Path) -> None:
    """Counted as it is parsed: refused in well under a second and a few MB, not after PyYAML
    has built a node for each of its values (2.5 GB and a minute for 9 MB)."""
    path = tmp_path / "study.yaml"
    path.write_text(BASE + "x: [" + ", ".join(["1"] * (StudyLoader.MAX_VALUES + 50_000)) + "]\n")
    assert path.stat().st_size < MAX_BYTES  # the count refuses it, not the size
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"study.yaml:6: malformed YAML \(more than 100000 values\)"):
        read_study_file(path)
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6 and seconds < 10, (peak, seconds)


def test_the_python_loader_counts_too(tmp_path: Path) -> None:
    """Without libyaml's parser the loader itself stops at MAX_VALUES, before composing the rest."""
    text = "x: [" + ", ".join(["1"] * (StudyLoader.MAX_VALUES + 10)) + "]\n"
    with pytest.raises(yaml.composer.ComposerError, match="more than 100000 values") as info:
        yaml.load(text, StudyLoader)  # noqa: S506 - a SafeLoader
    first_over = StudyLoader.MAX_VALUES - 3  # the item that makes 100,001 with the mapping, its key and the list
    assert info.value.problem_mark.column == len("x: [") + 3 * first_over


def test_a_file_larger_than_the_limit_is_refused_unparsed(folder: Path) -> None:
    study = folder / "study.yaml"
    study.write_text(BASE + "description: " + "x" * MAX_BYTES + "\n")
    code, out, err = run_cli(folder, study)
    assert (code, out, err) == (2, "", f"vaebench: error: {study}: larger than 1,000,000 bytes "
                                       "(a study file is a few settings)\n")
    assert sorted(p.name for p in folder.iterdir()) == ["study.yaml"]


def test_an_alias_counts_as_what_it_expands_to() -> None:
    text = "a: &a [" + ", ".join(["1"] * 60_000) + "]\nb: *a\n"
    with pytest.raises(yaml.composer.ComposerError, match="more than 100000 values"):
        yaml.load(text, StudyLoader)  # noqa: S506 - a SafeLoader
    assert len(yaml.load("a: &a [1, 2]\nb: *a\nc: *a\n", StudyLoader)["c"]) == 2  # noqa: S506


def test_a_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(b"name: t\ndescription: \xff\xfe\n")
    with pytest.raises(InputError, match=r"study.yaml: cannot read \('utf-8' codec"):
        read_study_file(path)
