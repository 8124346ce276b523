"""Model versions in the MLflow registry: one registered model per vertical, one version per
bundle, and the `champion` alias that production serves.

The bundle stays the unit that is served; a version points at its folder and carries its
manifest's sha256, its metrics and its source run. Promoting verifies the bundle first (every
file against the manifest, the manifest against the version), so a damaged bundle never
becomes champion. Each move of the champion is recorded (who, when, why) in the registered
model's `verticals.champions` tag, which is also the stack `rollback` pops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from verticals.core.bundle import MANIFEST, sha256, verify
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.run_tracking import metric_key
from verticals.core.tracking import CHAMPION, Store, current_user, model_name

log = get_logger("tracking")
BUNDLE_TAG = "verticals.bundle"
DIGEST_TAG = "verticals.manifest_sha256"
NAME_TAG = "verticals.model_version"
METRIC_TAG = "metric."
HISTORY_TAG = "verticals.champions"
_HISTORY_KEEP = 200


@dataclass
class Version:
    """One registered version, as `verticals models` lists it."""

    version: int
    bundle: Path
    model_version: str
    aliases: list[str]
    metrics: dict[str, float]
    created: datetime
    run_id: str | None
    tags: dict[str, str]


def register(store: Store, bundle: Path, vertical: str) -> tuple[int, bool]:
    """Register `bundle` as a new version of `verticals-<vertical>`; the first version
    becomes champion when there is none. Returns (version, became champion)."""
    from mlflow.exceptions import MlflowException

    manifest = verify(bundle)
    client, name = store.client(), model_name(vertical)
    try:
        client.create_registered_model(name, description=f"Bundles of the {vertical} vertical")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    metrics = _bundle_json(bundle, "metrics.json")
    run = _bundle_json(bundle, "run.json").get("tracking", {})
    tags = {
        BUNDLE_TAG: str(bundle.resolve()),
        DIGEST_TAG: sha256(bundle / MANIFEST),
        NAME_TAG: str(manifest["model_version"]),
        **{
            f"{METRIC_TAG}{metric_key(k)}": repr(float(v))
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
    }
    run_id = run.get("run_id") if run.get("uri") == store.describe() else None
    version = client.create_model_version(
        name, source=str(bundle.resolve()), run_id=run_id, tags=tags,
        description=f"bundle {manifest['model_version']}",
    )  # fmt: skip
    number = int(version.version)
    first = _alias_version(store, vertical, CHAMPION) is None
    if first:
        _move_champion(store, vertical, number, "promote", "first version registered")
    return number, first


def promote(store: Store, vertical: str, version: int, alias: str = CHAMPION,
            reason: str | None = None) -> int | None:  # fmt: skip
    """Point `alias` at `version` after verifying its bundle; the version it named before."""
    target = get_version(store, vertical, version)
    check_bundle(target)
    before = _alias_version(store, vertical, alias)
    if alias == CHAMPION:
        _move_champion(store, vertical, version, "promote", reason)
    else:
        store.client().set_registered_model_alias(model_name(vertical), alias, str(version))
    return before


def rollback(store: Store, vertical: str, reason: str | None = None) -> tuple[int, int]:
    """Move the champion back to the version it named before the last promotion."""
    history = _history(store, vertical)
    stack = list(history["stack"])
    current = _alias_version(store, vertical, CHAMPION)
    if current is None:
        raise UserError(f"{model_name(vertical)} has no champion to roll back")
    while stack and stack[-1] == current:
        stack.pop()
    if not stack:
        raise UserError(
            f"{model_name(vertical)}: version {current} is the only champion there has been; "
            "nothing to roll back to"
        )
    previous = stack[-1]
    check_bundle(get_version(store, vertical, previous))
    _move_champion(store, vertical, previous, "rollback", reason, pop=True)
    return current, previous


def versions(store: Store, vertical: str) -> list[Version]:
    """Every version of the vertical's registered model, newest first."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        found = client.search_model_versions(f"name = '{model_name(vertical)}'")
    except MlflowException:
        return []
    aliases = _aliases(store, vertical)
    return sorted((_version(v, aliases) for v in found), key=lambda v: -v.version)


def history(store: Store, vertical: str) -> list[dict[str, Any]]:
    """Every move of the champion: version, action, by, at, reason (oldest first)."""
    return list(_history(store, vertical)["events"])


def get_version(store: Store, vertical: str, version: int) -> Version:
    from mlflow.exceptions import MlflowException

    try:
        found = store.client().get_model_version(model_name(vertical), str(version))
    except MlflowException:
        known = ", ".join(str(v.version) for v in versions(store, vertical)) or "none yet"
        raise UserError(
            f"{model_name(vertical)} has no version {version} (registered: {known})",
            hint="`verticals models` lists them; `verticals package` registers a bundle",
        ) from None
    return _version(found, _aliases(store, vertical))


