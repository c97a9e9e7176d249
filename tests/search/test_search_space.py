"""search.space: samplers (per-trial seeds, list choices) and the registered pruners on
constructed curves whose verdict is known."""
from __future__ import annotations

import typing
from collections.abc import Callable

import optuna
import pytest

from vaebench import search
from vaebench.config import SearchSpec, StudySpec


def spec_of(search_section: dict) -> StudySpec:
    """A tiny study with `search_section` over the default grid."""
    return StudySpec.model_validate({
        "name": "t",
        "dataset": {"name": "digits"},
        "model": {"arch": "mlp", "objective": "beta_vae", "latent_dim": 4, "likelihood": "bernoulli"},
        "train": {"epochs": 1},
        "search": {"sampler": "grid", "space": {"model.beta": [1.0, 2.0]}} | search_section,
    })


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_workers_sharing_a_seed_draw_by_trial_number(sampler: str) -> None:
    """Two workers with the same study seed draw different values for different trials, and
    trial n draws the same values whichever worker runs it."""
    spec = spec_of({"sampler": sampler, "n_trials": 4, "space": {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True}}})

    def draws(order: list[int]) -> dict[int, float]:
        storage = optuna.storages.InMemoryStorage()
        workers = [optuna.create_study(study_name="s", storage=storage, sampler=search.SAMPLERS[sampler](spec),
                                       load_if_exists=True) for _ in range(2)]
        values = {}
        for w in order:
            trial = workers[w].ask()
            values[trial.number] = search.suggest(trial, spec)["train.lr"]
        return values

    first, second = draws([0, 1, 0]), draws([1, 1, 0])
    assert first == second
    assert len(set(first.values())) == 3


def test_list_choices_reach_optuna_as_labels_and_trials_as_values() -> None:
    """Optuna takes scalar choices only: a list choice (hidden widths) goes through its label."""
    spec = spec_of({"sampler": "grid", "space": {"model.hidden": [[32, 16], [64]], "model.beta": [1.0]}})
    assert spec.search.choices("model.hidden") == {"[32, 16]": [32, 16], "[64]": [64]}
    study = optuna.create_study(sampler=search.SAMPLERS["grid"](spec))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        params = search.suggest(trial, spec)
        seen.append(spec.with_params(params).model.hidden)
        assert trial.params["model.hidden"] == str(list(params["model.hidden"]))
        assert spec.search.values(trial.params) == params
        return 0.0

    study.optimize(objective, n_trials=2)
    assert sorted(seen) == [(32, 16), (64,)] and all(t.state.name == "COMPLETE" for t in study.trials)


PRUNER_NAMES = typing.get_args(SearchSpec.model_fields["pruner"].annotation)


@pytest.mark.parametrize("pruner", PRUNER_NAMES)
def test_every_pruner_name_builds_an_optuna_pruner(pruner: str) -> None:
    assert set(search.PRUNERS) == set(PRUNER_NAMES)
    spec = spec_of({"pruner": pruner})
    assert isinstance(search.PRUNERS[pruner](spec), optuna.pruners.BasePruner)


def pruning_study(pruner: str, finished: int, epochs: int) -> Callable[[list[float]], int | None]:
    """A study with `pruner` and `finished` whole trials of flat curves 0, 1, ...; returns a
    function that runs one more trial along a curve and says at which epoch it was pruned."""
    spec = spec_of({"pruner": pruner})
    study = optuna.create_study(direction="maximize", pruner=search.PRUNERS[pruner](spec))
    for value in range(finished):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(float(value), epoch)
        study.tell(trial, float(value))

    def pruned_at(curve: list[float]) -> int | None:
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch
        study.tell(trial, curve[-1])
        return None

    return pruned_at


def test_the_percentile_pruner_waits_for_epoch_3_and_keeps_the_best_quarter() -> None:
    pruned_at = pruning_study("percentile", finished=8, epochs=3)  # finished: 0, 1, ..., 7
    assert pruned_at([-1.0, -1.0, -1.0]) == 3  # the worst, but judged only from epoch 3
    assert pruned_at([4.5, 4.5, 4.5]) == 3  # above the median, below the best quarter
    assert pruned_at([6.0, 6.0, 6.0]) is None


def test_the_staged_pruner_keeps_the_better_half_from_epoch_1_and_the_best_third_from_epoch_5() -> None:
    pruned_at = pruning_study("staged", finished=9, epochs=6)  # median 4, best third above 5.33
    assert pruned_at([3.5] * 6) == 1  # below the median: stopped at once
    assert pruned_at([5.0] * 6) == 5  # above the median, outside the best third: stopped at epoch 5
    assert pruned_at([4.5, 4.5, 4.5, 4.5, 6.0, 6.0]) is None  # outside the best third only until epoch 4
    assert pruned_at([6.0] * 6) is None
