"""Study files: validation names the file and the field; trial configs resolve dotted keys."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vaebench import cli, models
from vaebench.config import StudySpec, find_study, load_study
from vaebench.errors import InputError
from vaebench.studyfile import StudyLoader
from vaebench.validate import device_problem, safe_child

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
        ({"model": {"latent_dim": 10**100}}, "model.latent_dim: Input should be less than or equal to 1048576"),
        ({"model": {"hidden": [512, 10**30]}}, "model.hidden"),
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
    assert "model.beta: unknown setting for arch 'mlp' with objective 'vae'" in message


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
    assert "search.space.model" in message and "model.beta: unknown setting" in message


# -- adversarial input: refused before anything runs, one line naming file and key -------


def space(values: dict, **search: object) -> dict:
    """BASE with this search space (a grid unless `sampler` says otherwise)."""
    return mutate(search={"sampler": "grid", "space": values, **search})


@pytest.mark.parametrize("name", [".", "..", "../other", "a/b", "/tmp/x", "-rf", ".hidden", "a b", "é", "", "a" * 101])
def test_a_study_name_that_is_not_a_plain_word_is_refused(tmp_path: Path, name: str) -> None:
    message = error_of(tmp_path, mutate(name=name))
    assert ": name: " in message and "not a usable study name" in message


@pytest.mark.parametrize("name", ["a", "_x", "beta_sweep-2", "A9", "a" * 100])
def test_plain_study_names_are_accepted(name: str) -> None:
    assert StudySpec.model_validate(mutate(name=name)).name == name


def test_a_file_name_that_makes_no_usable_name_says_to_set_one(tmp_path: Path) -> None:
    raw = mutate()
    del raw["name"]
    path = write(tmp_path, raw, name="v1.2.yaml")
    with pytest.raises(InputError, match=r"name: 'v1.2' is not a usable study name.*set `name:` in the file"):
        load_study(str(path))
    assert load_study(str(write(tmp_path, raw, name="v1_2.yaml")))[0].name == "v1_2"


@pytest.mark.parametrize("name", [".", "..", "a/../..", "a/../../b", "/etc", "x/../../wt"])
def test_safe_child_refuses_a_path_that_leaves_its_parent(tmp_path: Path, name: str) -> None:
    (tmp_path / "results").mkdir()
    with pytest.raises(InputError, match="leads outside"):
        safe_child(tmp_path / "results", name)


def test_safe_child_keeps_names_inside_and_follows_symlinks(tmp_path: Path) -> None:
    parent = tmp_path / "results"
    parent.mkdir()
    assert safe_child(parent, "smoke") == parent / "smoke"
    assert safe_child(parent, "a/../b") == parent / "a/../b"  # still inside
    (parent / "out").symlink_to(tmp_path)
    with pytest.raises(InputError, match="leads outside"):
        safe_child(parent, "out/elsewhere")
    with pytest.raises(InputError, match="not a usable name"):
        safe_child(parent, "nul\0byte")


@pytest.mark.parametrize("device", ["meta", "", "tpu", "cuda:x", "CPU", "cpu:-1"])
def test_a_device_vaebench_cannot_run_on_is_refused(tmp_path: Path, device: str) -> None:
    assert "device: " in error_of(tmp_path, mutate(device=device))
    assert f"search.space.device = {json.dumps(device)}" in error_of(tmp_path, space({"device": ["cpu", device]}))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_names_are_checked_for_form_when_loaded(device: str) -> None:
    """Whether the machine has the device is the CLI's check (a flag may override the file)."""
    assert StudySpec.model_validate(mutate(device=device)).device == device


def test_device_problem_asks_torch_about_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_problem("cuda") is None and device_problem("cuda:1") is None
    assert device_problem("cuda:2") == "'cuda:2' requested but this machine has 2 CUDA devices"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_problem("cuda") == "'cuda' requested but this machine has 0 CUDA devices"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device_problem("mps") == "'mps' requested but this machine has 0 MPS devices"
    assert device_problem("cpu") is None and device_problem("auto") is None
    assert "is not a device" in device_problem("meta")


@pytest.mark.parametrize("metric, why", [
    ("val_bogus", "not reported every epoch"), ("n_params", "not reported every epoch"),
    ("epoch", "not reported every epoch"), ("train_seconds", "a timing"), ("train_samples_per_s", "a timing"),
    ("eval_samples_per_s", "a timing"), ("test_elbo", "never optimised"),
])
def test_the_search_optimises_a_score_every_epoch_reports(tmp_path: Path, metric: str, why: str) -> None:
    message = error_of(tmp_path, space({"seed": [0]}, objective=metric))
    assert f"search.objective: '{metric}'" in message and why in message


