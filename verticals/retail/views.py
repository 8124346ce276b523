"""What a merchandiser sees of recommendations on the console: the items with their
catalog details, the filters the answer obeyed, a note when popularity stood in for an
unknown customer, and the items similar to one picked from the list."""

from __future__ import annotations

from typing import Any

from verticals.core.views import Answer, Choice, Headline, Note, Table, View
from verticals.retail.model import RetailModel

SIMILAR_K = 5
CONTROLS = (Choice("similar", "items similar to", [], None),)


def view(model: RetailModel, answer: Answer, controls: dict[str, Any]) -> View:
    rows = answer.body.get("predictions") or []
    if not rows:
        return View([Note("The answer holds no request.")])
    first, asked = rows[0], (answer.records or [{}])[0]
    items = [r["item_id"] for r in first["recommendations"]]
    who = (f"customer {first['user_id']}" if first.get("user_id") is not None
           else f"item {first['item_id']} (similar items)")  # fmt: skip
    panels: list[Any] = [Headline(f"{len(items)} items for {who}")]
    if first.get("fallback"):
        unknown = "customer" if first.get("user_id") is not None else "item"
        panels.append(Note(f"**Popular items instead**: the model does not know this {unknown}."))
    if first.get("short"):
        panels.append(Note("Fewer items than asked for were eligible after the filters."))
    panels.append(Note(_filters(asked)))
    panels.append(Table(_with_catalog(model, first["recommendations"]), "recommendations"))
    chosen = controls.get("similar")
    choices = {"similar": {"choices": items, "value": chosen if chosen in items else None}}
    if chosen in items:
        related = answer.related
        if related is None or (isinstance(related, Answer) and _item_of(related) != chosen):
            return View(panels, choices, ask=[{"item_id": chosen, "k": SIMILAR_K}])
        if isinstance(related, str):
            panels.append(Note(f"Similar items could not be fetched: {related}"))
        else:
            similar = related.body["predictions"][0]["recommendations"]
            panels.append(Table(_with_catalog(model, similar), f"items similar to {chosen}"))
    return View(panels, choices)


def _item_of(answer: Answer) -> Any:
    rows = answer.body.get("predictions") or [{}]
    return rows[0].get("item_id")


def _filters(asked: dict[str, Any]) -> str:
    parts = [f"bought items {'left out' if asked.get('exclude_bought', True) else 'allowed'}"]
    if asked.get("category"):
        parts.append(f"category {asked['category']} only")
    if asked.get("exclude_items"):
        parts.append(f"never: {', '.join(map(str, asked['exclude_items']))}")
    return "Filters: " + "; ".join(parts) + "."


def _with_catalog(model: RetailModel, recommended: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recommended items with their catalog columns (category, price band)."""
    rows = []
    catalog = model.catalog
    for rec in recommended:
        row = {"rank": rec["rank"], "item_id": rec["item_id"], "score": round(rec["score"], 4)}
        if catalog is not None and rec["item_id"] in catalog.index:
            row.update(catalog.loc[rec["item_id"]].to_dict())
        rows.append(row)
    return rows
