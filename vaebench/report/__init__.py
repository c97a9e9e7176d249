"""Reports, rebuilt from what was tracked in MLflow alone (no retraining).

- record: a study's runs read back from MLflow, per-trial and per-configuration tables;
- build: report.md, leaderboard.csv, trials.csv, figures/ and the manifest in results/<study>;
- stats, significance: confidence intervals, paired tests against the best, seeds needed;
- literature, stages: published numbers beside vaebench's, the curve at schedule stage ends;
- figures: the study's charts.

The face is loaded lazily: config.py reads `report.literature`'s spec, and the report reads
config, so importing the package must not import the report's own modules eagerly.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("record", "build")  # the face: every public name of these
_SUBMODULES = frozenset({*_MODULES, "figures", "literature", "significance", "stages", "stats"})


def __getattr__(name: str) -> Any:
    if not name.startswith("_") and name not in _SUBMODULES:  # a submodule is imported, not looked up
        for module in _MODULES:
            found = importlib.import_module(f"vaebench.report.{module}")
            if hasattr(found, name):
                return getattr(found, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
