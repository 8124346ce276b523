"""`verticals loop <vertical>`: monitor on a clock, and retrain when the monitor reports a
breach or enough new feedback arrived; for those without a scheduler (cron and Airflow do
the same with two commands: see the README)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from omegaconf import DictConfig

from verticals import commands
from verticals.core.config import require_int
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.predlog import parse_duration, parse_since, utcnow

log = get_logger("loop")


def loop(cfg: DictConfig) -> int:
    """Cycles of monitor -> (retrain); returns how many retrains ran."""
    every = parse_duration(cfg.every, "every")
    if every <= 0:
        raise UserError(f"every={cfg.every!r}; expected a duration above zero, e.g. 1h")
    cycles = None if cfg.cycles is None else require_int(cfg.cycles, "cycles", minimum=1)
    threshold = int(cfg.feedback or cfg.retrain.min_feedback)
    state: dict[str, Any] = {"last_retrain": None}
    retrains, n = 0, 0
    print(f"{cfg.vertical}: monitoring every {cfg.every}; retrain on "
          f"{'a breach or ' if cfg.on_drift else ''}{threshold} new outcomes "
          f"(Ctrl-C or SIGTERM stops)")  # fmt: skip
    with commands._terminate_as_exit():
        while True:
            n += 1
            retrains += _cycle(cfg, threshold, state)
            if cycles is not None and n >= cycles:
                return retrains
            time.sleep(every)


def _cycle(cfg: DictConfig, threshold: int, state: dict[str, Any]) -> int:
    """One monitor run and, when it calls for one, a retrain. A failing step is reported
    and the loop goes on: the next cycle may find the database back."""
    drift = False
    try:
        commands._monitor(cfg)
    except SystemExit as exc:
        if exc.code != 1:  # SIGTERM, Ctrl-C: the loop ends
            raise
        drift = True
    except UserError as exc:
        print(f"monitor: {exc}")
    except Exception as exc:  # noqa: BLE001 - one failed cycle must not end the loop
        log.warning("monitor failed: %s: %s", type(exc).__name__, exc)
    new = _fresh_outcomes(cfg, state.get("last_retrain"))
    why = []
    if drift and cfg.on_drift:
        why.append("the monitor reported a breach")
    if new >= threshold:
        why.append(f"{new} new outcomes (>= {threshold})")
    if not why:
        print(f"{cfg.vertical}: no retrain ({new} new outcomes, "
              f"{'a breach' if drift else 'no breach'})")  # fmt: skip
        return 0
    print(f"{cfg.vertical}: retraining: {' and '.join(why)}")
    state["last_retrain"] = utcnow()
    try:
        commands.retrain(cfg)
    except UserError as exc:
        print(f"retrain: {exc}")
        return 0
    except Exception as exc:  # noqa: BLE001
        log.warning("retrain failed: %s: %s", type(exc).__name__, exc)
        return 0
    return 1


def _fresh_outcomes(cfg: DictConfig, last_retrain: datetime | None) -> int:
    """Outcomes of predictions newer than what the champion learnt from and than this
    loop's last retrain (inside `retrain.since`, when set)."""
    from verticals.core import model_versions
    from verticals.core.retrain import fresh_after
    from verticals.core.tracking import Store

    try:
        plog = commands._log(cfg)
    except UserError:
        return 0
    starts = [parse_since(cfg.retrain.since, "retrain.since"), last_retrain]
    store = Store.of(cfg)
    champion = model_versions.champion(store, cfg.vertical) if store is not None else None
    if champion is not None:
        starts.append(fresh_after(champion.bundle))
    since = max((s for s in starts if s is not None), default=None)
    return int(plog.counts(cfg.vertical, since)["outcomes"])