def test_kl_and_elbo_are_not_optimised_for_a_model_without_a_posterior(tmp_path: Path) -> None:
    ae = {"model": {"arch": "mlp", "objective": "ae", "latent_dim": 4, "likelihood": "bernoulli"}}
    assert StudySpec.model_validate(mutate(**ae, search={
        "sampler": "grid", "objective": "val_recon", "direction": "minimize", "space": {"seed": [0]}}))
    message = error_of(tmp_path, mutate(**ae, search={"sampler": "grid", "space": {"seed": [0]}}))
    assert "search.objective: 'val_elbo' is not reported by objective 'ae'" in message
    message = error_of(tmp_path, space({"model": [{"objective": "vae"}, {"objective": "ae"}]}))
    assert "not reported by objective 'ae' (search.space.model = {\"objective\": \"ae\"})" in message


@pytest.mark.parametrize("objective", ["vae", "ae"])
def test_the_epoch_metrics_are_what_fit_reports(objective: str) -> None:
    from vaebench import data, models, train
    from vaebench.validate import epoch_metrics

    ds = data.load("digits", seed=0)
    model = models.build(arch="mlp", objective=objective, latent_dim=2, likelihood="bernoulli",
                         input_shape=ds.input_shape, hidden=(8,))
    history = train.fit(model, ds, epochs=1, batch_size=512, lr=1e-3)
    assert set(history.last) - {"epoch"} == epoch_metrics(model.is_variational)


@pytest.mark.parametrize("key, dom, expected", [
    ("train.epochs", {"low": 1, "high": 4}, "search.space.train.epochs = 2.5: train.epochs: Input should be a valid integer"),
    ("train.epochs", {"low": 1.5, "high": 4, "type": "int"}, "search.space.train.epochs: an int range needs whole numbers"),
    ("train.epochs", {"low": 0, "high": 4, "type": "int"}, "search.space.train.epochs = 0: train.epochs:"),
    ("train.lr", {"low": 1e-4, "high": float("inf")}, "search.space.train.lr.high: Input should be a finite number"),
    ("train.lr", {"low": float("-inf"), "high": 1.0}, "search.space.train.lr.low: Input should be a finite number"),
    ("model.beta", {"low": -1.0, "high": 2.0}, "search.space.model.beta = -1.0: model.beta:"),
    ("seed", {"low": 0, "high": 2**33, "type": "int"}, "search.space.seed = 8589934592: seed: Input should be less than"),
    ("model.arch", {"low": 1, "high": 2}, "search.space.model.arch = 1.0: model.arch: Input should be a valid string"),
])
def test_a_range_is_checked_over_its_interval_and_against_its_setting(
    tmp_path: Path, key: str, dom: dict, expected: str
) -> None:
    message = error_of(tmp_path, space({key: dom}, sampler="tpe", n_trials=2))
    assert expected in message


def test_ranges_that_fit_their_setting_are_accepted() -> None:
    spec = StudySpec.model_validate(space({
        "train.epochs": {"low": 1, "high": 4, "type": "int"}, "train.lr": {"low": 1, "high": 3, "type": "int"},
        "model.beta": {"low": 0.5, "high": 8.0, "log": True}}, sampler="random", n_trials=3))
    assert spec.with_params({"train.epochs": 3, "train.lr": 2, "model.beta": 2.5}).train.epochs == 3


@pytest.mark.parametrize("values, expected", [
    ({"seed": [0, -1]}, "search.space.seed = -1: seed: Input should be greater than or equal to 0"),
    ({"seed": [2**32]}, "search.space.seed = 4294967296: seed: Input should be less than 4294967296"),
    ({"seed": [2**64]}, "search.space.seed = 18446744073709551616: seed:"),
    ({"model.hidden": [[16], [-5]]}, "search.space.model.hidden = [-5]: model.hidden[0]: Input should be greater than"),
    ({"model.hidden": [[0]]}, "search.space.model.hidden = [0]: model.hidden[0]: Input should be greater than"),
    ({"train.lr": [1e-3, float("inf")]}, "search.space.train.lr[1]: Input should be a finite number"),
    ({"model.beta": [float("nan")]}, "search.space.model.beta[0]: Input should be a finite number"),
    ({"model.beta": [1.0, "inf"]}, "search.space.model.beta = \"inf\": model.beta: Input should be a finite number"),
    ({"dataset.val_fraction": [0.1, 1e-9]}, "use 0 for no validation split"),
])
def test_out_of_range_choices_are_refused(tmp_path: Path, values: dict, expected: str) -> None:
    assert expected in error_of(tmp_path, space(values))


