"""Helpers shared by the benchmark scripts: tables, JSON reports, the machine's facts.

Benchmarks are scripts, not tests: this machine class is noisy (2 shared cores), so every
comparison is made inside one process, alternating the variants round by round, and the
figures are medians over repeats.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "results" / "benchmarks"
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """items rotated left by `shift`: round r runs the variants in a different order, so no
    variant always runs first (right after another's validation) or last."""
    k = shift % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def machine() -> dict[str, Any]:
    """What a number depends on: the code (vaebench's git commit and whether the checkout had
    uncommitted changes), versions, cores, threads, and the load average when the report is written."""
    import torch

    from vaebench import manifest

    return {
        "vaebench_git": manifest.git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec); a missing value prints as '-'."""
    cells = [["-" if row.get(key) is None else format(row[key], spec) for key, _, spec in columns] for row in rows]
    widths = [max([len(header)] + [len(line[i]) for line in cells]) for i, (_, header, _) in enumerate(columns)]
    print("  ".join(header.rjust(w) for (_, header, _), w in zip(columns, widths)))
    for line in cells:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths)))


def write_report(name: str, report: dict[str, Any]) -> Path:
    """results/benchmarks/<name>.json with the machine's facts added."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    report = {"benchmark": name, "machine": machine(), "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])} | report
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"-> {path.relative_to(ROOT)}")
    return path
