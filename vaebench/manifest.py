"""What is needed to rerun a study and check its numbers, as one JSON document.

A manifest holds the resolved study (every default filled in), the command line, vaebench's
version and git commit when the package runs from a git checkout, Python and the versions
of the packages whose changes move the numbers, the device and thread counts, and the
fingerprints of the datasets used. `collect` gathers it; `write` stores it atomically.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vaebench import __version__, atomic
from vaebench.errors import InputError
from vaebench.stores import redact, short_reason

FILENAME = "manifest.json"
SECTIONS = {"command": list, "vaebench": dict, "python": dict, "packages": dict, "hardware": dict,
            "datasets": dict, "study": dict}  # what `read` requires
# the packages behind the numbers: training (torch), tracking and search (MLflow, Optuna),
# latent scores (scikit-learn: clustering, probes, MIG/DCI), arrays and statistics
PACKAGES = ("torch", "mlflow", "optuna", "scikit-learn", "numpy", "scipy", "pandas")
PACKAGE_DIR = Path(__file__).resolve().parent


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None for one not installed). torch's carries its build
    tag (`2.14.1+cu130`, `+cpu`), which its distribution metadata leaves out: a CUDA and a CPU
    wheel of one release compute differently."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if out.get("torch"):
        import torch

        out["torch"] = torch.__version__
    return out


def python() -> dict[str, str]:
    return {"version": platform.python_version(), "implementation": platform.python_implementation()}


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows, else ''."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_state(folder: Path = PACKAGE_DIR) -> dict[str, Any] | None:
    """{commit, dirty} of the git checkout holding `folder`; None outside one (an installed
    package) or when git is unavailable."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        if git("rev-parse", "--is-inside-work-tree") != "true":
            return None
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(device: str = "cpu") -> dict[str, Any]:
    """CPU model and count, torch's intra-op threads and, for a CUDA device, its name and count."""
    import torch

    out: dict[str, Any] = {"device": device, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(),
                           "torch_interop_threads": torch.get_num_interop_threads(),
                           "machine": platform.machine(), "system": platform.system()}
    if device.startswith("cuda") and torch.cuda.is_available():
        out |= {"cuda_device": torch.cuda.get_device_name(torch.device(device)),
                "cuda_device_count": torch.cuda.device_count(), "cuda_version": torch.version.cuda}
    return out


def collect(study: Mapping[str, Any], fingerprints: Mapping[str, str], command: Sequence[str] | None = None,
            device: str = "cpu") -> dict[str, Any]:
    """The manifest of one study: `study` is the resolved study (StudySpec.model_dump()),
    `fingerprints` maps dataset name to fingerprint, `command` defaults to this process's, and
    every plugin file run is recorded with its sha256; a
    password in a URL of the command line (--storage, --tracking-uri) is recorded as `***`."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [redact(str(a)) for a in (command if command is not None else [sys.executable, *sys.argv])],
        "vaebench": {"version": __version__, "git": git_state()},
        "python": python(),
        "packages": package_versions(),
        "hardware": hardware(device),
        "datasets": dict(fingerprints),
        "plugins": loaded_plugins(),
        "study": dict(study),
    }


def loaded_plugins() -> dict[str, str]:
    """{plugin file: sha256} of the user's model files this process ran (models/plugins.py)."""
    from vaebench.models import plugins  # a study's plugins are loaded before its manifest is made

    return plugins.loaded_files()


def write(manifest: Mapping[str, Any], folder: Path) -> Path:
    """`folder/manifest.json`, written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / FILENAME
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FILENAME}.", suffix=".tmp")
    atomic.default_mode(tmp)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, out)
    return out


def read(folder: Path) -> dict[str, Any]:
    """`folder/manifest.json`; an InputError (one line) when it is missing, not JSON or lacks
    a section replay needs."""
    path = folder / FILENAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no manifest (the study's report was written without one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a manifest ({short_reason(exc)})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a manifest (a JSON object is expected)")
    for key, kind in SECTIONS.items():
        if not isinstance(doc.get(key), kind):
            raise InputError(f"{path}: {key}: missing or not a JSON {'object' if kind is dict else 'list'}")
    return doc
