"""Model versions in the MLflow registry: one registered model per vertical, one version per
bundle, and the `champion` alias that production serves.

The bundle stays the unit that is served; a version points at its folder and carries its
manifest's sha256, its metrics and its source run. Promoting verifies the bundle first (every
file against the manifest, the manifest against the version), and so does a server before it
serves a new champion: a damaged or re-packaged bundle never goes into production.

Each move of the champion is recorded as a tag of its own on the registered model (who,
when, why), and the versions it pointed at form the short stack that `rollback` pops. Tags,
not one growing value: a PostgreSQL store keeps a tag in at most 5,000 characters.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verticals.core.bundle import MANIFEST, sha256, verify
from verticals.core.errors import UserError
from verticals.core.run_tracking import metric_key
from verticals.core.tracking import CHAMPION, Store, current_user, experiment_id, model_name

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

BUNDLE_TAG = "verticals.bundle"
DIGEST_TAG = "verticals.manifest_sha256"
NAME_TAG = "verticals.model_version"
METRIC_TAG = "metric."
BUNDLE_ARTIFACT = "bundle"  # a tracking server keeps a registered bundle under this
STACK_TAG = "verticals.champion_stack"  # versions the champion named, for rollback
EVENT_TAG = "verticals.champion_event."  # + a zero-padded number: one tag per move
_STACK_KEEP = 50
_REASON_CHARS = 1000
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # a missing alias: the latter


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
    source: str = ""
    name: str = ""  # the registered model


@dataclass(frozen=True)
class Champion:
    """The bundle that the `champion` alias of `verticals-<vertical>` names, checked and
    asked afresh on each call (None: no champion yet, or no store yet). Servers call it on
    an interval; it is a plain value, so each server process can rebuild it from the
    environment. A champion whose manifest is not the one registered raises `UserError`."""

    store: Store
    vertical: str

    def __call__(self) -> Path | None:
        if not self.store.exists():
            return None
        found = _by_alias(self.store, self.vertical, CHAMPION)
        if found is None:
            return None
        # the manifest only: servers ask every few seconds, and `load_bundle` checks
        # every file when the champion has moved
        return check_bundle(self.store, _version(found, {}), "served", files=False)

    def to_env(self) -> str:
        return json.dumps({"store": asdict(self.store), "vertical": self.vertical})

    @classmethod
    def from_env(cls, value: str) -> Champion:
        given = json.loads(value)
        return cls(Store(**given["store"]), given["vertical"])

    @classmethod
    def of(cls, store: Store, vertical: str) -> Champion:
        return cls(store, vertical)


def register(
    store: Store, bundle: Path, vertical: str, tags: dict[str, str] | None = None
) -> tuple[int, bool]:
    """Register `bundle` as a new version of `verticals-<vertical>` (with `tags` besides its
    own, in the same call); the first version becomes champion when there is none. Returns
    (version, became champion)."""
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
        **(tags or {}),
    }
    run_id = run.get("run_id") if run.get("uri") == store.describe() else None
    source = str(bundle.resolve())
    if store.is_server:  # it accepts no local path: the bundle goes up as run artifacts
        run_id = run_id or _packaging_run(store, vertical, bundle)
        client.log_artifacts(run_id, str(bundle), BUNDLE_ARTIFACT)
        source = f"runs:/{run_id}/{BUNDLE_ARTIFACT}"
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags=tags,
        description=f"bundle {manifest['model_version']}",
    )  # fmt: skip
    number = int(version.version)
    first = _by_alias(store, vertical, CHAMPION) is None
    if first:
        _move_champion(store, vertical, number, "promote", "first version registered")
    return number, first


def champion(store: Store, vertical: str) -> Version | None:
    """The version the champion alias names (None: none yet)."""
    if not store.exists():
        return None
    found = _by_alias(store, vertical, CHAMPION)
    return None if found is None else _version(found, _aliases(_registered(store, vertical)))


def forget(store: Store, vertical: str, version: int, champion: int) -> None:
    """Undo a registration that did not finish (a retrain failed or was stopped after it):
    the version goes, and the champion alias names `champion` again."""
    client, name = store.client(), model_name(vertical)
    try:
        client.delete_model_version(name, str(version))
    finally:
        if _by_alias(store, vertical, CHAMPION) is None:
            client.set_registered_model_alias(name, CHAMPION, str(champion))


def free_bundle_name(store: Store, vertical: str, folder: Path) -> str:
    """`folder`'s name, or `<name>-2`, `-3`... when a registered version already points at
    that folder: a registered bundle is never replaced (its version would stop verifying)."""
    taken = {v.bundle.resolve() for v in versions(store, vertical)}
    name, n = folder.name, 1
    while (folder.parent / name).resolve() in taken:
        n += 1
        name = f"{folder.name}-{n}"
    return name


def promote(store: Store, vertical: str, version: int, alias: str = CHAMPION,
            reason: str | None = None) -> int | None:  # fmt: skip
    """Point `alias` at `version` after verifying its bundle; the version it named before."""
    target = get_version(store, vertical, version)
    check_bundle(store, target, "promoted")
    before = _by_alias(store, vertical, alias)
    if alias == CHAMPION:
        _move_champion(store, vertical, version, "promote", reason)
    else:
        store.client().set_registered_model_alias(model_name(vertical), alias, str(version))
    return None if before is None else int(before.version)


def rollback(store: Store, vertical: str, reason: str | None = None) -> tuple[int, int]:
    """Move the champion back to the version it named before the last promotion."""
    current = _by_alias(store, vertical, CHAMPION)
    if current is None:
        raise UserError(f"{model_name(vertical)} has no champion to roll back")
    number = int(current.version)
    stack = _stack(_registered(store, vertical))
    while stack and stack[-1] == number:
        stack.pop()
    if not stack:
        raise UserError(
            f"{model_name(vertical)}: version {number} is the only champion there has been; "
            "nothing to roll back to"
        )
    previous = stack[-1]
    check_bundle(store, get_version(store, vertical, previous), "rolled back to")
    _move_champion(store, vertical, previous, "rollback", reason)
    return number, previous


def versions(store: Store, vertical: str) -> list[Version]:
    """Every version of the vertical's registered model, newest first."""
    client = store.client()
    found = client.search_model_versions(f"name = '{model_name(vertical)}'")
    aliases = _aliases(_registered(store, vertical))
    return sorted((_version(v, aliases) for v in found), key=lambda v: -v.version)


