"""Published numbers a study reproduces, and the table that puts vaebench's beside them.

A study file may name its reference (`literature:`): the source, the metric, the published
value of each configuration and the protocol it was measured under. The parent run keeps it
(as JSON in a tag), so the report can compare without the study file. Rows trained for fewer
epochs than the published protocol are called shortened, in the table itself.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pandas is imported where a table is built, not when a study file is read
    import pandas as pd

Scalar = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PublishedRow(_Strict):
    label: str  # how the source names it, e.g. "IWAE (k = 5)"
    where: dict[str, Scalar] = Field(default_factory=dict, description="settings (dotted keys) of the matching "
                                                                         "configuration; {} matches every one")
    value: float


class LiteratureSpec(_Strict):
    source: str
    metric: str = "test_iwae_ll"
    reported_as: Literal["value", "negated"] = Field(
        "negated", description="negated: the source reports -metric (a negative log-likelihood)")
    protocol: str = Field("", description="the published protocol in one line")
    protocol_epochs: int | None = Field(None, ge=1, description="passes over the data the source trained for")
    binarize: Literal["dynamic", "static", "none"] | None = Field(
        None, description="the source's binarisation: a configuration binarised otherwise is never compared")
    rows: list[PublishedRow] = Field(min_length=1)

    def to_json(self) -> str:
        return json.dumps(self.model_dump())

    @classmethod
    def from_json(cls, text: str) -> LiteratureSpec:
        return cls.model_validate_json(text)


def _param(config: pd.Series, key: str) -> str | None:
    """A setting as logged (a string); None where the configuration lacks it."""
    value = config.get(f"param.{key}")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _matches(row: pd.Series, where: dict[str, Scalar]) -> bool:
    """The configuration has every setting of `where` (compared as logged: strings)."""
    for key, value in where.items():
        logged = _param(row, key)
        if logged is None:
            return False
        try:
            if float(logged) != float(value):
                return False
        except (TypeError, ValueError):
            if logged != str(value):
                return False
    return True


def setup(config: pd.Series) -> dict[str, str]:
    """What a configuration's number was measured under, in the terms papers state a
    protocol in: binarisation, importance samples in training and evaluation, architecture
    and training data."""
    k_train = _param(config, "model.k") if _param(config, "model.objective") == "iwae" else "1"
    hidden = (_param(config, "model.hidden") or "").strip("[]()").replace(", ", "-").replace(",", "-")
    activation = _param(config, "model.activation")
    val = _param(config, "dataset.val_fraction")
    split = "all training digits" if val is not None and float(val) == 0 else f"less {val} for validation"
    return {
        "binarize": _param(config, "dataset.binarize") or "?",
        "k": f"{k_train} / {_param(config, 'eval.iwae_k')}",
        "architecture": f"{_param(config, 'model.arch')} {hidden}, {_param(config, 'model.latent_dim')} latents"
                        + (f", {activation}" if activation else ""),
        "training_data": f"{_param(config, 'dataset.name')}, {split}",
    }


def comparison(board: pd.DataFrame, spec: LiteratureSpec) -> pd.DataFrame:
    """One row per published number with a matching configuration: the published value,
    vaebench's mean and 95% CI over seeds (on the published scale), the gap (vaebench minus
    published, on that scale), seeds, epochs trained, whether that is the full protocol, the
    configuration's `setup` and the mean training time per seed. A configuration binarised
    otherwise than the source (`spec.binarize`) is left out: those numbers are not comparable."""
    import pandas as pd

    sign = -1.0 if spec.reported_as == "negated" else 1.0
    rows = []
    for published in spec.rows:
        for _, config in board[[_matches(r, published.where) for _, r in board.iterrows()]].iterrows():
            if spec.binarize is not None and _param(config, "dataset.binarize") != spec.binarize:
                continue
            mean = sign * float(config[f"{spec.metric}_mean"])
            epochs = int(float(config["param.train.epochs"])) if "param.train.epochs" in config else None
            full = spec.protocol_epochs is None or (epochs is not None and epochs >= spec.protocol_epochs)
            rows.append({
                "label": published.label,
                "config": config["config"],
                "published": published.value,
                "vaebench_mean": mean,
                "vaebench_ci95": float(config[f"{spec.metric}_ci95"]),
                "gap": mean - published.value,
                "n_seeds": int(config["n_seeds"]),
                "epochs": epochs,
                "protocol": "full" if full else f"shortened ({epochs} of {spec.protocol_epochs} epochs)",
                **setup(config),
                "train_hours_per_seed": float(config.get("train_seconds_mean", math.nan)) / 3600,
            })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, spec: LiteratureSpec, device: str) -> list[str]:
    """The report's section: the table and the protocol it compares under."""
    what = "−" + spec.metric if spec.reported_as == "negated" else spec.metric
    lines = [
        "## Against the literature",
        "",
        f"Source: {spec.source}. Published protocol: {spec.protocol or 'as in the source'}. "
        f"Compared: {what} (nats; mean ± 95% CI over seeds, Student t). Gap: vaebench minus published.",
        "",
        "| | published | vaebench | gap | seeds | epochs | protocol | binarisation | k (train / eval) | architecture "
        "| training data | training time per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        ci = "" if math.isnan(r["vaebench_ci95"]) else f" ± {r['vaebench_ci95']:.2f}"
        hours = r["train_hours_per_seed"]
        time_text = "" if math.isnan(hours) else f"{hours:.2f} h ({device})"
        lines.append(f"| {r['label']} | {r['published']:.2f} | {r['vaebench_mean']:.2f}{ci} | {r['gap']:+.2f} | "
                     f"{r['n_seeds']} | {r['epochs']} | {r['protocol']} | {r['binarize']} | {r['k']} | "
                     f"{r['architecture']} | {r['training_data']} | {time_text} |")
    return lines + [""]
