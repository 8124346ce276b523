"""Pydantic request/response models built from the trained feature schema.

The request accepts exactly the training columns (unknown fields are rejected), each
optional: a missing field is a missing value, which LightGBM handles natively.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from verticals.finance.data import FeatureSchema

if TYPE_CHECKING:
    from verticals.finance.model import FinanceModel

MAX_ENUM_LEVELS = 200


def not_bool(value: object) -> object:
    """JSON's true and false are not numbers, though Python takes them for 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("true and false are not numbers")
    return value


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
    out_of_range: list[str] = Field(
        description="numeric features outside the range seen in training: scored, but the "
        "model extrapolates there, so the answer deserves a second look"
    )


def applicant_model(schema: FeatureSchema) -> type[BaseModel]:
    """One applicant: every training column, each optional. Fields carry the column name as
    their alias, so any column name works (`_id`, `model_config`, `loan amount`)."""
    fields: dict[str, Any] = {}
    for j, name in enumerate(schema.numeric):
        fields[f"f{j}"] = _numeric_field(schema, name)
    for j, (name, levels) in enumerate(schema.categorical.items(), start=len(schema.numeric)):
        small = 0 < len(levels) <= MAX_ENUM_LEVELS
        kind: Any = Literal[tuple(levels)] if small else str
        fields[f"f{j}"] = (kind | None, Field(default=None, alias=name, description="categorical"))
    config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=False)
    return create_model("Applicant", __config__=config, **fields)


def _numeric_field(schema: FeatureSchema, name: str) -> tuple[Any, Any]:
    """A numeric column's (type, field): its plausible bounds (a value past them is
    refused) and, in the description, its training range (past that: scored and flagged).
    The bounds come before the validator, so the JSON schema says minimum and maximum."""
    low, high = schema.bounds.get(name, [None, None])
    kind = Annotated[float, Field(ge=low, le=high), BeforeValidator(not_bool)]
    seen = schema.ranges.get(name)
    described = "numeric" + (f"; training range [{seen[0]:g}, {seen[1]:g}]" if seen else "")
    return kind | None, Field(default=None, alias=name, description=described)


def request_schema(model: FinanceModel) -> type[BaseModel]:
    """The request of a trained model: its own training columns."""
    return applicant_model(model.schema)
