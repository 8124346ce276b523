"""Request and response of `/predict`: top-K recommendations for one customer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RecommendRequest(BaseModel):
    """Either `user_id` (top-K for a customer) or `item_id` (items similar to one item)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | int | None = Field(None, description="the customer's id, as in the log")
    item_id: str | int | None = Field(None, description="instead of user_id: similar items")
    k: int | None = Field(None, ge=1, le=1000, description="how many items (default: model.k)")
    exclude_bought: bool = Field(True, description="leave out items the customer already has")
    exclude_items: list[str | int] = Field(
        default_factory=list, description='never recommend these (files: "a;b;c")'
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
    recommendations: list[Recommendation]
