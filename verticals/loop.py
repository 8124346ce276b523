"""`verticals loop <vertical>`: monitor on a clock, and retrain when the monitor reports a
breach or enough new feedback arrived; for those without a scheduler (cron and Airflow do
the same with two commands: see the README)."""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig

from verticals import commands
from verticals.core.config import require_int
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.predlog import parse_duration, parse_since

log = get_logger("loop")


def loop(cfg: DictConfig) -> int:
    """Cycles of monitor -> (retrain); returns how many retrains ran."""
    every = parse_duration(cfg.every, "every")
    if every <= 0:
        raise UserError(f"every={cfg.every!r}; expected a duration above zero, e.g. 1h")
    cycles = None if cfg.cycles is None else require_int(cfg.cycles, "cycles", minimum=1)
    threshold = int(cfg.feedback or cfg.retrain.min_feedback)
    state = {"outcomes_at_last_retrain": None}
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
        drift = exc.code == 1
    except UserError as exc:
        print(f"monitor: {exc}")
    except Exception as exc:  # noqa: BLE001 - one failed cycle must not end the loop
        log.warning("monitor failed: %s: %s", type(exc).__name__, exc)
    outcomes = _outcomes(cfg)
    last = state["outcomes_at_last_retrain"]
    new = outcomes - (last or 0) if last is not None else outcomes
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
    state["outcomes_at_last_retrain"] = outcomes
    try:
        commands.retrain(cfg)
    except UserError as exc:
        print(f"retrain: {exc}")
        return 0
    except Exception as exc:  # noqa: BLE001
        log.warning("retrain failed: %s: %s", type(exc).__name__, exc)
        return 0
    return 1


def _outcomes(cfg: DictConfig) -> int:
    """Outcomes in the log for the vertical (the retrain window's)."""
    try:
        plog = commands._log(cfg)
        return int(plog.counts(cfg.vertical, parse_since(cfg.retrain.since)).get("outcomes", 0))
    except UserError:
        return 0
