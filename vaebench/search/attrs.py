"""What vaebench keeps in Optuna's records: the names of its study and trial user attributes."""
from __future__ import annotations

from optuna.trial import TrialState

PARENT_ATTR = "mlflow_parent_run_id"  # study: the MLflow parent run every worker nests under
RUN_ATTR = "mlflow_run_id"  # trial: its child run
WORKER_ATTR = "vaebench.worker"  # trial: {host, pid, start, trial}, the process running it
REASON_ATTR = "failure_reason"  # trial: why it failed or was not run
REQUEUED_ATTR = "vaebench.requeued_from"  # a queued re-run: the number of the trial it repeats
CHECKPOINT_ATTR = "vaebench.checkpoint_epoch"  # trial: the epoch its latest checkpoint resumes at
RESUMED_ATTR = "vaebench.resumed_at_epoch"  # trial: the epoch it went on at, from a checkpoint
SETTINGS_ATTR = "vaebench.settings"  # study: the settings its trials run with (search.settings)
INTERRUPTED = "interrupted (Ctrl-C)"  # the reason of a trial stopped by Ctrl-C
DONE = (TrialState.COMPLETE, TrialState.PRUNED)  # finished trials: they count towards n_trials
