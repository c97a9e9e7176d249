"""Trial checkpoints: the state `train.fit` hands over, written atomically, read back safely.

A checkpoint is one safetensors file: every tensor of the state (weights, Adam moments,
random generator states, the epoch's shuffle order) as a named tensor, everything else (the
epoch, the position in it, the metric history, the optimizer's settings) as JSON in the
file's metadata, with the identity of the trial it belongs to. Reading it never unpickles
anything, so a damaged or foreign file can only be refused, never run. It is written under a
temporary name in the same folder, flushed, then renamed over the old one: a kill at any
moment leaves either the previous checkpoint or the new one, never half of one.

The file is named by a digest of the trial's resolved config and dataset fingerprint. Training
is deterministic for a config, so any trial of the study with the same values (the re-run of a
trial whose worker died, or was stopped) can continue from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaebench import atomic
from vaebench.errors import InputError

FORMAT = "vaebench-checkpoint"
VERSION = "1"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Options:
    """Where a study's trials keep their checkpoints and how often they write them."""

    folder: Path
    every_epochs: int = 1
    every_minutes: float | None = None  # also inside an epoch, this long after the last one
    min_seconds: float = 30.0  # no epoch-end checkpoint sooner than this after the last one
    keep: bool = False  # keep the checkpoints of finished trials


def identity(config: dict[str, Any], dataset_fingerprint: str) -> str:
    """A digest of what the numbers depend on: the resolved config and the exact data."""
    blob = json.dumps({"config": config, "data": dataset_fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _encode(node: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """JSON for `node`, its tensors moved into `tensors` under their path. Dicts keep the type
    of their keys (the optimizer's state is keyed by int); tuples stay tuples."""
    if isinstance(node, torch.Tensor):
        tensors[path] = node.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(node, dict):
        return {"__dict__": [[k, _encode(v, tensors, f"{path}/{k}")] for k, v in node.items()]}
    if isinstance(node, (list, tuple)):
        items = [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(node)]
        return {"__tuple__": items} if isinstance(node, tuple) else items
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"cannot checkpoint a {type(node).__name__} at {path}")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__tuple__" in node:
            return tuple(_decode(v, tensors) for v in node["__tuple__"])
        return {k: _decode(v, tensors) for k, v in node["__dict__"]}
    return node


def save(path: Path, state: dict[str, Any], trial_identity: str, info: dict[str, str] | None = None) -> None:
    """Write `state` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    metadata = {"format": FORMAT, "version": VERSION, "identity": trial_identity, "state": json.dumps(tree)}
    metadata |= {f"info.{k}": str(v) for k, v in (info or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    atomic.default_mode(tmp)  # workers run by other users of the group read it too
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata; InputError if it is not a vaebench checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a vaebench checkpoint ({str(exc).splitlines()[0][:200]}); "
                         "delete it to start the trial afresh") from None
    if metadata.get("format") != FORMAT or "state" not in metadata:
        raise InputError(f"{path}: not a vaebench checkpoint (no {FORMAT} metadata); delete it to start the trial afresh")
    if metadata.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint format version {metadata.get('version')!r}, this vaebench reads {VERSION}")
    return metadata


def load(path: Path, trial_identity: str) -> dict[str, Any]:
    """The state saved at `path`, if it belongs to the trial `trial_identity`. A damaged,
    foreign or mismatched file is an InputError (one line), never unpickled."""
    metadata = read_metadata(path)
    if metadata["identity"] != trial_identity:
        raise InputError(f"{path}: checkpoint of another trial (identity {metadata['identity']}, expected "
                         f"{trial_identity}); delete it to start the trial afresh")
    try:
        tensors = load_file(str(path))
        return _decode(json.loads(metadata["state"]), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: damaged checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                         "delete it to start the trial afresh") from None


class TrialCheckpoint:
    """The checkpoint file of one trial: where it is, whether there is one, save and remove."""

    def __init__(self, folder: Path, trial_identity: str, info: dict[str, str] | None = None,
                 after_save: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.identity = trial_identity
        self.path = folder / f"trial-{trial_identity}{SUFFIX}"
        self.info = dict(info or {})
        self.after_save = after_save  # told of every state saved (the search records the epoch)

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict[str, Any] | None:
        return load(self.path, self.identity) if self.exists() else None

    def info_of_saved(self) -> dict[str, str]:
        """The `info` written with the saved checkpoint (such as its MLflow run id)."""
        metadata = read_metadata(self.path)
        return {k.removeprefix("info."): v for k, v in metadata.items() if k.startswith("info.")}

    def save(self, state: dict[str, Any]) -> None:
        save(self.path, state, self.identity, self.info)
        if self.after_save is not None:
            self.after_save(state)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
