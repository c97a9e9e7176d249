"""Checks of study settings that field types cannot express: safe names, devices, the metric a
search optimises, and every point a search space can reach. Pure functions, no I/O;
config.py calls them, and a failure becomes one line naming the file and the key.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaebench.errors import InputError

NAME_RULE = "letters, digits, _ and - only, not starting with -, at most 100 characters"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
_DEVICE = re.compile(r"auto|(cpu|cuda|mps)(:[0-9]+)?")
SEED_LIMIT = 2**32  # NumPy and scikit-learn take 32-bit seeds
MIN_FRACTION = 1e-3  # a smaller split would hold no example of most classes on any shipped dataset
MAX_CHOICES = 1000  # per key: more is no grid, and every choice is validated up front
MAX_GRID = 1_000_000  # Optuna's grid sampler lists every point in memory
UNSEARCHABLE = frozenset({"name", "description"})
# What train.fit reports after every epoch (tests hold these to fit's output); val_kl and
# val_elbo only when the model has a posterior. The search optimises one of them.
EPOCH_METRICS = frozenset({"train_loss", "val_recon"})
POSTERIOR_METRICS = frozenset({"val_kl", "val_elbo"})
TIMING_METRICS = frozenset({"train_seconds", "train_samples_per_s", "eval_samples_per_s"})


class SettingError(ValueError):
    """A problem with one setting; `where` is its key path in the study file, from the top
    (`search.space.model.beta`, perhaps with the value: `search.space.seed = -1`)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def shown(value: Any) -> str:
    """A value as the study file writes it (true, 1.0, "vae", [64])."""
    return json.dumps(value, default=str)


def check_name(name: str) -> str:
    """A study name becomes a folder, an MLflow experiment and an Optuna study: keep it plain."""
    if not _NAME.fullmatch(name):
        short = name if len(name) <= 40 else name[:37] + "..."
        raise ValueError(f"{short!r} is not a usable study name: {NAME_RULE}")
    return name


def safe_child(parent: Path, name: str) -> Path:
    """`parent / name`, refused unless it lies strictly inside `parent` once both are resolved
    (symlinks followed): `.`, `..`, `a/../..` or an absolute path cannot reach outside it."""
    try:
        base = parent.resolve()
        inside = (base / name).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
        raise InputError(f"{name!r}: not a usable name for a folder in {parent} ({exc})") from None
    if inside == base or not inside.is_relative_to(base):
        raise InputError(f"{name!r}: not a usable name for a folder in {parent} (it leads outside it)")
    return parent / name


def check_device_name(name: str) -> str:
    """The spellings vaebench runs on: auto, cpu, cuda, cuda:N, mps (not meta, not '')."""
    if not _DEVICE.fullmatch(name):
        raise ValueError(f"{name!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return name


def device_problem(name: str) -> str | None:
    """Why `name` cannot run on this machine, or None when it can."""
    try:
        check_device_name(name)
    except ValueError as exc:
        return str(exc)
    kind, _, index = name.partition(":")
    if kind in ("auto", "cpu"):
        return None
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    else:
        count = int(torch.backends.mps.is_available())
    if int(index or 0) >= count:
        return f"{name!r} requested but this machine has {count} {kind.upper()} device{'s' * (count != 1)}"
    return None


def check_objective_metric(metric: str) -> None:
    """The metric a search optimises: a score every epoch reports (the pruner needs it each
    epoch), never the test split and never a timing."""
    if metric.startswith("test_"):
        raise SettingError("search.objective", f"{metric!r}: the test split is never optimised")
    if metric in TIMING_METRICS or metric.endswith("_samples_per_s"):
        raise SettingError("search.objective", f"{metric!r} is a timing, not a score to optimise")
    known = EPOCH_METRICS | POSTERIOR_METRICS
    if metric not in known:
        raise SettingError("search.objective",
                           f"{metric!r} is not reported every epoch (one of: {', '.join(sorted(known))})")


def epoch_metrics(variational: bool, validation: bool = True) -> frozenset[str]:
    """What fit reports every epoch: train_loss, and the val_ terms only with a validation
    split (val_fraction > 0), val_kl and val_elbo only for a model with a posterior."""
    metrics = EPOCH_METRICS | (POSTERIOR_METRICS if variational else frozenset())
    return metrics if validation else frozenset(m for m in metrics if not m.startswith("val_"))


def interior(low: float, high: float) -> float:
    """A non-whole value strictly inside (low, high): a float range on an integer setting
    passes at whole ends but fails here."""
    for t in (0.5, 0.377, 0.123):
        x = low + (high - low) * t
        if low < x < high and not float(x).is_integer():
            return x
    return (low + high) / 2


Resolve = Callable[[dict[str, Any]], dict[str, Any]]


def check_space(space: dict[str, Any], resolve: Resolve) -> None:
    """Resolve every point worth checking: each value of each key (a range at both ends and
    inside), and, where a key picks names or mappings (arch, objective, a `model` mapping),
    each of its values with each value of every other key of its section. `resolve(params)`
    returns the trial's flat settings or raises SettingError. Equal choices are refused:
    Optuna would count each as a grid point of its own."""
    for key, dom in space.items():
        if key in UNSEARCHABLE:
            raise SettingError(f"search.space.{key}", "the study's own label, not a setting to search")
        values = domain_values(dom)
        if len(values) > MAX_CHOICES:
            raise SettingError(f"search.space.{key}", f"{len(values)} choices (at most {MAX_CHOICES})")
        seen: dict[tuple, Any] = {}
        for value in values:
            point = logged_point(key, resolve({key: value}))
            if point in seen:
                raise SettingError(f"search.space.{key}",
                                   f"{shown(seen[point])} and {shown(value)} are the same choice; list each once")
            seen[point] = value
    for (a, dom_a), (b, dom_b) in itertools.combinations(space.items(), 2):
        if a.split(".")[0] == b.split(".")[0] and (selects(dom_a) or selects(dom_b)):
            for va, vb in itertools.product(domain_values(dom_a), domain_values(dom_b)):
                resolve({a: va, b: vb})


def domain_values(dom: Any) -> list[Any]:
    """A list's choices; a range's ends (whole numbers for an int range), and for a float
    range a non-whole interior value and the next float above `low` (a split fraction may be
    0 but not just above it)."""
    if isinstance(dom, list):
        return dom
    if dom.type == "int":
        return [int(dom.low), int(dom.high)]
    return [dom.low, dom.high, interior(dom.low, dom.high), math.nextafter(dom.low, dom.high)]


def selects(dom: Any) -> bool:
    """Whether a key's choices pick names or several settings at once (they decide what else applies)."""
    return isinstance(dom, list) and any(isinstance(v, (str, dict)) for v in dom)


def logged_point(key: str, flat: dict[str, Any]) -> tuple:
    """The values a choice gives its key (and, for a section, the keys under it) as they are
    logged: 1, 1.0 and true for a float setting are one point."""
    return tuple(sorted((k, repr(v)) for k, v in flat.items() if k == key or k.startswith(key + ".")))

