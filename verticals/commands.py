"""What each CLI command does with its Hydra-composed config.

These glue the core together (pipeline, bundles, serving, batch prediction); they know the
vertical only by the name in `cfg.vertical`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from verticals.core import auth, cluster, model_versions, pipeline, registry, run_tracking
from verticals.core.bundle import bundle_name, load_bundle, write_bundle
from verticals.core.config import ServeConfig, require_int
from verticals.core.contract import FileVertical
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.model_versions import Champion
from verticals.core.predlog import LogSettings, PredictionLog, parse_since
from verticals.core.runs import latest, resolve_run
from verticals.core.tables import check_readable, read_table
from verticals.core.tracking import Store, model_name

log = get_logger("serve")


def _hydra_output_dir() -> Path | None:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _sweep_dir() -> str | None:
    """The folder of the Hydra multirun this job belongs to (its runs share a parent run)."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return str(Path(hydra.sweep.dir).resolve()) if hydra.mode == RunMode.MULTIRUN else None


def _user_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _bundle_dir(cfg: DictConfig) -> Path:
    if cfg.bundle:
        return Path(cfg.bundle)
    return latest(Path(cfg.paths.bundles_dir) / cfg.vertical, "bundle")


def train(cfg: DictConfig) -> dict[str, float] | float:
    """Metrics of the run; the one named by `optimized_metric` alone when it is set, since
    a Hydra sweeper (Optuna) optimises the number the task returns."""
    result = pipeline.train(cfg, _hydra_output_dir(), sweep=_sweep_dir())
    print(f"{cfg.vertical}: {pipeline.format_metrics(result.metrics)}")
    print(f"run: {result.run_dir}")
    metric = cfg.get("optimized_metric")
    if metric:
        if metric not in result.metrics:
            raise UserError(f"optimized_metric={metric!r} is not one of: {sorted(result.metrics)}")
        return float(result.metrics[metric])
    return result.metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run = resolve_run(cfg.run, cfg.paths.runs_dir, cfg.vertical)
    metrics = pipeline.evaluate(evaluation_config(cfg, pipeline.load_run_config(run)), run)
    print(f"{cfg.vertical} ({run.name}): {pipeline.format_metrics(metrics, limit=20)}")
    return metrics


def evaluation_config(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The run's own config (data, seed: so the test split is the run's), with this
    command's device and whatever the user overrode: `data=<option>` takes that option whole,
    `data.<key>=...` and `seed=...` change just that key; `cluster=...` (finance's sharded
    Parquet table is scored by Ray tasks) takes this command's cluster settings."""
    merged = OmegaConf.merge(saved, {"trainer": cfg.trainer})
    for override in _user_overrides():
        key = override.lstrip("+~").split("=", 1)[0]
        if key == "cluster" or key.startswith("cluster."):
            merged.cluster = cfg.cluster
        elif key == "data":
            merged.data = cfg.data
        elif key.startswith("data.") or key == "seed":
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    return merged


def package(cfg: DictConfig) -> Path:
    """Write the bundle, and register it as a new version when tracking is on. A run
    packaged again gets a new folder when its first bundle is registered (a registered
    bundle is never replaced)."""
    run = resolve_run(cfg.run, cfg.paths.runs_dir, cfg.vertical)
    bundles = Path(cfg.paths.bundles_dir)
    store = Store.of(cfg)
    name = None
    if store is not None:
        folder = bundles / cfg.vertical / bundle_name(run)
        name = model_versions.free_bundle_name(store, cfg.vertical, folder)
    key = cfg.sign.key  # an Ed25519 private key (PEM): signs the manifest
    bundle = write_bundle(run, bundles, examples=bool(cfg.examples), name=name, sign_key=key)
    print(f"bundle: {bundle}" + (" (manifest signed)" if key else ""))
    if store is not None:
        number, first = model_versions.register(store, bundle, cfg.vertical)
        became = " and champion (the first version)" if first else ""
        print(f"registered {model_name(cfg.vertical)} version {number}{became}")
        if first:
            _fix_holdout(cfg, store, number)
    return bundle