@pytest.mark.parametrize("sections, expected", [
    ({"seed": 4294967296}, "seed: Input should be less than 4294967296"),
    ({"seed": 2**64}, "seed: Input should be less than 4294967296"),
    ({"dataset": {"name": "digits", "seed": 2**32}}, "dataset.seed: Input should be less than"),
    ({"dataset": {"name": "digits", "val_fraction": 1e-9}}, "dataset.val_fraction: 1e-09 would hold almost no examples:"
                                                           " use 0 for no validation split, or at least 0.001"),
    ({"dataset": {"name": "digits", "test_fraction": 1e-9}}, "dataset.test_fraction: 1e-09 would hold almost no examples: use at least 0.001"),
    ({"model": {"arch": "conv", "objective": "vae", "channels": [0]}}, "model.channels[0]: Input should be greater"),
    ({"model": {"arch": "conv", "objective": "vae", "channels": []}}, "model.channels: List should have at least 1"),
    ({"train": {"lr": float("inf")}}, "train.lr: Input should be a finite number"),
])
def test_out_of_range_settings_are_one_line(tmp_path: Path, sections: dict, expected: str) -> None:
    assert expected in error_of(tmp_path, mutate(**sections))


def test_a_small_validation_fraction_is_still_accepted() -> None:
    assert StudySpec.model_validate(mutate(dataset={"val_fraction": 0.001})).dataset.val_fraction == 0.001


def test_searched_settings_are_checked_with_each_objective_choice(tmp_path: Path) -> None:
    message = error_of(tmp_path, space({"model.objective": ["beta_vae", "vae"], "model.beta": [1.0, 4.0]}))
    assert 'search.space.model.beta = 1.0 with model.objective = "vae": model.beta: unknown setting' in message
    message = error_of(tmp_path, space({"model": [{"objective": "beta_vae"}, {"objective": "iwae"}],
                                        "model.beta": [2.0]}))
    assert "search.space.model = {\"objective\": \"iwae\"} with model.beta = 2.0" in message
    message = error_of(tmp_path, space({"model.arch": ["mlp", "conv"], "model.hidden": [[64, 32]]}))
    assert 'model.arch = "conv" with model.hidden = [64, 32]: model: hidden: arch \'conv\' takes one number' in message
    ok = StudySpec.model_validate(space({"model.objective": ["beta_vae", "beta_tcvae"], "model.beta": [1.0, 4.0]}))
    assert ok.search.grid_size() == 4


@pytest.mark.parametrize("key", ["name", "description"])
def test_the_study_label_is_not_a_search_setting(tmp_path: Path, key: str) -> None:
    message = error_of(tmp_path, space({key: ["a", "b"]}))
    assert f"search.space.{key}: the study's own label" in message
    assert StudySpec.model_validate(space({"seed": [0, 1]})).search.grid_size() == 2


@pytest.mark.parametrize("values, expected", [
    ({"seed": [0, 0]}, "search.space.seed: 0 and 0 are the same choice"),
    ({"seed": [0, 1, 0.0]}, "search.space.seed: 0 and 0.0 are the same choice"),
    ({"model.beta": [1, 1.0]}, "search.space.model.beta: 1 and 1.0 are the same choice"),
    ({"model.beta": [1, True]}, "search.space.model.beta: 1 and true are the same choice"),
    ({"model.hidden": [[64], [64.0]]}, "search.space.model.hidden: [64] and [64.0] are the same choice"),
    ({"model": [{"beta": 2.0}, {"objective": "beta_vae", "beta": 2}]}, "search.space.model: {\"beta\": 2.0} and"),
])
def test_equal_choices_are_refused(tmp_path: Path, values: dict, expected: str) -> None:
    assert expected in error_of(tmp_path, space(values))


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    flow = "name: t\nsearch: {space: {seed: " + "[" * 500 + "0" + "]" * 500 + "}}\n"
    assert "study.yaml:2: malformed YAML (nested more than 20 levels deep)" in error_of(tmp_path, flow)
    block = "name: t\n" + "".join("  " * i + f"k{i}:\n" for i in range(500)) + "  " * 500 + "x: 1\n"
    assert "nested more than 20 levels deep" in error_of(tmp_path, block)


