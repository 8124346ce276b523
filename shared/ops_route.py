"""`GET /log/summary` (admin scope): how a served vertical is doing, in one answer.

The console's operations tab reads it, and so can any dashboard: the version serving and
its test metrics, prediction and feedback counts, the newest logged predictions, the
latest monitor figures with their thresholds, and the registry's versions with the
champion marked (when the server follows the champion). Read-only: promotion stays a
command.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from verticals.core.hotswap import Versions
from verticals.core.logs import get_logger
from verticals.core.predlog import PredictionLog, utcnow

log = get_logger("serving")
SUMMARY_PATH = "/log/summary"  # under /log: admin scope (auth.py)
_SHOWN_CHARS = 300  # of a logged input or output, in the recent predictions


def add_summary_route(
    app: FastAPI, versions: Versions[Any], plog: PredictionLog | None, follow: Any
) -> None:
    """Register `GET /log/summary`; `follow` is the `model_versions.Champion` the server
    follows (its store lists the registry), or None."""

    @app.get(SUMMARY_PATH)
    async def summary(recent: int = Query(20, ge=0, le=500)) -> JSONResponse:
        """The operations summary (see the module's description); admin scope."""
        served = versions.current
        body: dict[str, Any] = {
            "vertical": served.vertical.name,
            "model_version": served.version,
            "metrics": served.bundle.metrics,
            "headline_metric": served.vertical.headline_metric,
            "prediction_log": None if plog is None else plog.settings.describe(),
        }
        if plog is not None:
            body.update(await asyncio.to_thread(_log_figures, plog, served.vertical.name, recent))
        store = getattr(follow, "store", None)
        body["registry"] = None
        if store is not None:
            try:
                body["registry"] = await asyncio.to_thread(
                    _registry, store, served.vertical.name, served.vertical.headline_metric
                )
            except Exception as exc:  # noqa: BLE001 - the registry may be down; say so
                log.warning("the ops summary cannot read the registry: %s", exc)
                body["registry_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return JSONResponse(body)


def _log_figures(plog: PredictionLog, vertical: str, recent: int) -> dict[str, Any]:
    """Counts (all time and the last 24 h), the newest predictions, the latest monitor."""
    entries = plog.entries(vertical, limit=recent) if recent else []
    rows = [
        {
            "created": e.created.isoformat(timespec="seconds") if e.created else None,
            "request_id": e.request_id,
            "model_version": e.model_version,
            "inputs": _short(e.inputs),
            "outputs": _short(e.outputs),
            "outcome": _short(e.outcome),
            # a record request's first record, whole (a console fills its form with it)
            "request": e.inputs[0]
            if isinstance(e.inputs, list) and e.inputs and isinstance(e.inputs[0], dict)
            else None,
        }
        for e in reversed(entries)  # newest first
    ]
    monitor = plog.latest_monitor(vertical)
    if monitor is not None:
        created = monitor["created"]
        monitor = {
            "created": created.isoformat(timespec="seconds") if created else None,
            "model_version": monitor["model_version"],
            "ok": bool(monitor["ok"]),
            "rows": monitor["rows"],
            "figures": monitor["figures"],
        }
    return {
        "counts": plog.counts(vertical),
        "counts_24h": plog.counts(vertical, since=utcnow() - timedelta(hours=24)),
        "recent": rows,
        "monitor": monitor,
    }


def _registry(store: Any, vertical: str, headline: str) -> list[dict[str, Any]]:
    from verticals.core.model_versions import versions_table

    frame = versions_table(store, vertical, headline)
    if frame.empty:
        return []
    frame["registered"] = frame["registered"].astype(str)
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _short(value: Any) -> str | None:
    """A logged value as a line of at most `_SHOWN_CHARS` characters."""
    import json

    if value is None:
        return None
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
