"""Processes and memory of the MLflow UI that `vaebench ui` starts:

    python benchmarks/bench_ui.py                  # runs the smoke study in a temporary folder first
    python benchmarks/bench_ui.py --folder DIR     # a folder that holds a study's mlflow.db

Two ways to serve the same store, each started, given one request per API the runs page
uses, left `--settle` seconds (MLflow's job executor starts its consumers in the background),
then measured over the whole process tree:
- `mlflow ui` defaults behind a waiting vaebench process (how `vaebench ui` used to start it:
  four web workers and the job executor);
- `vaebench ui` now (one worker, no job executor, the vaebench process replaced by the server).

RSS counts shared pages once per process; PSS (from /proc/PID/smaps_rollup) splits them, so
its sum is what the tree really costs. Linux only. Prints a table, writes results/benchmarks/ui.json.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from common import ROOT, median, print_table, write_report

from vaebench import stores

# The former `vaebench ui`: a vaebench process (MLflow imported) waiting on `mlflow ui`.
FORMER = ("import subprocess, sys\nimport vaebench.tracking\n"
          "sys.exit(subprocess.call([sys.executable, '-m', 'mlflow', 'ui', '--backend-store-uri', sys.argv[1],"
          " '--host', '127.0.0.1', '--port', sys.argv[2]]))\n")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(ROOT)}


def command(variant: str, uri: str, port: int) -> list[str]:
    if variant == "former":
        return [sys.executable, "-c", FORMER, uri, str(port)]
    return [sys.executable, "-m", "vaebench", "ui", "--tracking-uri", uri, "--port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def memory_kib(pid: int, field: str, file: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(variant: str, uri: str, settle_s: float) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(command(variant, uri, port), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        ready_s = stores.wait_for_server(base, proc)
        api = f"{base}/ajax-api/2.0/mlflow"
        experiments = requests.post(f"{api}/experiments/search", json={"max_results": 100}, timeout=30).json()
        ids = [e["experiment_id"] for e in experiments.get("experiments", [])]
        requests.post(f"{api}/runs/search", json={"experiment_ids": ids, "max_results": 100}, timeout=30).raise_for_status()
        time.sleep(settle_s)
        pids = tree(proc.pid)
        return {"variant": variant, "ready_s": ready_s, "processes": len(pids),
                "rss_mib": sum(memory_kib(p, "VmRSS", "status") for p in pids) / 1024,
                "pss_mib": sum(memory_kib(p, "Pss", "smaps_rollup") for p in pids) / 1024,
                "commands": [Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:120] for p in pids]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=None, help="a folder with a study's mlflow.db (default: run the smoke study)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds between the requests and the measurement")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or tmp).resolve()
        if args.folder is None:
            subprocess.run([sys.executable, "-m", "vaebench", "run", "--study", "smoke", "--no-progress"],
                           cwd=folder, env=env(), check=True, capture_output=True)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        runs = [measure(v, uri, args.settle) for _ in range(args.repeats) for v in ("former", "vaebench_ui")]
    rows = [{"variant": v} | {k: median([r[k] for r in runs if r["variant"] == v])
                              for k in ("processes", "rss_mib", "pss_mib", "ready_s")}
            for v in ("former", "vaebench_ui")]
    print_table(rows, [("variant", "server", "s"), ("processes", "processes", ".0f"), ("rss_mib", "RSS MiB", ".0f"),
                       ("pss_mib", "PSS MiB", ".0f"), ("ready_s", "ready s", ".1f")])
    write_report("ui", {"settle_s": args.settle, "rows": rows, "runs": runs})


if __name__ == "__main__":
    main()