def test_aliases_that_expand_without_end_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    assert "more than 100000 values" in error_of(tmp_path, "\n".join(lines) + "\n")
    assert "an alias that refers to itself" in error_of(tmp_path, "name: &a [*a]\n")


def test_duplicate_keys_are_refused_with_their_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "train: {epochs: 5}\n"
    line = text.splitlines().index("train: {epochs: 5}") + 1
    first = text.splitlines().index("train:") + 1
    assert f"study.yaml:{line}: malformed YAML (duplicate key \"train\" (first on line {first}))" in error_of(tmp_path, text)
    nested = "name: t\nmodel:\n  arch: mlp\n  latent_dim: 2\n  latent_dim: 3\n"
    assert 'study.yaml:5: malformed YAML (duplicate key "latent_dim" (first on line 4))' in error_of(tmp_path, nested)


def test_a_merge_key_may_be_overridden() -> None:
    text = "x-base: &b {epochs: 1, lr: 0.01}\ntrain: {<<: *b, lr: 0.02}\n"
    assert yaml.load(text, StudyLoader)["train"] == {"epochs": 1, "lr": 0.02}


@pytest.mark.parametrize("sections, expected", [
    ({"search": {"sampler": "grid", "space": {"model.beta": [1.0, float("inf")]}}}, ": search.space.model.beta[1]: "),
    ({"search": {"sampler": "tpe", "n_trials": 2, "space": {"train.lr": {"low": 1e-4}}}}, ": search.space.train.lr.high: Field required"),
    ({"search": {"sampler": "grid", "space": {"seed": "zero"}}}, ": search.space.seed: Input should be a valid list"),
    ({"search": {"sampler": "grid", "space": {"seed": [0]}, "n_trials": "x"}}, ": search.n_trials: Input should be a valid integer"),
    ({"search": {"sampler": "grid", "space": {"model.beta": []}}}, ": search.space.model.beta: no values to choose from"),
    ({"search": {"sampler": "tpe", "space": {"model.beta": [1.0]}}}, ": search.n_trials: required with the tpe sampler"),
    ({"model": {"hidden": [64, -1]}}, ": model.hidden[1]: Input should be greater than or equal to 1"),
    ({"search": {"sampler": "grid", "space": {"model": [{"beta": [1]}]}}}, ": search.space.model[0].beta: "),
])
def test_messages_name_the_files_keys_not_pydantics(tmp_path: Path, sections: dict, expected: str) -> None:
    message = error_of(tmp_path, mutate(**sections))
    assert expected in message
    assert not re.search(r"list\[|union\[|tuple\[|dict\[|function-|constrained|Range\b|\.float\b|\.int\b", message), message


# -- property: adversarial study files are refused in one line ---------------------------

SHIPPED = sorted((REPO / "studies").glob("*.yaml"))
BAD_NAMES = [".", "..", "../x", "a/../..", "/tmp/x", "a/b", "-rf", ".hidden", "a b", "x\ny", "é", "", "a" * 101]
BAD_DEVICES = ["meta", "", "tpu", "cuda:x", "CPU", "cpu:-1", "cuda cuda"]
BAD_METRICS = ["val_bogus", "train_seconds", "train_samples_per_s", "eval_samples_per_s", "test_elbo", "n_params", "epoch", ""]
NON_FINITE = [float("inf"), float("-inf"), float("nan")]
BAD_CHOICES = [("seed", [-1]), ("seed", [2**32]), ("seed", [2**64]), ("model.hidden", [[0]]), ("model.hidden", [[-5]]),
               ("model.channels", [[0]]), ("train.lr", [0.0]), ("model.beta", [-1.0]), ("train.epochs", [0]),
               ("model.latent_dim", [0]), ("dataset.val_fraction", [1e-9]), ("dataset.val_fraction", [0.7]),
               ("train.batch_size", [-3])]
BAD_RANGES = [("train.epochs", {"low": 1, "high": 4}), ("train.epochs", {"low": 1.5, "high": 4, "type": "int"}),
              ("train.lr", {"low": 1e-4, "high": float("inf")}), ("model.beta", {"low": -1.0, "high": 2.0}),
              ("seed", {"low": 0, "high": 2**33, "type": "int"}), ("train.lr", {"low": 0.0, "high": 1.0, "log": True}),
              ("model.arch", {"low": 1, "high": 2}), ("train.batch_size", {"low": 0, "high": 64, "type": "int"})]


