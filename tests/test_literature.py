"""vaebench.literature: published numbers beside a study's, matched by settings."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from vaebench.config import load_study
from vaebench.literature import LiteratureSpec, comparison, markdown

SPEC = LiteratureSpec.model_validate({
    "source": "A paper, Table 1", "metric": "test_iwae_ll", "reported_as": "negated", "protocol_epochs": 100,
    "rows": [{"label": "VAE", "where": {"model.objective": "vae"}, "value": 86.0},
             {"label": "IWAE k=5", "where": {"model.objective": "iwae", "model.k": 5}, "value": 85.0},
             {"label": "never run", "where": {"model.objective": "ae"}, "value": 1.0}],
})


def board() -> pd.DataFrame:
    """Two configurations as per_config gives them: logged params are strings."""
    return pd.DataFrame([
        {"config": "objective=vae", "param.model.objective": "vae", "param.model.k": math.nan,
         "param.train.epochs": "100", "n_seeds": 3, "test_iwae_ll_mean": -87.5, "test_iwae_ll_ci95": 0.4,
         "train_seconds_mean": 7200.0},
        {"config": "objective=iwae k=5", "param.model.objective": "iwae", "param.model.k": "5",
         "param.train.epochs": "40", "n_seeds": 1, "test_iwae_ll_mean": -86.0, "test_iwae_ll_ci95": math.nan,
         "train_seconds_mean": 1800.0},
    ])


def test_rows_match_configurations_by_their_settings_and_compare_on_the_published_scale() -> None:
    table = comparison(board(), SPEC)
    assert list(table["label"]) == ["VAE", "IWAE k=5"]  # nothing ran for the third row
    vae, iwae = table.to_dict("records")
    assert (vae["published"], vae["vaebench_mean"], vae["gap"]) == (86.0, 87.5, 1.5)  # NLL = -log-likelihood
    assert vae["protocol"] == "full" and vae["train_hours_per_seed"] == 2.0
    assert iwae["gap"] == 1.0 and iwae["protocol"] == "shortened (40 of 100 epochs)"


def test_the_markdown_table_says_which_rows_are_shortened() -> None:
    lines = markdown(comparison(board(), SPEC), SPEC, "cpu")
    assert lines[0] == "## Against the literature" and "−test_iwae_ll" in lines[2]
    assert "| VAE | 86.00 | 87.50 ± 0.40 | +1.50 | 3 | 100 | full | 2.00 h (cpu) |" in lines
    assert "| IWAE k=5 | 85.00 | 86.00 | +1.00 | 1 | 40 | shortened (40 of 100 epochs) | 0.50 h (cpu) |" in lines


def test_the_literature_section_survives_a_round_trip_and_refuses_no_rows() -> None:
    assert LiteratureSpec.from_json(SPEC.to_json()) == SPEC
    with pytest.raises(ValidationError):
        LiteratureSpec.model_validate({"source": "x", "rows": []})


def test_the_burda_studies_name_the_published_table() -> None:
    full, _ = load_study("burda_mnist")
    cpu, _ = load_study("burda_mnist_cpu")
    assert [r.value for r in full.literature.rows] == [86.76, 85.54, 84.78]
    assert cpu.literature.protocol_epochs == full.train.epochs == 3280 and cpu.train.epochs == 121
    # the CPU study is the full one with the schedule cut: nothing else differs
    assert cpu.model == full.model and cpu.dataset == full.dataset and cpu.eval == full.eval
    assert cpu.train.model_copy(update={"epochs": 3280}) == full.train
