"""What `vaebench run` says at the end about trials that failed: one line, and where each
trial's full reason is kept."""
from __future__ import annotations


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
