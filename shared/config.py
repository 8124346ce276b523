"""Structured configs for the parts of the Hydra tree that the core owns.

Each schema is stored in Hydra's ConfigStore as `<group>/schema`; the YAML options in
`conf/` extend it, so an override with a typo or a value of the wrong type fails at once
with Hydra's own message. Verticals register their own data/model schemas the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from verticals.core.errors import UserError


@dataclass
class TrainerConfig:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 | fp16


@dataclass
class PathsConfig:
    root_dir: str = "."
    runs_dir: str = "runs"
    bundles_dir: str = "bundles"
    cache_dir: str = "cache"  # generated demo data and preprocessed-data caches


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # server processes; Prometheus /metrics then counts per process
    log_level: str = "info"


def store_schema(group: str, node: Any, name: str = "schema") -> None:
    """Register `node` as `<group>/<name>` so YAML options can extend it."""
    ConfigStore.instance().store(group=group, name=name, node=node)


def register_core_configs() -> None:
    store_schema("trainer", TrainerConfig)
    store_schema("paths", PathsConfig)
    store_schema("serve", ServeConfig)


def require_int(value: Any, key: str, minimum: int | None = None) -> int:
    """`value` of a top-level key (seed, batch_size) as an int, or a `UserError` naming it."""
    try:
        number = int(value)
        if isinstance(value, float | bool) or (isinstance(value, str) and not value.strip()):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r}; expected a whole number") from None
    if minimum is not None and number < minimum:
        raise UserError(f"{key}={number}; expected at least {minimum}")
    return number
