"""Request and response of `/predict`: top-K recommendations for one customer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | int = Field(description="the customer's id, as in the training log")
    k: int = Field(10, ge=1, le=1000, description="how many items")
    exclude_bought: bool = Field(True, description="leave out items the customer already has")
    exclude_items: list[str | int] = Field(default_factory=list, description="never recommend")
    category: str | None = Field(None, description="only items of this catalog category")


class Recommendation(BaseModel):
    item_id: str
    score: float
    rank: int


class RecommendResponse(BaseModel):
    user_id: str
    fallback: bool = Field(description="true: unknown customer, popular items instead")
    recommendations: list[Recommendation]
