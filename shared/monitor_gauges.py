"""The latest `verticals monitor` figures as Prometheus gauges on a server's `/metrics`.

The monitor stores every result in the prediction log's database, so every server that
logs there (each worker, each machine on a shared PostgreSQL) shows the same figures
without a file to share. Read at most every `REFRESH_S` seconds: a scrape must not query
the database each time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from verticals.core.logs import get_logger
from verticals.core.predlog import PredictionLog

log = get_logger("predlog")
REFRESH_S = 15.0


class MonitorGauges(Collector):
    """`verticals_monitor_*` gauges of one vertical, from its newest monitor run."""

    def __init__(self, predlog: PredictionLog, vertical: str) -> None:
        self.log, self.vertical = predlog, vertical
        self._latest: dict[str, Any] | None = None
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_S:
                self._read_at = time.monotonic()
                try:
                    self._latest = self.log.latest_monitor(self.vertical)
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail for this
                    log.warning("cannot read the latest monitor figures: %s", exc)
            return self._latest

    def collect(self) -> Iterator[GaugeMetricFamily]:
        run = self.latest()
        if run is None:
            return
        figures = run["figures"]
        version = str(run["model_version"])
        ok = GaugeMetricFamily(
            "verticals_monitor_ok", "1 when every monitored figure was inside its threshold",
            labels=["model_version"],
        )  # fmt: skip
        ok.add_metric([version], 1.0 if run["ok"] else 0.0)
        yield ok
        when = GaugeMetricFamily(
            "verticals_monitor_timestamp_seconds", "When the latest monitor ran (Unix time)"
        )
        created = run["created"]
        if hasattr(created, "timestamp"):  # stored in UTC, without a zone
            when.add_metric([], created.replace(tzinfo=UTC).timestamp())
        yield when
        rows = GaugeMetricFamily("verticals_monitor_rows", "Logged inputs the monitor compared")
        rows.add_metric([], float(run["rows"]))
        yield rows
        breaches = GaugeMetricFamily(
            "verticals_monitor_breaches", "Figures outside their thresholds in the latest run"
        )
        breaches.add_metric([], float(len(figures.get("breaches", []))))
        yield breaches
        psi = GaugeMetricFamily(
            "verticals_monitor_psi", "Population stability index of a column against the "
            "training reference", labels=["column"],
        )  # fmt: skip
        for column, stats in figures.get("columns", {}).items():
            value = stats.get("psi")
            if isinstance(value, int | float) and math.isfinite(value):
                psi.add_metric([column], float(value))
        yield psi
        live = GaugeMetricFamily(
            "verticals_monitor_live", "A metric measured on feedback (the live counterpart "
            "of a test metric)", labels=["metric"],
        )  # fmt: skip
        for name, value in figures.get("live", {}).items():
            if isinstance(value, int | float) and math.isfinite(value):
                live.add_metric([name], float(value))
        yield live