def _fix_holdout(cfg: DictConfig, store: Store, number: int) -> None:
    """A new champion's holdout: fixed now, so that every challenger is scored on it."""
    from verticals.core.retrain import fix_holdout

    folder = fix_holdout(cfg, store, number)
    if folder is not None:
        print(f"holdout of version {number} fixed: {folder}")


def _store(cfg: DictConfig) -> Store:
    """The tracking store the command reads; it must exist (reading creates nothing)."""
    store = Store.of(cfg)
    if store is None:
        raise UserError("tracking is off (tracking=none); this command reads the tracking store")
    if not store.exists():
        raise UserError(
            f"no tracking store at {store.embedded_file} yet",
            hint=f"`verticals train {cfg.vertical}` creates it, or point tracking.uri at one",
        )
    return store


def _print_table(table: Any, empty: str) -> None:
    if table.empty:
        print(empty)
        return
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))


def runs(cfg: DictConfig) -> Any:
    """The vertical's newest runs in the tracking store, with their headline metric."""
    store = _store(cfg)
    experiment = str(cfg.tracking.experiment or cfg.vertical)
    headline = registry.get(cfg.vertical).headline_metric
    limit = require_int(cfg.limit, "limit", minimum=1)
    table = run_tracking.runs_table(store, experiment, headline, limit)
    print(f"runs of {experiment} in {store.describe()} (newest first):")
    _print_table(table, f"no runs yet: `verticals train {cfg.vertical}` records one")
    return table


def models(cfg: DictConfig) -> Any:
    """The vertical's registered versions, their metrics and aliases."""
    store = _store(cfg)
    headline = registry.get(cfg.vertical).headline_metric
    table = model_versions.versions_table(store, cfg.vertical, headline)
    print(f"{model_name(cfg.vertical)} in {store.describe()}:")
    _print_table(table, f"no versions yet: `verticals package {cfg.vertical}` registers one")
    if cfg.history:
        events = pd.DataFrame(model_versions.history(store, cfg.vertical))
        print("\nchampion history (oldest first):")
        _print_table(events, "none")
    return table


def promote(cfg: DictConfig) -> int:
    """Point `champion` (or `alias`) at a version whose bundle verifies."""
    store = _store(cfg)
    version = require_int(cfg.version, "version", minimum=1)
    alias = str(cfg.alias)
    before = model_versions.promote(store, cfg.vertical, version, alias, cfg.reason)
    was = f" (was version {before})" if before is not None else ""
    print(f"{model_name(cfg.vertical)}: {alias} is version {version}{was}")
    if alias == "champion":
        _fix_holdout(cfg, store, version)
    return version


def rollback(cfg: DictConfig) -> int:
    """Move the champion back to the version before the last promotion."""
    store = _store(cfg)
    current, previous = model_versions.rollback(store, cfg.vertical, cfg.reason)
    print(f"{model_name(cfg.vertical)}: champion is version {previous} again (was {current})")
    return previous


def _tokens_file(cfg: DictConfig) -> Path:
    given = cfg.get("tokens_file") or cfg.get("serve", {}).get("tokens_file")
    return Path(given).expanduser().resolve() if given else auth.default_file(
        cfg.paths.tokens_dir, cfg.vertical
    )  # fmt: skip


def token(cfg: DictConfig) -> Any:
    """`verticals token create|list|revoke <vertical>`."""
    path, action = _tokens_file(cfg), str(cfg.action)
    if action == "create":
        secret, entry = auth.create(path, str(cfg.scope), cfg.name)
        print(f"{cfg.vertical}: token {entry.name!r} ({entry.scope}), shown this once:")
        print(secret)
        print(f"its sha256 is in {path}; servers of {cfg.vertical} now need a token")
        return entry.name
    if action == "revoke":
        if not cfg.name:
            raise UserError("revoke needs name=, e.g. `verticals token revoke finance name=app-1`")
        gone = auth.revoke(path, str(cfg.name))
        print(f"{cfg.vertical}: token {gone.name!r} revoked (servers stop taking it within "
              "a second)")  # fmt: skip
        return gone.name
    if action == "list":
        found = auth.read_file(path) if path.is_file() else []
        table = pd.DataFrame([{"name": t.name, "scope": t.scope, "created": t.created}
                              for t in found])  # fmt: skip
        print(f"tokens of {cfg.vertical} in {path}:")
        _print_table(table, "none: its servers are open on loopback only")
        return table
    raise UserError(f"action={action!r}; expected create, list or revoke")


