"""What `vaebench run` says at the end about trials that failed: one line, and where each
trial's full reason is kept; and output streams whose failure never costs results."""
from __future__ import annotations

import io
import os
from typing import Any


def where_reasons(failures: dict[int, str], untracked: list[int]) -> str:
    """Where the full reasons are: MLflow's tag for trials that have a run, Optuna's user
    attribute for those that failed before their run started."""
    from vaebench.search import REASON_ATTR
    from vaebench.tracking import REASON

    optuna_only = sorted(set(untracked) & set(failures))
    if not optuna_only:
        return f"(reasons: tag {REASON} in MLflow)"
    numbers = ", ".join(map(str, optuna_only))
    where = f"user attribute {REASON_ATTR} of Optuna trial{'s' if len(optuna_only) > 1 else ''} {numbers}, which had no MLflow run"
    return f"(reasons: {where})" if len(optuna_only) == len(failures) else f"(reasons: tag {REASON} in MLflow; {where})"


def failure_summary(failures: dict[int, str]) -> str:
    """`3 trials failed: DivergenceError: ... (trials 1, 4); ValueError: ... (trial 2)`: one line."""
    groups: dict[str, list[int]] = {}
    for number, reason in sorted(failures.items()):
        groups.setdefault((reason.strip().splitlines() or ["unknown"])[0][:200], []).append(number)
    parts = [f"{reason} (trial{'s' if len(ns) > 1 else ''} {', '.join(map(str, ns))})" for reason, ns in groups.items()]
    if len(parts) > 3:
        parts = parts[:3] + [f"{len(parts) - 3} other reasons"]
    n = len(failures)
    return f"{n} trial{'s' if n > 1 else ''} failed: " + "; ".join(parts)


class GuardedStream:
    """sys.stdout / sys.stderr for the length of a command: a write that fails (a closed pipe,
    `vaebench run | head -1`, a full disk, `> /dev/full`) is noted in `lost` and everything
    after it dropped, never raised: output never costs a study or its report. The stream's
    file descriptor is pointed at /dev/null then, so Python's own flush at exit fails no more."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.lost = stream, ""

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                self.stream.write(text)
                if "\n" in text:
                    self.stream.flush()
            except (OSError, ValueError, AttributeError) as exc:  # closed; None when started with fd 1 closed
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except (OSError, ValueError, AttributeError) as exc:
                self._lose(exc)

    def _lose(self, exc: BaseException) -> None:
        from vaebench.stores import short_reason

        self.lost = "closed" if self.stream is None else short_reason(exc)
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's
        return getattr(self.stream, name)


def lost_output_line(out: GuardedStream) -> str:
    """The one line (for stderr) saying what a failed standard output cost: its lines only."""
    return (f"vaebench: standard output: {out.lost}; the lines written there were lost, nothing else "
            "(the command ran to its end)")
