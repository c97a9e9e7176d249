"""The `run` progress bar: trials done / total, the current trial's epoch, best value so far."""
from __future__ import annotations

import math
import sys
from typing import Any

from tqdm import tqdm


class ProgressBar:
    def __init__(self, total: int, objective: str, enabled: bool = True) -> None:
        self.total, self.objective, self.enabled = total, objective, enabled
        self.bar: tqdm | None = None
        self.best = math.nan
        self.epoch = ""

    def __enter__(self) -> ProgressBar:
        self.bar = tqdm(total=self.total, unit="trial", disable=not self.enabled, dynamic_ncols=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.bar is not None
        self.bar.close()

    def _show(self) -> None:
        assert self.bar is not None
        best = "-" if math.isnan(self.best) else f"{self.best:.2f}"
        self.bar.set_postfix_str(f"{self.epoch} best {self.objective}={best}", refresh=True)

    def on_epoch(self, trial: int, epoch: int, epochs: int) -> None:
        self.epoch = f"trial {trial} epoch {epoch}/{epochs}"
        self._show()

    def on_trial_end(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        assert self.bar is not None
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
        self.bar.n = min(done, self.total)
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            self.best = study.best_value
        self._show()

    def on_note(self, line: str) -> None:
        """A line for the user, printed above the bar (not through it)."""
        tqdm.write(line, file=sys.stderr)

    def hooks(self) -> Any:
        from vaebench.search import Progress

        return Progress(on_epoch=self.on_epoch, on_trial_end=self.on_trial_end, on_note=self.on_note)
