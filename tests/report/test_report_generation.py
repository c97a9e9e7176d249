"""The report's generation section: leaderboard columns with paired tests, the table with its
reference rows, the chart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vaebench import report
from vaebench import tracking as tk
from vaebench.metrics import sampling
from vaebench.report import generation

REFS = {"real_data": {"fd": 13.1, "precision": 0.88, "recall": 0.875, "density": 1.03, "coverage": 0.9,
                      "classes_covered": 10.0, "class_kl": 0.001},
        "mean_image": {"fd": 1261.1, "precision": 1.0, "recall": 0.0, "density": 1.42, "coverage": 0.02,
                       "classes_covered": 6.0, "class_kl": 1.46}}


def record() -> report.StudyRecord:
    rows = []
    for i, (beta, seed) in enumerate([(b, s) for b in (1.0, 4.0) for s in (0, 1, 2)]):
        scores = {m: 100.0 * beta + seed for m in sampling.METRICS}
        rows.append({"trial": i, "run_name": f"t{i}", "run_id": f"r{i}", "state": "COMPLETE",
                     "param.model.beta": str(beta), "param.seed": str(seed), "val_elbo": -100.0 * beta - seed,
                     **scores, f"tag.{tk.GENERATION_REFERENCE}": json.dumps(REFS), f"tag.{tk.GENERATION_SAMPLES}": "1000",
                     f"tag.{tk.GENERATION_SEED}": "0", f"tag.{tk.GENERATION_SHA256}": "abc"})
    return report.StudyRecord("s", "x", None, pd.DataFrame(rows), "val_elbo", "maximize",
                              {"model.beta": [1.0, 4.0], "seed": [0, 1, 2]})


def test_generation_metrics_get_seed_statistics_and_paired_tests() -> None:
    board = report.per_config(record())
    for m in sampling.METRICS:
        assert {f"{m}_mean", f"{m}_ci95", f"{m}_n", f"{m}_p_holm", f"{m}_diff_to_best"} <= set(board)
    worse = board.set_index("config").loc["beta=4"]
    assert worse["test_fd_gmm_mean"] == 401.0 and worse["test_fd_gmm_diff_to_best"] == 300.0
    assert worse["test_fd_gmm_p_holm"] == 0.0  # a constant paired difference of 300 over 3 seeds
    assert generation.measured(board) == list(sampling.METRICS)


def test_the_table_puts_the_reference_rows_beside_every_configuration() -> None:
    rec = record()
    board = report.per_config(rec)
    assert generation.references(rec.finished) == REFS
    lines = generation.table(board, generation.references(rec.finished))
    assert len(lines) == 2 + 3 * len(board) + 2
    assert lines[2].startswith("| beta=1 | prior N(0, I) | 101.00 ± 2.48 |")  # seeds 0 1 2: t(2) * 1 / sqrt(3)
    assert lines[4] == "| beta=1 | test-set reconstructions | 101.00 ± 2.48 |" + "  |" * 6
    assert lines[-2] == "| reference | real data: training images (floor) | 13.10 | 0.8800 | 0.8750 | 1.03 | 0.9000 | 10.00 | 0.0010 |"
    assert "near ceiling" in lines[-1] and "| 1261.10 |" in lines[-1]


def test_the_chart_is_written_and_a_study_without_generation_has_no_section(tmp_path: Path) -> None:
    rec = record()
    board = report.per_config(rec)
    path = generation.chart(board, "model.beta", REFS, tmp_path / "generation.png")
    assert path.stat().st_size > 10_000
    plain = board.drop(columns=[c for c in board if c.startswith(tuple(sampling.METRICS))])
    assert generation.lines(plain, rec.finished, rec.swept, "unused", tmp_path) == []
    nan = board.assign(**{f"{m}_mean": np.nan for m in sampling.METRICS})  # every trial skipped (e.g. 8x8 digits)
    assert generation.measured(nan) == []
