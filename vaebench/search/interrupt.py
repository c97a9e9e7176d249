"""Ctrl-C and a worker closing its runs.

The first Ctrl-C asks the worker to stop after the epoch; a second one stops the training now.
Once the worker is closing its runs (failing the interrupted trial, queueing it again, ending
the parent run), there is nothing left to stop: a further Ctrl-C then waits for that, so the
stores are never left half-closed (a trial RUNNING in Optuna, a parent run RUNNING in MLflow).
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_state = {"closing": False}


def closing_now() -> bool:
    """Whether a worker of this process is closing its runs (a Ctrl-C must not raise now)."""
    return _state["closing"]


def begin_closing() -> None:
    """From here to the end of the enclosing `scope`, Ctrl-C does not interrupt."""
    _state["closing"] = True


@contextmanager
def scope() -> Iterator[None]:
    """A worker's run: closing mode, once begun inside, ends with it."""
    before = _state["closing"]
    try:
        yield
    finally:
        _state["closing"] = before


@contextmanager
def graceful_sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: set `stop` (the running trial ends after its epoch); second: stop now,
    unless the worker is closing its runs. The previous handler is
    restored afterwards."""
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and closing_now():
            os.write(2, b"vaebench: closing the runs; a moment\n")
            return
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        os.write(2, b"vaebench: stopping after this epoch; Ctrl-C again to stop now\n")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
