"""No pyflakes-class error (an undefined name, a module shadowed by a local, an unused
import) anywhere in the checkout. benchmarks/ and examples/ run in no other test, so a name
that breaks only when its line runs would otherwise reach a user first."""
from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_no_pyflakes_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", "--output-format", "concise",
         "vaebench", "benchmarks", "examples", "tests"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
