"""Rebuild a committed report's leaderboard.csv and its statistics from trials.csv alone.

The MLflow stores behind results/<study>/ are not committed, so `vaebench report` cannot
rerun there. trials.csv holds every finished trial (params and metrics), which is all the
leaderboard and the significance sections need: this script recomputes leaderboard.csv
(checking that the columns it already had come out identical), rewrites report.md from
`## Leaderboard` up to `## Figures` (leaderboard, best configuration, budget) with the
functions `vaebench report` uses, and keeps every other section as it was.

    python benchmarks/rebuild_from_trials.py beta_sweep disentangle
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from vaebench import config, report

from vaebench.report import significance

REPO = Path(__file__).resolve().parent.parent


def rebuild(study: str, results: Path) -> Path:
    spec, _ = config.load_study(study)
    folder = results / spec.name
    trials = pd.read_csv(folder / "trials.csv")
    space = spec.search.model_dump()["space"]
    record = report.StudyRecord(spec.name, "", None, trials, spec.search.objective, spec.search.direction, space)
    board = report.per_config(record)
    old = pd.read_csv(folder / "leaderboard.csv")
    pd.testing.assert_frame_equal(board[old.columns].reset_index(drop=True), old, check_dtype=False)
    report.write_csv(board, folder / "leaderboard.csv")
    done = record.finished
    sections = [
        *report.leaderboard_lines(board, done, record.objective, record.direction,
                                  report.table_metrics(board, record.objective)),
        *significance.budget_lines(board, done, record.objective, record.direction, spec.search.sampler,
                                   "seed" in space, folder),
    ]
    text = (folder / "report.md").read_text()
    start, end = text.index("## Leaderboard"), text.index("## Figures")
    (folder / "report.md").write_text(text[:start] + "\n".join([*sections, ""]) + text[end:])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study names (their results/<name>/trials.csv must exist)")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args()
    for study in args.studies:
        print(f"rebuilt {rebuild(study, args.results)}")


if __name__ == "__main__":
    main()