def _guard_address(cfg: DictConfig, settings: ServeConfig) -> None:
    """No tokens: loopback only, unless the user says otherwise, loudly."""
    tokens = auth.Tokens(Path(settings.tokens_file) if settings.tokens_file else None,
                         os.environ.get(auth.ENV))  # fmt: skip
    if tokens.required or _is_loopback(settings.host):
        return
    if not settings.allow_unauthenticated:
        raise UserError(
            f"serve.host={settings.host} reaches beyond this machine, and {cfg.vertical} has "
            "no tokens: anyone who can reach the port could use the model",
            hint=f"`verticals token create {cfg.vertical}` first, or serve.host=127.0.0.1, or "
            "serve.allow_unauthenticated=true if something in front of it checks callers",
        )
    log.warning("serving %s on %s WITHOUT authentication (serve.allow_unauthenticated=true)",
                cfg.vertical, settings.host)  # fmt: skip


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: DictConfig) -> None:
    """Serve `bundle=`, or the registry's champion and follow it as it moves."""
    from verticals.core.serving import run_server

    require_int(cfg.serve.workers, "serve.workers", minimum=1)
    settings = ServeConfig(**OmegaConf.to_container(cfg.serve, resolve=True))  # type: ignore[arg-type]
    settings.tokens_file = str(_tokens_file(cfg))  # workers read it; it may appear later
    _guard_address(cfg, settings)
    path, follow = _served(cfg)
    bundle = load_bundle(path, trust=settings)  # verify once, before any worker starts
    logged = LogSettings.of(cfg)
    print(
        f"serving {cfg.vertical} {bundle.model_version} on http://{settings.host}:{settings.port}/docs"
    )
    print(f"prediction log: {logged.describe() if logged else 'off (log=off)'}")
    tokens = auth.Tokens(Path(settings.tokens_file), os.environ.get(auth.ENV))
    print(f"authentication: {tokens.describe()} ({settings.tokens_file})")
    if cluster.mode(cfg) != "none":  # the same app, as Ray Serve replicas
        from verticals.core.cluster_serve import free_port, run_on_ray

        settings.port = free_port(settings.host, settings.port)  # before Ray's seconds of start
        with cluster.session(cfg):
            run_on_ray(bundle, settings, follow=follow, prediction_log=logged)
        return
    run_server(bundle, settings, follow=follow, prediction_log=logged)


def _served(cfg: DictConfig) -> tuple[Path, Champion | None]:
    """The bundle to start with, and the champion to follow (none for `bundle=PATH`, or
    with tracking off). No champion yet: the latest bundle, until one is promoted."""
    store = Store.of(cfg)
    if cfg.bundle or store is None:
        return _bundle_dir(cfg), None
    follow = Champion.of(store, cfg.vertical)
    champion = follow()
    if champion is not None:
        log.info("%s: serving the champion (%s)", model_name(cfg.vertical), champion)
        return champion, follow
    log.info(
        "%s has no champion in %s: serving the latest bundle, and the champion once one is "
        "promoted", model_name(cfg.vertical), store.describe(),
    )  # fmt: skip
    return _bundle_dir(cfg), follow


