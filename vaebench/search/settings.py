"""The settings a study's trials run with, recorded when the study starts, so that a study file
changed between runs (or another file with the same `name`) is refused instead of mixed in.

Without it a resume after `train.epochs: 2 -> 3` ranks trials of 3 epochs against trials of 2
in one report, a flipped `direction` is ignored, and a grown grid never completes. The
settings are the study file as validated (defaults filled in), flattened to dotted keys; they
are kept in the Optuna study's user attribute SETTINGS_ATTR (the MLflow parent run keeps the
study file and manifest.json). The first worker records them; every later run and every worker beside it
compares, before anything is written or trained, and a difference is refused in one line that
names the changed keys and offers --fresh or a new name.

What may change without refusal (FREE): settings that do not change what a trial measures:
  name          the study is found by it; a file with the same name is compared
  description   words only
  literature    published numbers the report sets beside the study's
  plugins       where the model files live: their paths may change, their code may not
                (its sha256s are recorded as PLUGIN_CODE: an edited model mixed in is
                the same mistake as an edited study file)
  device        where trials run: workers of one study may run on different machines or
                GPUs, and each run records its device
  search.n_trials  how many trials, not what each one measures (`--trials` overrides it too)
Everything else (seed, data, model, training, evaluation, sampler, pruner, objective,
direction, space) changes the trials or what is compared, so it is refused. A setting that a
later vaebench adds counts as unchanged while it is unset (None). A study recorded by a
vaebench without this check has no settings: its next run records them.

Growing a grid (a value added to a `search.space` list) is refused too: Optuna's GridSampler
numbers the points of its own grid (a shuffled product) and gives trial n point n while n is
below the grid's size, so a grown grid re-runs points already run; and a categorical
parameter's choices cannot change within a study (Optuna's "CategoricalDistribution does not
support dynamic value space"), so re-queued trials of the old grid would fail.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from vaebench.config import StudySpec
from vaebench.errors import InputError
from vaebench.models import plugins
from vaebench.search.attrs import SETTINGS_ATTR
from vaebench.search.consistency import optuna_side

# Settings excluded from the record: they do not change what a trial measures (see above).
FREE: dict[str, Any] = {"name": True, "description": True, "literature": True, "plugins": True,
                        "device": True, "search": {"n_trials"}}
SHOWN_CHANGES = 4  # changed keys named in the refusal; the rest are counted
PLUGIN_CODE = "plugins.sha256"  # the sorted sha256s of the plugin files' bytes


def resolved(spec: StudySpec, path: str = "") -> dict[str, Any]:
    """The settings of `spec` that its trials' results depend on, as {dotted key: JSON value};
    with the study file's `path`, the code of its plugins too (resolved next to it)."""
    flat: dict[str, Any] = {}
    if spec.plugins and path:
        flat[PLUGIN_CODE] = sorted(plugins.file_hash(Path(path).parent / p) for p in spec.plugins)

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", spec.model_dump(mode="json", exclude=FREE))
    return flat


def _shown(settings: dict[str, Any], key: str) -> str:
    return json.dumps(settings[key]) if key in settings else "unset"


def changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each setting that differs; a key that one side lacks and the other
    leaves unset (None) is the same."""
    keys = sorted(set(recorded) | set(now))
    differ = [k for k in keys if recorded.get(k) != now.get(k)]
    return [f"{k}: {_shown(recorded, k)} -> {_shown(now, k)}" for k in differ]


def refusal(spec: StudySpec, path: str, differ: list[str]) -> str:
    """The one line that refuses a run whose settings differ from the study's record."""
    named = ", ".join(differ[:SHOWN_CHANGES]) + (f" and {len(differ) - SHOWN_CHANGES} more"
                                                  if len(differ) > SHOWN_CHANGES else "")
    return (f"{path or spec.name}: study {spec.name} already has trials run with other settings ({named}); "
            f"they would be compared with these: pass --fresh to start it over (its Optuna trials are "
            f"deleted), or give the changed study a new name")


def check(spec: StudySpec, path: str, recorded: dict[str, Any] | None) -> None:
    """Refuse `spec` when it differs from the `recorded` settings (None: nothing to compare)."""
    if recorded is None:
        return
    differ = changes(recorded, resolved(spec, path))
    if differ:
        raise InputError(refusal(spec, path, differ))


def check_settings(spec: StudySpec, path: str, storage_url: str) -> None:
    """Before anything is written: refuse a study file that differs from the settings its study
    in `storage_url` was started with. Reads only; a storage that is not there holds none."""
    check(spec, path, optuna_side(storage_url, spec.name).settings)


def record(study: optuna.Study, spec: StudySpec, path: str) -> None:
    """Compare `spec` with the settings `study` records, recording them when it has none.
    Workers on several machines may record at once: each reads back what was kept, so a worker
    whose settings lost the race is refused."""
    check(spec, path, study.user_attrs.get(SETTINGS_ATTR))
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, resolved(spec, path))
        check(spec, path, study.user_attrs.get(SETTINGS_ATTR))
