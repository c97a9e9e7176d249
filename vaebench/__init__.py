"""vaebench: a benchmark suite for variational autoencoders.

    from vaebench import data, models, train, metrics

Submodules are imported on first use, so `import vaebench` and the CLI's --help stay fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["config", "data", "metrics", "models", "report", "search", "stores", "tracking", "train", "trial"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"vaebench.{name}")
    raise AttributeError(f"module 'vaebench' has no attribute {name!r}")
