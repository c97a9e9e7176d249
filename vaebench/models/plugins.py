"""Models from outside the package: a study file's `plugins:`, an import path, the
`vaebench.models` entry-point group.

Loading a plugin runs the user's code, which registers what it defines with
`vaebench.models.register`. An error inside it is one InputError line naming the plugin file
and its line, raised before anything is written. Every plugin file is hashed, so a manifest
can record exactly what ran and `replay` can say when the file changed since.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from vaebench.errors import InputError
from vaebench.models.registry import ORIGINS, REGISTRIES, origin

ENTRY_POINT_GROUP = "vaebench.models"
_LOADED: dict[Path, str] = {}  # plugin file -> its sha256, loaded once per process
_ENTRY_POINTS_LOADED = False


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _where(exc: BaseException, path: Path) -> str:
    """`file:line` of the deepest frame of `exc` inside the plugin file (or the file itself)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    return f"{path}:{line}" if line else str(path)


def load_file(path: str | Path, relative_to: Path | None = None) -> str:
    """Run the plugin file `path` (resolved against `relative_to`, the study file's folder), once
    per process; returns its sha256. Whatever it registers is marked as coming from it."""
    resolved = (Path(relative_to or ".") / Path(path).expanduser()).resolve()
    if resolved in _LOADED:
        return _LOADED[resolved]
    if not resolved.is_file():
        raise InputError(f"{resolved}: plugin file not found")
    digest = file_hash(resolved)
    if digest in _LOADED.values():  # the same code at another path (a logged model's copy): run once
        _LOADED[resolved] = digest
        return digest
    name = f"vaebench_plugin_{resolved.stem}_{digest[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    with origin(f"plugin {resolved}"):
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything: one line, exit 2
            sys.modules.pop(name, None)
            raise InputError(f"{_where(exc, resolved)}: plugin failed: {type(exc).__name__}: {exc}") from None
    _LOADED[resolved] = digest
    return digest


def load_listed(files: Any, study_file: Path) -> dict[str, str]:
    """Run a study file's `plugins:` (resolved next to it) so that the models they register
    validate; {file: sha256}."""
    if not isinstance(files, (list, tuple)) or not all(isinstance(p, str) and p for p in files):
        raise InputError(f"{study_file}: plugins: a list of Python files, e.g. [my_models.py]")
    return {p: load_file(p, study_file.parent) for p in files}


def source_file(arch: str) -> str | None:
    """The plugin file that registered `arch` (an architecture or whole model), None when no
    plugin file did: what a logged model carries so that it loads where the plugin is not."""
    for kind in ("model", "arch"):
        where = ORIGINS.get((kind, arch), "")
        if where.startswith("plugin "):
            return where.removeprefix("plugin ")
    return None


def loaded_files() -> dict[str, str]:
    """{plugin file: sha256} of every plugin file this process ran."""
    return {str(path): digest for path, digest in _LOADED.items()}


def load_entry_points() -> None:
    """Import every installed `vaebench.models` entry point once: a module registers what it
    defines on import; a callable is called."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        with origin(f"entry point {ep.value}"):
            try:
                found = ep.load()
                if callable(found):
                    found()
            except Exception as exc:  # noqa: BLE001 - an installed package's code: one line
                raise InputError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}): "
                                 f"{type(exc).__name__}: {exc}") from None


def resolve(kind: str, name: str) -> Any:
    """The registered `kind` called `name`; an import path `package.module:attr` is imported
    and registered under that name."""
    registry = REGISTRIES[kind]
    if name not in registry and ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # noqa: BLE001 - the user's module: one line
            raise ValueError(f"{kind} {name!r}: cannot import ({type(exc).__name__}: {exc})") from None
        registry[name] = found
        ORIGINS[(kind, name)] = f"import path {name}"
    return registry.get(name)
