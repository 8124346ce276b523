"""After the API: what a lender reports back (did the applicant default?), the table the
drift monitor watches, and discrimination and calibration on the applicants since labelled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from verticals.core.contract import Logged
from verticals.finance.metrics import classification_metrics

if TYPE_CHECKING:
    from verticals.finance.model import FinanceModel

#: The output fields the monitor watches (the reasons are lists: left out).
OUTPUTS = ("pd", "score", "grade")


class Outcome(BaseModel):
    """Whether the applicant went on to default, as the label of the training data reads."""

    model_config = ConfigDict(extra="forbid")

    defaulted: Literal[0, 1] = Field(description="1: the applicant defaulted, 0: repaid")

    @field_validator("defaulted", mode="before")
    @classmethod
    def _whole_zero_or_one(cls, value: Any) -> Any:
        """Only the numbers 0 and 1: pydantic's Literal takes true and 1.0 as 1, and a
        label sent as a boolean or a probability is more likely a client's mistake."""
        if type(value) is not int:
            raise ValueError("must be the number 0 or 1 (not true/false, not a probability)")
        return value


def outcome_schema(model: FinanceModel) -> type[BaseModel]:
    return Outcome


def _hashed(model: FinanceModel, entries: list[Logged]) -> bool:
    """Whether logged inputs are hashes (`log.inputs=hashed`): a validated record holds
    only numbers in numeric columns. The reference is read as the log is, so one answer
    holds for every entry of a call."""
    numeric = model.schema.numeric
    return any(
        isinstance(record.get(name), str)
        for entry in entries
        if isinstance(entry.inputs, list)
        for record in entry.inputs
        for name in numeric
    )


def monitor_frame(model: FinanceModel, entries: list[Logged]) -> pd.DataFrame:
    """One row per applicant: the model's features (numbers as floats, levels as text) and
    its PD, score and grade. Hashed numbers have no distribution to compare and are left
    out; hashed levels still make a mix (equal values hash equal), so they stay. Fields
    dropped from the log (`log.drop`) are left out, and so are the inputs of entries
    logged without them."""
    features = model.schema.features
    numeric = set(model.schema.numeric)
    hashed = _hashed(model, entries)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        outputs = [
            {(f"output.{k}" if k in features else k): row.get(k) for k in OUTPUTS}
            for row in entry.outputs or []
        ]
        records = entry.inputs if isinstance(entry.inputs, list) else None
        if records is None or len(records) != len(outputs):
            rows.extend(outputs)
            continue
        for record, out in zip(records, outputs, strict=True):
            row: dict[str, Any] = {}
            for name in features:
                if name not in record or (hashed and name in numeric):
                    continue
                value = record[name]
                if name in numeric:
                    row[name] = np.nan if value is None else float(value)
                else:
                    row[name] = None if value is None else str(value)
            rows.append({**row, **out})
    frame = pd.DataFrame(rows)
    for name in set(frame.columns) & numeric:  # an all-missing column stays a number
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def live_metrics(model: FinanceModel, entries: list[Logged]) -> dict[str, float]:
    """The test metrics on labelled applicants: the outcome is one applicant's, so it is
    scored against the first answer row's PD. AUC, KS and the other ranking measures need
    both classes; until then only the rates, Brier and the calibration gap are given."""
    labels, pds = [], []
    for entry in entries:
        if not entry.outcome or not entry.outputs:
            continue
        value = entry.outputs[0].get("pd")
        if value is None:
            continue
        labels.append(int(entry.outcome["defaulted"]))
        pds.append(float(value))
    if not labels:
        return {"labelled": 0.0}
    y, p = np.array(labels), np.array(pds)
    if len(np.unique(y)) == 2:
        metrics = classification_metrics(y, p)
    else:
        metrics = {
            "brier": float(np.mean((p - y) ** 2)),
            "default_rate": float(np.mean(y)),
            "mean_pd": float(np.mean(p)),
        }
    metrics["calibration_gap"] = metrics["default_rate"] - metrics["mean_pd"]
    metrics["labelled"] = float(len(y))
    return metrics