def predict(cfg: DictConfig) -> int:
    from verticals.core.batch import predict_file, predict_folder

    source, target = cfg.input, cfg.output  # settings first: cheap to check, no model loaded
    batch_size = require_int(cfg.batch_size, "batch_size", minimum=1)
    keep = cfg.keep_columns
    keep = [keep] if isinstance(keep, str) else list(keep or [])  # keep_columns=id works too
    for item in [source] if isinstance(source, str) else list(source or []):
        if not Path(str(item)).exists():  # before the model loads (seconds for some)
            raise UserError(f"input {item} does not exist")
    bundle = load_bundle(_bundle_dir(cfg))
    journal = _batch_log(cfg, bundle)
    if cluster.mode(cfg) != "none":  # the bundle mapped over Ray actors
        from verticals.core.cluster_batch import predict_on_ray

        with cluster.session(cfg):
            count = predict_on_ray(cfg, bundle, source, target, batch_size, keep, journal)
        print(f"{cfg.vertical}: {count} inputs with {bundle.model_version} on Ray -> {target}")
        _logged(journal)
        return count
    if isinstance(bundle.vertical, FileVertical):
        table = predict_folder(bundle, source, target, journal=journal)
        print(f"{cfg.vertical}: {len(table)} inputs with {bundle.model_version} -> {target}")
        _logged(journal)
        return len(table)
    rows = predict_file(bundle, source, target, batch_size, keep, journal=journal)
    print(f"{cfg.vertical}: scored {rows} rows with {bundle.model_version} -> {target}")
    _logged(journal)
    return rows


def _batch_log(cfg: DictConfig, bundle: Any) -> Any:
    from verticals.core.batch_log import BatchLog

    settings = LogSettings.of(cfg)
    if settings is None:
        return None
    return BatchLog(PredictionLog(settings), cfg.vertical, bundle.model_version)


def _logged(journal: Any) -> None:
    if journal is not None:
        print(f"logged as {journal.batch_id} ({journal.count} inputs) in "
              f"{journal.log.settings.describe()}")  # fmt: skip


def _log(cfg: DictConfig, must_exist: bool = True) -> PredictionLog:
    """The prediction log a command reads (an embedded one must exist already)."""
    settings = LogSettings.of(cfg)
    if settings is None:
        raise UserError("the prediction log is off (log=off); this command reads it")
    file = settings.embedded_file
    if must_exist and file is not None and not file.is_file():
        raise UserError(
            f"no prediction log at {file} yet",
            hint=f"`verticals serve {cfg.vertical}` or `verticals predict` writes it, or "
            "point log.url at one",
        )
    return PredictionLog(settings)


def feedback(cfg: DictConfig) -> int:
    """Store outcomes from a CSV/Parquet table: all rows, or none if one is bad."""
    from verticals.core.feedback import FeedbackCheck, answer, rows_of_table
    from verticals.core.records import BadRequest

    source = Path(cfg.input)
    check_readable(source, "input")
    plog = _log(cfg)
    bundle = load_bundle(_bundle_dir(cfg))
    check = FeedbackCheck(bundle.vertical, bundle.model, plog)
    frame = read_table(source)
    if "request_id" not in frame.columns:
        raise UserError(f"{source} has no request_id column; columns: {list(frame.columns)}")
    frame["request_id"] = frame["request_id"].astype("string")  # "0042" or 42: an id is text
    items = rows_of_table(frame)
    files = _outcome_files(items, check.file_field, source) if check.file_field else {}
    try:
        parsed = check.parse(items, where="item")
        replaced = check.store(parsed, files)
    except BadRequest as exc:
        raise UserError(f"{source}: {exc.message}") from None
    reply = answer(parsed, replaced)
    print(f"{cfg.vertical}: stored {reply['stored']} outcomes from {source} "
          f"({reply['replaced']} replaced earlier ones) in {plog.settings.describe()}")  # fmt: skip
    return int(reply["stored"])


def _outcome_files(
    items: list[dict[str, Any]], field: str, source: Path
) -> dict[int, tuple[str, bytes]]:
    """The outcome files a table names (medical: a `mask` column of NIfTI paths, relative
    to the table's folder), read; the column leaves the items."""
    files = {}
    for i, item in enumerate(items):
        given = item.pop(field, None)
        if not given:
            raise UserError(f"{source}: item[{i}] has no {field} (a path to the {field} file)")
        path = Path(str(given))
        path = path if path.is_absolute() else source.parent / path
        if not path.is_file():
            raise UserError(f"{source}: item[{i}].{field}: no file {path}")
        files[i] = (path.name, path.read_bytes())
    return files


