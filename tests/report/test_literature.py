"""vaebench.report.literature: published numbers beside a study's, matched by settings."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from vaebench.config import load_study
from vaebench.report.literature import LiteratureSpec, comparison, markdown

SPEC = LiteratureSpec.model_validate({
    "source": "A paper, Table 1", "metric": "test_iwae_ll", "reported_as": "negated", "protocol_epochs": 100,
    "binarize": "dynamic",
    "rows": [{"label": "VAE", "where": {"model.objective": "vae"}, "value": 86.0},
             {"label": "IWAE k=5", "where": {"model.objective": "iwae", "model.k": 5}, "value": 85.0},
             {"label": "never run", "where": {"model.objective": "ae"}, "value": 1.0}],
})


FIXED = {"param.dataset.name": "mnist", "param.dataset.val_fraction": "0.0", "param.eval.iwae_k": "5000",
         "param.model.arch": "mlp", "param.model.hidden": "[200, 200]", "param.model.latent_dim": "50",
         "param.model.activation": "tanh"}


def board() -> pd.DataFrame:
    """Three configurations as per_config gives them: logged params are strings."""
    return pd.DataFrame([
        {"config": "objective=vae", "param.model.objective": "vae", "param.model.k": math.nan,
         "param.dataset.binarize": "dynamic", "param.train.epochs": "100", "n_seeds": 3,
         "test_iwae_ll_mean": -87.5, "test_iwae_ll_ci95": 0.4, "train_seconds_mean": 7200.0} | FIXED,
        {"config": "objective=iwae k=5", "param.model.objective": "iwae", "param.model.k": "5",
         "param.dataset.binarize": "dynamic", "param.train.epochs": "40", "n_seeds": 1,
         "test_iwae_ll_mean": -86.0, "test_iwae_ll_ci95": math.nan, "train_seconds_mean": 1800.0} | FIXED,
        {"config": "objective=vae static", "param.model.objective": "vae", "param.model.k": math.nan,
         "param.dataset.binarize": "static", "param.train.epochs": "100", "n_seeds": 3,
         "test_iwae_ll_mean": -80.0, "test_iwae_ll_ci95": 0.4, "train_seconds_mean": 7200.0} | FIXED,
    ])


def test_rows_match_configurations_by_their_settings_and_compare_on_the_published_scale() -> None:
    table = comparison(board(), SPEC)
    assert list(table["label"]) == ["VAE", "IWAE k=5"]  # nothing ran for the third row; static data never compared
    vae, iwae = table.to_dict("records")
    assert (vae["published"], vae["vaebench_mean"], vae["gap"]) == (86.0, 87.5, 1.5)  # NLL = -log-likelihood
    assert vae["protocol"] == "full" and vae["train_hours_per_seed"] == 2.0
    assert iwae["gap"] == 1.0 and iwae["protocol"] == "shortened (40 of 100 epochs)"
    assert (vae["k"], iwae["k"]) == ("1 / 5000", "5 / 5000")
    assert vae["architecture"] == "mlp 200-200, 50 latents, tanh"
    assert (vae["binarize"], vae["training_data"]) == ("dynamic", "mnist, all training digits")


def test_without_a_stated_binarisation_every_matching_configuration_is_compared() -> None:
    spec = SPEC.model_copy(update={"binarize": None})
    assert list(comparison(board(), spec)["config"]) == ["objective=vae", "objective=vae static", "objective=iwae k=5"]


def test_the_markdown_table_says_which_rows_are_shortened() -> None:
    lines = markdown(comparison(board(), SPEC), SPEC, "cpu")
    assert lines[0] == "## Against the literature" and "−test_iwae_ll" in lines[2]
    setup = "dynamic | 1 / 5000 | mlp 200-200, 50 latents, tanh | mnist, all training digits"
    assert f"| VAE | 86.00 | 87.50 ± 0.40 | +1.50 | 3 | 100 | full | {setup} | 2.00 h (cpu) |" in lines
    assert ("| IWAE k=5 | 85.00 | 86.00 | +1.00 | 1 | 40 | shortened (40 of 100 epochs) | "
            f"{setup.replace('1 / 5000', '5 / 5000')} | 0.50 h (cpu) |") in lines


def test_the_literature_section_survives_a_round_trip_and_refuses_no_rows() -> None:
    assert LiteratureSpec.from_json(SPEC.to_json()) == SPEC
    with pytest.raises(ValidationError):
        LiteratureSpec.model_validate({"source": "x", "rows": []})


def test_the_burda_studies_name_the_published_table() -> None:
    full, _ = load_study("burda_mnist")
    cpu, _ = load_study("burda_mnist_cpu")
    assert [r.value for r in full.literature.rows] == [86.76, 85.54, 84.78]
    assert full.literature.binarize == cpu.literature.binarize == full.dataset.binarize == "dynamic"
    assert cpu.literature.protocol_epochs == full.train.epochs == 3280 and cpu.train.epochs == 121
    # the CPU study is the full one with the schedule cut: nothing else differs
    assert cpu.model == full.model and cpu.dataset == full.dataset and cpu.eval == full.eval
    # (the CPU study pins the eager step its committed numbers were run with)
    assert cpu.train.step == "eager"
    assert cpu.train.model_copy(update={"epochs": 3280, "step": full.train.step}) == full.train
