"""What the prediction log costs a server: finance `/predict` of one record with the log on
(every answer safe before it is sent) and off, in one run.

The same bundle is served by the same app factory in its own uvicorn process(es), with
`VERTICALS_LOG=off` or with the embedded SQLite log (each answer appended to its server's
spool before it is sent, moved into SQLite by a low-priority process; the figures say how
much of it was in SQLite when the load stopped, and after), and with `--postgres URL` also
with a PostgreSQL log (each answer committed before it is sent, many per commit).
Load: wrk (Debian's package) on loopback, else httpx clients. Each setting is measured
`--repeats` times, alternating, and the best requests/s kept (the cores are shared with the
load generator: the best is the least disturbed). The figure the issue
sets: throughput lost with the log at 8 clients and 2 workers, under 10%.

    .venv/bin/python benchmarks/predlog.py [--seconds 8] [--repeats 3] [--out f.json]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parser, say, write_figures  # noqa: E402
from benchmarks.loopback import serving  # noqa: E402
from benchmarks.serving import bundle_for, load, one_request, warm  # noqa: E402
from verticals.core.predlog import LOG_ENV, LogSettings, PredictionLog  # noqa: E402


def measure(bundle: Path, env: dict[str, str], workers: int, clients: int, seconds: float,
            tmp: Path, database: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Load figures; with `database` (an embedded log), also how many rows it held when the
    load stopped, against the requests answered (the rest waited in the spools, moved by a
    process that yields the cores to the servers)."""
    body = one_request(bundle)
    with serving(bundle, workers, env=env) as url:
        before = _rows(database)
        warm(f"{url}/predict", body)
        time.sleep(1.0)  # a second worker may still be warming up
        figures = load(f"{url}/predict", body, clients, seconds, tmp)
        if database is not None:
            answered = figures["requests_per_s"] * seconds + 50  # and the warm-up's
            figures["moved_during_load"] = (_rows(database) - before) / answered
    if database is not None:  # once the servers have stopped, the movers finished
        figures["in_log_after"] = (_rows(database) - before) / answered
    return figures


def _rows(database: Path | None) -> int:
    if database is None or not database.is_file():
        return 0
    with sqlite3.connect(database, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM predictions").fetchone()[0])


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--seconds", type=float, default=8.0)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--bundles", type=Path, default=None, help="reuse bundles trained here")
    args.add_argument("--postgres", default=None, help="also log to this SQLAlchemy URL")
    opts = args.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predlog-") as tmp_name:
        tmp = Path(tmp_name)
        root = opts.bundles or tmp
        bundle = bundle_for("finance", root, opts.device)
        logs = {"off": None, "sqlite": LogSettings.default(tmp / "predlog")}
        if opts.postgres:
            logs["postgres"] = LogSettings(url=opts.postgres, files_dir=str(tmp / "files"))
        for settings in logs.values():
            if settings is not None:
                PredictionLog(settings)  # migrated once, as `verticals serve` does
        results: dict[str, Any] = {"seconds": opts.seconds, "repeats": opts.repeats}
        for workers, clients in ((1, 1), (2, 8)):
            key = f"w{workers}_c{clients}"
            best: dict[str, dict[str, Any]] = {}
            for _ in range(opts.repeats):
                for name, settings in logs.items():
                    env = {LOG_ENV: "off" if settings is None else settings.to_env()}
                    database = None if settings is None else settings.embedded_file
                    figures = measure(bundle, env, workers, clients, opts.seconds, tmp, database)
                    moved = ""
                    if "moved_during_load" in figures:
                        during, after = figures["moved_during_load"], figures["in_log_after"]
                        moved = (f", {during:.0%} of the rows in SQLite when the load "
                                 f"stopped, {after:.0%} after")  # fmt: skip
                    say(f"  log {name:8} workers={workers} clients={clients}: p50 "
                        f"{figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
                        f"{figures['requests_per_s']:.0f} req/s{moved}")  # fmt: skip
                    if figures["requests_per_s"] > best.get(name, {}).get("requests_per_s", -1):
                        best[name] = figures
            results[key] = best
            for name in logs:
                if name != "off":
                    lost = 1 - best[name]["requests_per_s"] / best["off"]["requests_per_s"]
                    results[key][f"{name}_throughput_loss"] = lost
                    p50, base = best[name]["p50_ms"], best["off"]["p50_ms"]
                    say(f"{key}: log {name} loses {lost:.1%} of the requests/s "
                        f"(p50 {p50:.2f} vs {base:.2f} ms)")  # fmt: skip
        write_figures(opts.out, results)


if __name__ == "__main__":
    main()