def history(store: Store, vertical: str) -> list[dict[str, Any]]:
    """Every move of the champion: version, action, by, at, reason (oldest first)."""
    model = _registered(store, vertical)
    tags = dict(model.tags or {}) if model is not None else {}
    events = [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(EVENT_TAG)]
    return events


def get_version(store: Store, vertical: str, version: int) -> Version:
    from mlflow.exceptions import MlflowException

    try:
        found = store.client().get_model_version(model_name(vertical), str(version))
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        known = ", ".join(str(v.version) for v in versions(store, vertical)) or "none yet"
        raise UserError(
            f"{model_name(vertical)} has no version {version} (registered: {known})",
            hint="`verticals models` lists them; `verticals package` registers a bundle",
        ) from None
    return _version(found, _aliases(_registered(store, vertical)))


def check_bundle(store: Store, version: Version, action: str, files: bool = True) -> Path:
    """The version's bundle folder as it was registered: the same manifest and (`files`)
    every file verified against it; otherwise a one-line `UserError` saying it cannot be
    `action` and naming the file. A bundle kept by a tracking server is downloaded first,
    when not here already."""
    where = f"version {version.version} cannot be {action}"
    folder = _local_bundle(store, version)
    if not (folder / MANIFEST).is_file():
        raise UserError(f"{where}: its bundle {folder} no longer exists")
    expected = version.tags.get(DIGEST_TAG)
    if expected and sha256(folder / MANIFEST) != expected:
        raise UserError(
            f"{where}: {folder / MANIFEST} changed since it was registered (the "
            "bundle was packaged again); register it anew with `verticals package`"
        )
    if files:
        try:
            verify(folder)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return folder


