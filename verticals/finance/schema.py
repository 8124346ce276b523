"""Pydantic request/response models built from the trained feature schema.

The request accepts exactly the training columns (unknown fields are rejected), each
optional: a missing field is a missing value, which LightGBM handles natively.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from verticals.finance.data import FeatureSchema

MAX_ENUM_LEVELS = 200


class Reason(BaseModel):
    feature: str
    value: float | str | None
    direction: Literal["raises risk", "lowers risk"]
    log_odds: float = Field(description="contribution to the log-odds of default (SHAP)")


class Prediction(BaseModel):
    pd: float = Field(description="probability of default")
    score: int = Field(description="credit score in points (higher is safer)")
    grade: str
    reasons: list[Reason] = Field(description="principal reasons, largest effect first")


def applicant_model(schema: FeatureSchema) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in schema.numeric:
        fields[name] = (float | None, Field(default=None, description="numeric"))
    for name, levels in schema.categorical.items():
        kind: Any = Literal[tuple(levels)] if len(levels) <= MAX_ENUM_LEVELS else str
        fields[name] = (kind | None, Field(default=None, description="categorical"))
    return create_model(
        "Applicant", __config__=ConfigDict(extra="forbid", protected_namespaces=()), **fields
    )
