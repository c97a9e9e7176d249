"""Study files: validation names the file and the field; trial configs resolve dotted keys."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vaebench.config import StudySpec, find_study, load_study
from vaebench.errors import InputError

REPO = Path(__file__).resolve().parent.parent
BASE = {
    "name": "t",
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "objective": "beta_vae", "latent_dim": 4, "likelihood": "bernoulli"},
    "train": {"epochs": 1},
    "search": {"sampler": "grid", "space": {"model.beta": [1.0, 2.0]}},
}


def write(tmp_path: Path, raw: object, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def error_of(tmp_path: Path, raw: object) -> str:
    path = write(tmp_path, raw)
    with pytest.raises(InputError) as info:
        load_study(str(path))
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


def mutate(**sections: dict) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize("study", sorted(p.stem for p in (REPO / "studies").glob("*.yaml")))
def test_shipped_studies_validate(study: str) -> None:
    spec, path = load_study(study)
    assert spec.name == study and path.name == f"{study}.yaml"
    assert spec.search.total_trials >= 1


def test_beta_sweep_is_the_documented_grid() -> None:
    spec, _ = load_study("beta_sweep")
    assert spec.search.space["model.beta"] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert spec.search.space["seed"] == [0, 1, 2]
    assert spec.search.total_trials == 18
    assert (spec.search.objective, spec.search.direction) == ("val_elbo", "maximize")
    assert (spec.model.arch, spec.model.objective, spec.dataset.name) == ("mlp", "beta_vae", "mnist5k")


@pytest.mark.parametrize(
    "sections, field",
    [
        ({"model": {"colour": "red"}}, "model.colour: unknown setting"),
        ({"bogus": 1}, "bogus: unknown setting"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim"),
        ({"model": {"beta": -1.0}}, "model.beta"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"search": {"sampler": "grid", "space": {}}}, "search: the search space is empty"),
        ({"search": {"sampler": "annealing", "space": {"model.beta": [1.0]}}}, "search.sampler"),
        ({"search": {"sampler": "grid", "n_trials": 5, "space": {"model.beta": [1.0, 2.0]}}}, "grid has 2 points"),
        ({"search": {"sampler": "grid", "space": {"train.lr": {"low": 1e-4, "high": 1e-2}}}}, "needs a list"),
        ({"search": {"sampler": "tpe", "space": {"model.beta": [1.0]}}}, "n_trials: required"),
        ({"search": {"sampler": "grid", "space": {"model.beta": [1.0, -2.0]}}}, "model.beta = -2.0"),
        ({"search": {"sampler": "grid", "space": {"model.nope": [1]}}}, "search.space.model.nope"),
        ({"search": {"sampler": "grid", "objective": "test_elbo", "space": {"seed": [0]}}}, "never optimised"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, sections: dict, field: str) -> None:
    assert field in error_of(tmp_path, mutate(**sections))


@pytest.mark.parametrize("kind, value", [("arch", "transformer"), ("objective", "gan"), ("likelihood", "poisson")])
def test_unknown_registry_names_list_the_known_ones(tmp_path: Path, kind: str, value: str) -> None:
    message = error_of(tmp_path, mutate(model={kind: value}))
    assert f"unknown {kind} '{value}'" in message and "known:" in message


def test_unknown_dataset_lists_known_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, mutate(dataset={"name": "imagenet"}))
    assert "unknown dataset 'imagenet'" in message and "mnist5k" in message


def test_hparam_that_does_not_apply_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, mutate(model={"objective": "vae", "beta": 2.0}, search={
        "sampler": "grid", "space": {"seed": [0]}}))
    assert "'beta' does not apply" in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: x\nmodel: {arch: mlp\nsearch: [\n")
    assert "malformed YAML" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in error_of(tmp_path, "- just\n- a list\n")


def test_with_params_sets_dotted_keys_and_flat_round_trips() -> None:
    spec = StudySpec.model_validate(BASE)
    cfg = spec.with_params({"model.beta": 2.0, "seed": 3, "train.lr": 0.01})
    assert (cfg.model.beta, cfg.seed, cfg.train.lr) == (2.0, 3, 0.01)
    flat = cfg.flat()
    assert flat["model.beta"] == 2.0 and flat["seed"] == 3 and flat["dataset.name"] == "digits"
    assert "model.channels" not in flat  # unset (None) values are not params
    assert spec.model.beta is None  # the study itself is unchanged


def test_find_study_by_name_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_study("smoke").resolve() == (REPO / "studies" / "smoke.yaml").resolve()
    local = tmp_path / "studies"
    local.mkdir()
    (local / "smoke.yaml").write_text(yaml.safe_dump(BASE))
    assert find_study("smoke").resolve() == (local / "smoke.yaml").resolve()  # ./studies first
    with pytest.raises(InputError, match="no such study"):
        find_study("does_not_exist")


@pytest.mark.parametrize(("arch", "hidden", "ok"), [
    ("mlp", [64, 32], True), ("conv", 128, True), ("mlp", 64, False), ("conv", [128], False)])
def test_hidden_is_a_list_for_mlp_and_one_width_for_conv(tmp_path: Path, arch: str, hidden: object, ok: bool) -> None:
    raw = mutate(model={"arch": arch, "hidden": hidden}, search={"sampler": "grid", "space": {"seed": [0]}})
    if ok:
        spec = StudySpec.model_validate(raw)
        assert spec.with_params({}).model.hidden == (tuple(hidden) if isinstance(hidden, list) else hidden)
    else:
        assert "hidden: arch" in error_of(tmp_path, raw)


def test_a_mapping_choice_is_checked_against_its_objective(tmp_path: Path) -> None:
    ok = StudySpec.model_validate(mutate(search={"sampler": "grid", "space": {
        "model": [{"objective": "beta_vae", "beta": 4.0}, {"objective": "annealed_vae", "c_max": 5.0}]}}))
    cfg = ok.with_params(ok.search.values({"model": "objective=annealed_vae c_max=5.0"}))
    assert (cfg.model.objective, cfg.model.c_max, cfg.model.beta, cfg.model.latent_dim) == ("annealed_vae", 5.0, None, 4)
    message = error_of(tmp_path, mutate(search={"sampler": "grid", "space": {
        "model": [{"objective": "annealed_vae", "beta": 4.0}]}}))
    assert "search.space.model" in message and "'beta' does not apply" in message
