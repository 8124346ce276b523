"""Request and response of `/predict`: top-K recommendations for one customer."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def not_bool(value: object) -> object:
    """JSON's true and false are not ids or counts, though Python takes them for 1 and 0
    (`false` would otherwise ask about item "0")."""
    if isinstance(value, bool):
        raise ValueError("true and false are not ids or numbers")
    return value


Id = Annotated[str | int, BeforeValidator(not_bool)]
#: Constraints before the validator, so the JSON schema says minimum/maximum, not ge/le.
Count = Annotated[int, Field(ge=1, le=1000), BeforeValidator(not_bool)]


class RecommendRequest(BaseModel):
    """Either `user_id` (top-K for a customer) or `item_id` (items similar to one item)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="the customer's id, as in the log")
    item_id: Id | None = Field(None, description="instead of user_id: similar items")
    k: Count | None = Field(None, description="how many items (default: model.k)")
    exclude_bought: bool = Field(True, description="leave out items the customer already has")
    exclude_items: list[Id] = Field(
        default_factory=list,
        max_length=10_000,
        description='never recommend these (files: "a;b;c")',
    )
    category: str | None = Field(None, description="only items of this catalog category")

    @model_validator(mode="after")
    def _one_subject(self) -> RecommendRequest:
        if (self.user_id is None) == (self.item_id is None):
            raise ValueError("give exactly one of user_id (recommendations) or item_id (similar)")
        return self


class Recommendation(BaseModel):
    item_id: str
    score: float
    rank: int


class RecommendResponse(BaseModel):
    user_id: str | None
    item_id: str | None = None
    fallback: bool = Field(description="true: unknown customer or item, popular items instead")
    short: bool = Field(
        description="true: fewer than k items were eligible (exclusions, bought items, "
        "category), so the list is shorter; it never repeats an item or holds a filtered one"
    )
    recommendations: list[Recommendation]