def flow(value: object) -> str:
    """A value in YAML flow style (JSON is YAML), non-finite floats as YAML writes them."""
    return json.dumps(value).replace("-Infinity", "-.inf").replace("Infinity", ".inf").replace("NaN", ".nan")


def numeric_leaves(tree: object, path: tuple = ()) -> list[tuple]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in numeric_leaves(v, path + (k,))]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in numeric_leaves(v, path + (i,))]
    return [path] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def equal_value(value: object) -> list[object]:
    """Values that a setting reads as `value` (1, 1.0 and true for 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        return [value]
    if isinstance(value, list):
        return [value, [float(v) if isinstance(v, int) else v for v in value]]
    same = [value, float(value)] + ([int(value)] if float(value).is_integer() else [])
    return same + ([bool(value)] if value in (0, 1) else [])


def on_space(tree: dict, key: str, dom: object) -> None:
    """`key: dom` in the space, the search made able to take it (so the error is about `key`)."""
    tree["search"]["space"][key] = dom
    if isinstance(dom, dict):
        tree["search"].update(sampler="random", n_trials=4)
    elif tree["search"]["sampler"] == "grid":
        tree["search"].pop("n_trials", None)


@st.composite
def adversarial_study(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """(kind, YAML text, a key the message must name or None): a shipped study file made bad."""
    tree = yaml.safe_load(draw(st.sampled_from(SHIPPED)).read_text())
    tree["name"] = "adv"
    kind = draw(st.sampled_from(["deep", "duplicate key", "non-finite", "bad choice", "bad range", "name",
                                 "equal choices", "device", "metric", "objective x hparam", "label searched"]))
    text, key = None, None
    if kind == "deep":
        depth = draw(st.one_of(st.integers(21, 100), st.sampled_from([500, 600, 1000])))
        if draw(st.booleans()):  # in flow style, as a searched value
            tree["search"]["space"]["seed"] = "DEEP"
            text = yaml.safe_dump(tree).replace("DEEP", "[" * depth + "1" + "]" * depth)
        else:  # in block style, as the description
            tree.pop("description", None)
            text = yaml.safe_dump(tree) + "description:\n" + "".join(
                "  " * i + f"k{i}:\n" for i in range(1, depth)) + "  " * depth + "v: 1\n"
    elif kind == "duplicate key":
        section = draw(st.sampled_from([k for k, v in tree.items() if isinstance(v, dict)]))
        items = list(tree.pop(section).items())
        dup = draw(st.sampled_from(items))
        at = draw(st.integers(0, len(items)))
        items.insert(at, dup)
        text = yaml.safe_dump(tree) + f"{section}: {{" + ", ".join(f"{flow(k)}: {flow(v)}" for k, v in items) + "}\n"
    elif kind == "non-finite":
        leaf = draw(st.sampled_from(numeric_leaves(tree)))
        node = tree
        for part in leaf[:-1]:
            node = node[part]
        node[leaf[-1]] = draw(st.sampled_from(NON_FINITE))
    elif kind == "bad choice":
        key, values = draw(st.sampled_from(BAD_CHOICES))
        current = tree["search"]["space"].get(key)
        on_space(tree, key, draw(st.permutations(values + (current[:1] if isinstance(current, list) else []))))
    elif kind == "bad range":
        key, dom = draw(st.sampled_from(BAD_RANGES))
        on_space(tree, key, dom)
    elif kind == "name":
        tree["name"] = draw(st.sampled_from(BAD_NAMES))
        key = "name"
    elif kind == "equal choices":
        lists = [k for k, v in tree["search"]["space"].items() if isinstance(v, list)] or ["seed"]
        key = draw(st.sampled_from(lists))
        values = list(tree["search"]["space"].get(key, [0]))
        twin = draw(st.sampled_from(equal_value(draw(st.sampled_from(values)))))
        values.insert(draw(st.integers(0, len(values))), twin)
        on_space(tree, key, values)
    elif kind == "device":
        tree["device"] = draw(st.sampled_from(BAD_DEVICES))
        key = "device"
    elif kind == "metric":
        tree["search"]["objective"] = draw(st.sampled_from(BAD_METRICS))
        key = "search.objective"
    elif kind == "objective x hparam":
        hparam, value = draw(st.sampled_from([("beta", [1.0, 4.0]), ("k", [2]), ("c_max", [5.0]), ("alpha", [2.0])]))
        takes = [o for o in models.OBJECTIVES if hparam in models.objective_hparams(o)]
        objectives = [draw(st.sampled_from(takes))] + draw(st.permutations(list(models.OBJECTIVES)))[:2]
        if all(o in takes for o in objectives):
            objectives.append("vae")
        # the study's own objective takes the hparam: each searched key alone is valid
        tree["model"] = {k: v for k, v in tree["model"].items() if k in ("arch", "latent_dim", "likelihood")}
        tree["model"]["objective"] = objectives[0]
        tree["search"].update(sampler="grid", space={"model.objective": list(dict.fromkeys(objectives)),
                                                     f"model.{hparam}": value})
        tree["search"].pop("n_trials", None)
        key = "search.space.model."
    else:
        label = draw(st.sampled_from(["name", "description"]))
        on_space(tree, label, ["a", "b"])
        key = f"search.space.{label}"
    if kind in ("bad choice", "bad range", "equal choices") and key is not None:
        key = f"search.space.{key}"
    return kind, text if text is not None else yaml.safe_dump(tree, allow_unicode=True), key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=adversarial_study())
def test_adversarial_study_files_are_refused_in_one_line(case: tuple[str, str, str | None]) -> None:
    """Every generated file is bad: load_study raises InputError, one line naming the file
    (and the key, where the mutation was aimed at one) and none of pydantic's own path steps;
    the CLI exits 2 with that line and leaves the folder as it was."""
    kind, text, key = case
    event(kind)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        Path("adv.yaml").write_text(text)
        with pytest.raises(InputError) as info:
            load_study("adv.yaml")
        message = str(info.value)
        assert message.startswith("adv.yaml") and "\n" not in message, message
        assert key is None or key in message, (key, message)
        assert not re.search(r"list\[|union\[|tuple\[|dict\[|function-|constrained", message), message
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(err):
            code = cli.main(["run", "--study", "adv.yaml", "--storage", "sqlite:///optuna.db",
                             "--tracking-uri", "sqlite:///mlflow.db", "--no-progress"])
        assert (code, out.getvalue(), err.getvalue().count("\n")) == (2, "", 1), err.getvalue()
        assert err.getvalue().startswith("vaebench: error: adv.yaml") and os.listdir(".") == ["adv.yaml"]


def test_a_float_range_is_checked_just_above_its_low_end(tmp_path: Path) -> None:
    """The fraction rule (0, or at least MIN_FRACTION) has a gap a range's ends can straddle."""
    from vaebench.config import Range
    from vaebench.validate import domain_values

    values = domain_values(Range(low=0.0, high=0.3))
    assert values[:2] == [0.0, 0.3] and not values[2].is_integer() and 0 < values[3] < 1e-300
    message = error_of(tmp_path, space({"dataset.val_fraction": {"low": 0.0, "high": 0.3}}, sampler="tpe", n_trials=2))
    assert "search.space.dataset.val_fraction = 0.0" in message or "= 5e-324: dataset.val_fraction" in message
    spec = StudySpec.model_validate(space({"dataset.val_fraction": {"low": 0.05, "high": 0.3}}, sampler="tpe", n_trials=2))
    assert spec.search.space["dataset.val_fraction"].low == 0.05