def _local_bundle(store: Store, version: Version) -> Path:
    """Where the version's bundle is on this machine: the folder it was packaged in, or,
    for a bundle a tracking server keeps (`runs:/...`), a downloaded copy in the cache."""
    expected = version.tags.get(DIGEST_TAG)
    here = version.bundle
    if not version.source.startswith("runs:/") or (
        (here / MANIFEST).is_file() and sha256(here / MANIFEST) == expected
    ):
        return here
    copy = Path(store.downloads or ".") / version.name / str(version.version)
    if not ((copy / MANIFEST).is_file() and sha256(copy / MANIFEST) == expected):
        from mlflow.artifacts import download_artifacts

        shutil.rmtree(copy, ignore_errors=True)
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f".{copy.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        download_artifacts(version.source, dst_path=str(partial), tracking_uri=store.uri)
        os.replace(partial / BUNDLE_ARTIFACT, copy)
        shutil.rmtree(partial, ignore_errors=True)
    return copy


def _packaging_run(store: Store, vertical: str, bundle: Path) -> str:
    """A run to carry a bundle whose training was not tracked in this store."""
    client = store.client()
    run = client.create_run(
        experiment_id(store, vertical), run_name=f"package {bundle.name}",
        tags={"verticals.vertical": vertical},
    )  # fmt: skip
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _by_alias(store: Store, vertical: str, alias: str) -> ModelVersion | None:
    """The version `alias` names; None when there is no such alias (or model) yet. Any
    other failure of the store is raised: it must not read as "no champion"."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client().get_model_version_by_alias(model_name(vertical), alias)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def _registered(store: Store, vertical: str) -> Any:
    """The registered model (its aliases and tags); None before the first version."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client().get_registered_model(model_name(vertical))
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def _aliases(model: Any) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, number in ((model.aliases or {}) if model is not None else {}).items():
        out.setdefault(int(number), []).append(alias)
    return out


def _stack(model: Any) -> list[int]:
    raw = (model.tags or {}).get(STACK_TAG) if model is not None else None
    try:
        return [int(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        return []


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
        source=str(found.source or ""),
        name=str(found.name),
    )


def _move_champion(
    store: Store, vertical: str, version: int, action: str, reason: str | None
) -> None:
    """Record the move (event, rollback stack, the version's own tags), then point
    `champion` at `version`."""
    client, name = store.client(), model_name(vertical)
    model = _registered(store, vertical)
    stack = _stack(model)
    if action == "rollback":
        while stack and stack[-1] != version:
            stack.pop()
    elif not stack or stack[-1] != version:
        stack.append(version)
    count = sum(1 for k in (model.tags or {}) if k.startswith(EVENT_TAG)) if model else 0
    event = {
        "version": version,
        "action": action,
        "by": current_user(),
        "at": datetime.now().isoformat(timespec="seconds"),
        "reason": (reason or "")[:_REASON_CHARS],
    }
    client.set_registered_model_tag(name, f"{EVENT_TAG}{count:06d}", json.dumps(event))
    client.set_registered_model_tag(name, STACK_TAG, json.dumps(stack[-_STACK_KEEP:]))
    for key in ("by", "at", "reason"):
        client.set_model_version_tag(name, str(version), f"verticals.champion_{key}", event[key])
    client.set_registered_model_alias(name, CHAMPION, str(version))


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
            "retrain": v.tags.get("verticals.retrain.decision", ""),
            "promoted_by": v.tags.get("verticals.champion_by", ""),
            "reason": v.tags.get("verticals.champion_reason", ""),
        }
        for v in versions(store, vertical)
    ]
    return pd.DataFrame(rows)
