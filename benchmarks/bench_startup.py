"""Start-up time and memory:

    python benchmarks/bench_startup.py                # import + --help times (~30 s)
    python benchmarks/bench_startup.py --flagship     # also the flagship study's peak RSS (~5+ min)

- `python -c "import vaebench"` and `python -m vaebench --help`: wall time of a fresh
  interpreter, median over `--repeats`, and which heavy libraries each one imported;
- with --flagship: `python -m vaebench run --study beta_sweep` (18 trials) in a temporary
  folder, its wall time and peak resident set size (the child's ru_maxrss from
  getrusage(RUSAGE_CHILDREN), which covers the largest process it waited for).

Prints a table, writes results/benchmarks/startup.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import ROOT, median, print_table, write_report

HEAVY = ("torch", "mlflow", "optuna", "sklearn", "pandas", "matplotlib", "scipy")
PROBE = ("import sys, runpy\n"
         "sys.argv = {argv!r}\n"
         "try:\n    {body}\nexcept SystemExit:\n    pass\n"
         "print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules))\n")


def env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT)}


def wall(cmd: list[str], cwd: str | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=cwd)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr[-1000:]}")
    return seconds, out.stdout


def heavy_imports(body: str, argv: list[str]) -> list[str]:
    """The heavy libraries left in sys.modules after running `body` (a separate interpreter)."""
    _, out = wall([sys.executable, "-c", PROBE.format(argv=argv, body=body, heavy=HEAVY)])
    line = next(line for line in out.splitlines() if line.startswith("HEAVY="))
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


def flagship() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        seconds, out = wall([sys.executable, "-m", "vaebench", "run", "--study", "beta_sweep", "--no-progress"], cwd=tmp)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        print("note: an earlier child had a higher peak; the flagship's own peak is at most that", file=sys.stderr)
    return {"case": "flagship study (beta_sweep, 18 trials)", "seconds": seconds, "peak_rss_mb": peak_kb / 1024,
            "bound_s": None, "bound_mb": 2048, "ok": "yes" if peak_kb / 1024 < 2048 else "NO",
            "finished": next((line for line in out.splitlines() if "trials finished" in line), "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flagship", action="store_true", help="also run the flagship study (minutes)")
    args = parser.parse_args()

    cases = {
        "import vaebench": ([sys.executable, "-c", "import vaebench"], "import vaebench", []),
        "python -m vaebench --help": ([sys.executable, "-m", "vaebench", "--help"],
                                      "runpy.run_module('vaebench', run_name='__main__')", ["vaebench", "--help"]),
        "python -m vaebench run --help": ([sys.executable, "-m", "vaebench", "run", "--help"],
                                          "runpy.run_module('vaebench', run_name='__main__')",
                                          ["vaebench", "run", "--help"]),
    }
    baseline = median([wall([sys.executable, "-c", "pass"])[0] for _ in range(args.repeats)])
    rows: list[dict[str, Any]] = [{"case": "python -c pass (interpreter alone)", "seconds": baseline}]
    for name, (cmd, body, argv) in cases.items():
        seconds = [wall(cmd)[0] for _ in range(args.repeats)]
        heavy = heavy_imports(body, argv)
        rows.append({"case": name, "seconds": median(seconds), "seconds_all": seconds, "bound_s": 2.0,
                     "ok": "yes" if median(seconds) < 2.0 else "NO", "heavy_imports": ",".join(heavy) or "none"})
    if args.flagship:
        rows.append(flagship())

    print(f"\nmedian wall seconds of {args.repeats} fresh interpreters; heavy = libraries left imported")
    print_table(rows, [("case", "case", ""), ("seconds", "seconds", ".2f"), ("bound_s", "bound s", ".0f"),
                       ("peak_rss_mb", "peak RSS MB", ".0f"), ("ok", "within", ""), ("heavy_imports", "heavy", "")])
    write_report("startup", {"repeats": args.repeats, "statistic": "median", "rows": rows})


if __name__ == "__main__":
    main()
