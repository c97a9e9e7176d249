"""Time the procedural dSprites generator: `python benchmarks/bench_dsprites.py`.

Prints a table (n images, median seconds of 3 runs, images/s) and writes the same numbers
to results/benchmarks/dsprites.json. The one-off sprite atlas build (once per process) is
timed on its own, so the render rows are warm.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from vaebench import dsprites  # noqa: E402

N = 20_000
REPEATS = 3
OUT = ROOT / "results" / "benchmarks" / "dsprites.json"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    atlas_s = timed(dsprites._sprite_atlas)  # first call builds the 720 sprites
    factors = dsprites.sample_factors(N, seed=0)
    cases = {
        "render (uint8)": lambda: dsprites.render(factors),
        "load_dsprites (float32)": lambda: dsprites.load_dsprites(N, seed=0),
    }
    rows = [{"case": "sprite atlas (once per process)", "n": 720, "seconds": atlas_s}]
    for case, fn in cases.items():
        seconds = statistics.median(timed(fn) for _ in range(REPEATS))
        rows.append({"case": case, "n": N, "seconds": seconds})
    for row in rows:
        row["images_per_s"] = row["n"] / row["seconds"]

    print(f"{'case':<34}{'n images':>10}{'seconds':>10}{'images/s':>12}")
    for row in rows:
        print(f"{row['case']:<34}{row['n']:>10}{row['seconds']:>10.3f}{row['images_per_s']:>12,.0f}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "dsprites",
        "repeats": REPEATS,
        "statistic": "median",
        "rows": rows,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