def check_bundle(version: Version) -> None:
    """The version's bundle as it was registered: every file verified, same manifest."""
    where = f"version {version.version}"
    if not version.bundle.is_dir():
        raise UserError(f"{where}: its bundle {version.bundle} no longer exists")
    try:
        verify(version.bundle)
    except UserError as exc:
        raise UserError(f"{where} cannot be promoted: {exc}") from None
    expected = version.tags.get(DIGEST_TAG)
    if expected and sha256(version.bundle / MANIFEST) != expected:
        raise UserError(
            f"{where} cannot be promoted: {version.bundle / MANIFEST} changed since it was "
            "registered (the bundle was packaged again); register it anew with "
            "`verticals package`"
        )


def alias_bundle(store: Store, vertical: str, alias: str) -> Path | None:
    """The bundle folder `alias` names (None: no such alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        found = store.client().get_model_version_by_alias(model_name(vertical), alias)
    except MlflowException:
        return None
    return Path(found.tags.get(BUNDLE_TAG) or found.source)


def _alias_version(store: Store, vertical: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        found = store.client().get_model_version_by_alias(model_name(vertical), alias)
    except MlflowException:
        return None
    return int(found.version)


def _aliases(store: Store, vertical: str) -> dict[int, list[str]]:
    from mlflow.exceptions import MlflowException

    try:
        model = store.client().get_registered_model(model_name(vertical))
    except MlflowException:
        return {}
    out: dict[int, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        out.setdefault(int(number), []).append(alias)
    return out


def _version(found: Any, aliases: dict[int, list[str]]) -> Version:
    tags = dict(found.tags or {})
    metrics = {
        k.removeprefix(METRIC_TAG): float(v) for k, v in tags.items() if k.startswith(METRIC_TAG)
    }
    return Version(
        version=int(found.version),
        bundle=Path(tags.get(BUNDLE_TAG) or found.source),
        model_version=tags.get(NAME_TAG, ""),
        aliases=sorted(aliases.get(int(found.version), [])),
        metrics=metrics,
        created=datetime.fromtimestamp(found.creation_timestamp / 1000),
        run_id=found.run_id or None,
        tags=tags,
    )


def _history(store: Store, vertical: str) -> dict[str, list[Any]]:
    from mlflow.exceptions import MlflowException

    try:
        model = store.client().get_registered_model(model_name(vertical))
    except MlflowException:
        return {"stack": [], "events": []}
    raw = (model.tags or {}).get(HISTORY_TAG)
    try:
        saved = json.loads(raw) if raw else {}
    except ValueError:
        saved = {}
    return {"stack": list(saved.get("stack", [])), "events": list(saved.get("events", []))}


def _move_champion(store: Store, vertical: str, version: int, action: str,
                   reason: str | None, pop: bool = False) -> None:  # fmt: skip
    """Point `champion` at `version` and record the move (and the rollback stack)."""
    client, name = store.client(), model_name(vertical)
    saved = _history(store, vertical)
    stack = saved["stack"]
    if pop:
        while stack and stack[-1] != version:
            stack.pop()
    elif not stack or stack[-1] != version:
        stack.append(version)
    event = {
        "version": version,
        "action": action,
        "by": current_user(),
        "at": datetime.now().isoformat(timespec="seconds"),
        "reason": reason or "",
    }
    saved = {"stack": stack[-_HISTORY_KEEP:], "events": [*saved["events"], event][-_HISTORY_KEEP:]}
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(saved))
    for key, value in (("by", event["by"]), ("at", event["at"]), ("reason", event["reason"])):
        client.set_model_version_tag(name, str(version), f"verticals.champion_{key}", value)
    log.debug("%s: champion is version %d (%s%s)", name, version, action,
             f": {reason}" if reason else "")  # fmt: skip


def _bundle_json(bundle: Path, name: str) -> dict[str, Any]:
    path = bundle / name
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def versions_table(store: Store, vertical: str, headline: str = "") -> Any:
    """The registered versions as a data frame (what `verticals models` prints)."""
    import pandas as pd

    key = metric_key(headline) if headline else ""
    rows = [
        {
            "version": v.version,
            "aliases": ",".join(v.aliases),
            **({headline: v.metrics.get(key)} if headline else {}),
            "bundle": v.model_version,
            "registered": v.created.replace(microsecond=0),
            "promoted_by": v.tags.get("verticals.champion_by", ""),
            "reason": v.tags.get("verticals.champion_reason", ""),
        }
        for v in versions(store, vertical)
    ]
    return pd.DataFrame(rows)
