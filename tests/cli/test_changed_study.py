"""A study file changed between runs (or another file with the same name) is refused in one line
that names the changed settings, before anything is written; --fresh starts over; a change
that does not alter what trials measure (the description) resumes."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import load, mlflow_runs, refused_line, run_cli, seeded, write_study
from vaebench import search
from vaebench.config import load_study
from vaebench.errors import InputError
from vaebench.models import plugins
from vaebench.search import settings


def edited(path: Path, change: dict) -> Path:
    """`path` rewritten with `change` merged in, one level deep ({"train": {"epochs": 2}})."""
    doc = yaml.safe_load(path.read_text())
    for section, values in change.items():
        doc[section] = doc[section] | values if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(doc))
    return path


def run_flags(folder: Path, study: Path, *flags: str) -> list[str]:
    return ["run", "--study", str(study), "--no-progress", "--threads", "1", "--storage",
            f"sqlite:///{folder / 'optuna.db'}", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", *flags]


@pytest.mark.slow  # three studies trained in this process
def test_a_changed_study_file_is_refused_naming_the_change(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    study = write_study(folder, "changed", {"model.beta": [1.0, 4.0]}, epochs=1)
    original = study.read_text()
    code, _, err = run_cli(folder, study, "--trials", "1")  # half the grid: a resume has work to do
    assert code == 0, err

    cases = [
        ({"train": {"epochs": 2}}, "train.epochs: 1 -> 2"),
        ({"search": {"direction": "minimize"}}, 'search.direction: "maximize" -> "minimize"'),
        ({"search": {"space": {"model.beta": [1.0, 4.0, 8.0]}}}, "search.space.model.beta: [1.0, 4.0] -> [1.0, 4.0, 8.0]"),
    ]
    for change, named in cases:
        study.write_text(original)
        line = refused_line(folder, *run_flags(folder, edited(study, change)))
        assert line.startswith(f"vaebench: error: {study}: study changed already has trials run with other settings ("), line
        assert named in line and "pass --fresh" in line and "a new name" in line, line

    other = folder / "elsewhere"  # another file that happens to use the same name
    other.mkdir()
    line = refused_line(folder, *run_flags(folder, write_study(other, "changed", {"model.beta": [1.0, 4.0]},
                                                               epochs=1, lr=1e-3)))
    assert "train.lr: 0.003 -> 0.001" in line, line
    assert len(load(folder, "changed").trials) == 1  # nothing ran

    study.write_text(original)  # words only: the study resumes and completes
    code, out, err = run_cli(folder, edited(study, {"description": "now with a description"}))
    assert code == 0, err
    assert "2/2 trials finished" in out
    parents, children = mlflow_runs(folder, "changed")
    assert len(parents) == 1 and len(children) == 2

    code, out, err = run_cli(folder, edited(study, {"train": {"epochs": 2}}), "--fresh")
    assert code == 0, err
    fresh = load(folder, "changed")
    assert fresh.user_attrs[search.SETTINGS_ATTR]["train.epochs"] == 2
    assert [t.state.name for t in fresh.trials] == ["COMPLETE", "COMPLETE"]
    code, out, err = run_cli(folder, study)  # and the new settings resume as they are
    assert code == 0 and "2/2 trials finished" in out, err


def test_the_first_worker_records_the_settings_and_the_others_compare(folder: Path) -> None:
    """What run_study does under its setup lock, on a study opened by each worker."""
    spec, path = load_study(str(write_study(folder, "shared", {"seed": [0, 1]})))
    storage = search.open_storage(str(folder / "shared.journal"))
    settings.record(search.create_study(spec, storage), spec, str(path))
    settings.record(search.create_study(spec, storage), spec, str(path))  # a second worker, same file
    flipped = spec.model_copy(update={"search": spec.search.model_copy(update={"direction": "minimize"})})
    with pytest.raises(InputError, match='search.direction: "maximize" -> "minimize"'):
        settings.record(search.create_study(flipped, storage), flipped, str(path))
    assert search.create_study(spec, storage).user_attrs[search.SETTINGS_ATTR] == settings.resolved(spec)


def test_settings_that_do_not_change_the_trials_are_left_out(folder: Path) -> None:
    spec, _ = load_study(str(write_study(folder, "free", {"seed": [0, 1]})))
    base = settings.resolved(spec)
    moved = spec.model_copy(update={"description": "words", "device": "meta", "plugins": ("x.py",),
                                    "search": spec.search.model_copy(update={"n_trials": 7})})
    assert settings.changes(base, settings.resolved(moved)) == []
    assert settings.changes(base, base | {"train.epochs": 3}) == [f"train.epochs: {base['train.epochs']} -> 3"]
    # a setting a later vaebench adds is unchanged while it is unset; one it drops is a change
    assert settings.changes(base, base | {"train.new_option": None}) == []
    assert settings.changes(base | {"train.old_option": 1}, base) == ["train.old_option: 1 -> unset"]


def test_an_edited_plugin_file_is_a_change_a_moved_one_is_not(folder: Path) -> None:
    """The plugins' code is part of the record (their sha256s): a model file edited mid-study
    would mix two models' trials in one report. Where the file lives may change."""
    (folder / "mine.py").write_text("WIDTH = 32\n")
    path = write_study(folder, "plugged", {"seed": [0, 1]})
    spec = load_study(str(path))[0].model_copy(update={"plugins": ("mine.py",)})
    base = settings.resolved(spec, str(path))
    assert base[settings.PLUGIN_CODE] == [plugins.file_hash(folder / "mine.py")]
    moved = folder / "sub"
    moved.mkdir()
    (moved / "theirs.py").write_text("WIDTH = 32\n")
    assert settings.changes(base, settings.resolved(spec.model_copy(update={"plugins": ("sub/theirs.py",)}), str(path))) == []
    (folder / "mine.py").write_text("WIDTH = 64\n")
    differ = settings.changes(base, settings.resolved(spec, str(path)))
    assert len(differ) == 1 and differ[0].startswith(f"{settings.PLUGIN_CODE}: "), differ
