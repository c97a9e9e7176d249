"""Flags out of range are refused in one line, exit 2, before anything runs."""
from __future__ import annotations

import os
from pathlib import Path

from helpers import run_cli, write_study


def test_more_threads_than_cpus_is_refused(folder: Path) -> None:
    write_study(folder, "tiny", {"seed": [0, 1]})
    before = sorted(p.name for p in folder.iterdir())
    code, out, err = run_cli(folder, "tiny.yaml", "--threads", "10000")  # run_cli's own --threads 1 comes first
    assert (code, out) == (2, ""), err
    assert err == f"vaebench: error: --threads 10000: more than this machine's {os.cpu_count()} CPUs\n"
    assert sorted(p.name for p in folder.iterdir()) == before
