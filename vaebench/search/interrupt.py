"""Ctrl-C, SIGTERM, SIGHUP and a worker closing its runs.

The first Ctrl-C asks the worker to stop after the epoch; a second one stops the training now.
SIGTERM (what SLURM, Kubernetes and `kill` send) and SIGHUP (a closed terminal) are handled
the same way: the epoch ends with its checkpoint, the runs are closed, and the process exits
128 + the signal's number (143, 129) instead of Ctrl-C's 130.
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

_state: dict[str, Any] = {"closing": False, "signal": None}
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def received() -> int | None:
    """The last stop signal handled (signal.SIGINT, SIGTERM, SIGHUP), or None."""
    return _state["signal"]


def exit_code(code: int) -> int:
    """`code`, with Ctrl-C's 130 made 128 + the signal that actually stopped the command (which
    is forgotten then: the next command in this process starts afresh)."""
    signum, _state["signal"] = _state["signal"], None
    return 128 + int(signum) if code == 130 and signum not in (None, signal.SIGINT) else code


def _say(text: bytes) -> None:
    """A line on stderr from a signal handler; a closed terminal (SIGHUP) must not raise here."""
    try:
        os.write(2, text)
    except OSError:
        pass


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
    """First Ctrl-C, SIGTERM or SIGHUP: set `stop` (the running trial ends after its epoch);
    a second one: stop now, unless the worker is closing its runs. The previous handlers are
    restored afterwards."""
    def handler(signum: int, frame: Any) -> None:
        _state["signal"] = signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        if stop.is_set() and closing_now():
            _say(b"vaebench: closing the runs; a moment\n")
            return
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = "" if signum == signal.SIGINT else f"{signal.Signals(signum).name}: "
        _say(f"vaebench: {name}stopping after this epoch; {again} to stop now\n".encode())

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["signal"] = None
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