def test_wrong_kinds_of_value_are_named_together_in_the_files_terms(tmp_path: Path) -> None:
    assert error_of(tmp_path, space({"seed": 3})).endswith(
        "search.space.seed: Input should be a valid list or a valid dictionary")
    assert error_of(tmp_path, mutate(model=5)).endswith(": model: Input should be a valid dictionary")
    assert error_of(tmp_path, mutate(model={"hidden": {"a": 1}})).endswith(
        "model.hidden: Input should be a valid integer or a valid list")


@pytest.mark.parametrize("text, expected", [
    ('"a\\nb": 1\nsearch: {sampler: grid, space: {seed: [0]}}\n', ": a\\nb: unknown setting"),
    ('model: {arch: "mlp\\rx"}\nsearch: {sampler: grid, space: {seed: [0]}}\n', ": model: unknown arch 'mlp\\rx'; known:"),
    ('search: {sampler: grid, space: {"seed\\u2028": [0]}}\n', ": search.space.seed\\u2028: no such setting"),
])
def test_a_message_is_one_line_whatever_the_file_holds(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, "name: t\n" + text)


def test_a_key_that_is_a_number_is_named_as_a_key(tmp_path: Path) -> None:
    assert error_of(tmp_path, "name: t\n1: 2\nsearch: {sampler: grid, space: {seed: [0]}}\n").endswith(
        ": 1: Keys should be strings")