def monitor(cfg: DictConfig) -> int:
    """Compare the log's window with the training reference. Exit codes for a scheduler:
    0 every figure inside its threshold, 1 a breach, 2 a usage error, 3 the monitor could
    not run (a database down, a bug): never 1, which would read as drift."""
    import os
    import sys

    try:
        return _monitor(cfg)
    except (UserError, SystemExit):
        raise
    except Exception as exc:
        if os.environ.get("VERTICALS_FULL_ERROR") == "1":
            raise
        log.debug("the monitor failed", exc_info=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"error: the monitor could not run: {type(exc).__name__}: {first}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(3) from None


def _monitor(cfg: DictConfig) -> int:
    from verticals.core import monitor as monitoring
    from verticals.core import monitor_report

    since = parse_since(cfg.since if cfg.since is not None else cfg.monitor.since)
    until = parse_since(cfg.until, "until")
    plog = _log(cfg)
    bundle = load_bundle(_monitored(cfg))
    result = monitoring.check(bundle, plog, monitoring.Thresholds.of(cfg.monitor), since, until)
    monitoring.save(result, plog, since)
    folder = Path(cfg.output) if cfg.output else monitoring.report_dir(
        cfg.paths.monitor_dir, cfg.vertical
    )  # fmt: skip
    files = monitor_report.write(result, folder)
    f = result.figures
    print(f"{cfg.vertical} {f['model_version']}: {f['requests']} requests since "
          f"{f['window']['since'] or 'the start'}, {f['feedback']} with feedback")  # fmt: skip
    if f["note"]:
        print(f"note: {f['note']}")
    for breach in result.breaches:
        print(f"BREACH {breach['message']}")
    shifted = monitoring.shifted_columns(result)
    if shifted:
        print(f"shifted: {', '.join(shifted)}")
    print(f"report: {files['html']} (summary.md, figures.json, plots/ beside it)")
    if not result.ok:
        raise SystemExit(1)
    print("every figure inside its threshold")
    return 0


def _monitored(cfg: DictConfig) -> Path:
    """The bundle whose reference and traffic are compared: `bundle=`, `version=N`, the
    champion, or the latest bundle."""
    if cfg.bundle:
        return Path(cfg.bundle)
    store = Store.of(cfg)
    if cfg.version is not None:
        if store is None:
            raise UserError("version= needs the tracking store; give bundle=PATH instead")
        number = require_int(cfg.version, "version", minimum=1)
        return model_versions.check_bundle(store, model_versions.get_version(
            store, cfg.vertical, number), "monitored", files=False)  # fmt: skip
    if store is not None and store.exists():
        champion = Champion.of(store, cfg.vertical)()
        if champion is not None:
            return Path(champion)
    return _bundle_dir(cfg)


def prediction_log(cfg: DictConfig) -> int:
    """`verticals log prune|export <vertical>`."""
    action = str(cfg.action)
    if action == "prune":
        if cfg.older_than is None:
            raise UserError("prune needs older_than=, e.g. older_than=90d")
        before = parse_since(cfg.older_than, "older_than")
        assert before is not None
        rows, files = _log(cfg).prune(cfg.vertical, before)
        when = before.isoformat(timespec="seconds")
        print(f"{cfg.vertical}: removed {rows} predictions (and their feedback) logged "
              f"before {when} UTC, and {files} kept files")  # fmt: skip
        return rows
    if action == "export":
        if not cfg.output:
            raise UserError("export needs output=, e.g. output=log.parquet")
        from verticals.core.tables import TableWriter

        plog = _log(cfg)
        writer = TableWriter(Path(cfg.output))
        rows = 0
        try:
            for part in plog.table(cfg.vertical, parse_since(cfg.since)):
                writer.write(part)
                rows += len(part)
        except BaseException:
            writer.abort()
            raise
        if rows == 0:
            writer.abort()
            raise UserError(f"the log has no {cfg.vertical} predictions in that window")
        writer.close()
        print(f"{cfg.vertical}: exported {rows} predictions with their feedback -> {cfg.output}")
        return rows
    raise UserError(f"action={action!r}; expected prune or export")


_NOT_TRAINING = ("retrain", "log", "paths", "tracking", "trainer", "monitor", "sign", "every",
                 "cycles", "on_drift", "feedback", "since", "until", "version", "bundle",
                 "output")  # fmt: skip


def _training_overrides(cfg: DictConfig, config_name: str) -> dict[str, Any]:
    """The training settings this command line changed (dotted keys), found by composing
    the same command without the user's overrides and comparing: so `debug=fast`,
    `experiment=...` and `model.x=1` all reach a challenger, whatever form they took."""
    from hydra import compose

    from verticals.configs import vertical_overrides

    base = compose(config_name, overrides=vertical_overrides(cfg.vertical))
    before = _leaves(OmegaConf.to_container(base, resolve=False))
    after = _leaves(OmegaConf.to_container(cfg, resolve=False))
    changed = {
        key: value
        for key, value in after.items()
        if before.get(key, _ABSENT) != value and key.split(".")[0] not in _NOT_TRAINING
    }
    for override in _user_overrides():  # a value set on purpose, even to the default
        key = override.lstrip("+~").split("=", 1)[0]
        if ("." in key or key == "seed") and key.split(".")[0] not in _NOT_TRAINING:
            value = OmegaConf.select(cfg, key)
            if isinstance(value, DictConfig | ListConfig):
                value = OmegaConf.to_container(value, resolve=False)
            changed[key] = value
    return changed


_ABSENT = object()


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def retrain(cfg: DictConfig) -> int:
    """Challenge the champion with a model trained on the feedback; exit 0 whether or not
    it was promoted (the decision is printed and recorded), 2 when it could not start."""
    from verticals.core import retrain as retraining

    plog = _log(cfg)
    with _terminate_as_exit():
        result = retraining.retrain(cfg, _training_overrides(cfg, "retrain"), plog)
    d = result.decision
    print(f"{cfg.vertical}: challenger registered as version {result.version}: "
          f"{'PROMOTED' if result.promoted else 'not promoted'} ({d.reason})")  # fmt: skip
    if d.promote and not result.promoted:
        print(f"it won, and retrain.promote=false: `verticals promote {cfg.vertical} "
              f"version={result.version}` makes it champion")  # fmt: skip
    print(f"report: {result.report}")
    return result.version


def loop(cfg: DictConfig) -> int:
    """`verticals loop`: monitor on a clock, retrain on a breach or enough feedback."""
    from verticals.loop import loop as run_loop

    return run_loop(cfg)


def _terminate_as_exit() -> Any:
    """SIGTERM (a scheduler stopping the job) as SystemExit, so a retrain stopped part-way
    marks its tracked run failed before the process ends, as Ctrl-C does."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def handler() -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, _frame: Any) -> None:
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    return handler()


def call(cfg: DictConfig) -> Any:
    """`verticals call <vertical> input=...`: one record, list or file to a running server,
    the answer printed as JSON."""
    import json

    from verticals.client import Client, ClientError

    source = Path(str(cfg.input))
    if not source.is_file():
        raise UserError(f"input={source}: no such file")
    with Client(str(cfg.url), token=os.environ.get("VERTICALS_TOKEN"),
                timeout=float(cfg.timeout)) as client:  # fmt: skip
        try:
            if source.suffix.lower() == ".json":
                records = json.loads(source.read_text())
                answers = client.predict(records)
                shown: Any = [a.row for a in answers]
            else:
                answer = client.upload(source, cfg.output_dir)
                shown = {"prediction": answer.summary, "output": str(answer.output or "")}
        except ClientError as exc:
            raise UserError(f"{cfg.url}: {exc}") from None
        except ValueError as exc:
            raise UserError(f"{source}: {exc}") from None
        except httpx_errors() as exc:
            raise UserError(f"cannot reach {cfg.url}: {exc}") from None
    print(json.dumps(shown, indent=1, default=str))
    return shown


def httpx_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError,)


COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "package": package,
    "serve": serve,
    "predict": predict,
    "runs": runs,
    "models": models,
    "promote": promote,
    "rollback": rollback,
    "feedback": feedback,
    "monitor": monitor,
    "log": prediction_log,
    "retrain": retrain,
    "token": token,
    "call": call,
    "loop": loop,
}
