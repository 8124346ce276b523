"""Every training run recorded in the MLflow store: config, metrics, data, plots, card.

A run is opened in the background as training starts (importing MLflow and opening the
store take seconds, which overlap with loading the data: in a process of their own, see
`tracking_calls`), and the pipeline waits for it before fitting, so a store that cannot be
reached fails the command before the expensive part. What is logged:

- parameters: the resolved config, flattened (`model.num_leaves`);
- metrics: the test metrics (`ndcg@10` is stored as `ndcg_at_10`: MLflow's keys allow no
  `@`), the fit time, and `objective` when an Optuna sweep optimises one of them;
- the data as an MLflow dataset input: its source (the `data` config), a content hash of
  the splits (`fingerprint`) and the schema a served model takes;
- tags: the vertical, the run folder, the device, the git commit when there is one;
- artifacts: the model card, config, metrics, log and plots (the model itself travels in
  the bundle, which `verticals package` registers).

A Hydra multirun is one parent run, with each job a child run under it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import multiprocessing
import re
import subprocess
import sys
import time
from datetime import datetime
from multiprocessing.pool import Pool, ThreadPool
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core import tracking_calls
from verticals.core.contract import FileVertical, RecordVertical, Splits, Vertical
from verticals.core.errors import UserError
from verticals.core.fingerprint import fingerprint
from verticals.core.logs import get_logger
from verticals.core.tracking import Store, current_user, redacted
from verticals.core.tracking_calls import PARENT_TAG, RUN_DIR_TAG, VERTICAL_TAG, TrackingFailed

log = get_logger("tracking")
_ARTIFACT_FILES = ("model_card.md", "config.yaml", "metrics.json", "run.json", "train.log")
_KEY = re.compile(r"[^\w.\- :/]")
_JSON_TYPES = {"number": "double", "integer": "long", "string": "string", "boolean": "boolean"}


def metric_key(name: str) -> str:
    """`name` as MLflow accepts a metric key (`ndcg@10` -> `ndcg_at_10`)."""
    return _KEY.sub("_", name.replace("@", "_at_"))


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as `a.b.c -> text` parameters (lists as their JSON)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out or ({prefix[:-1]: "{}"} if prefix else {})
    text = json.dumps(value) if isinstance(value, list) else str(value)
    return {prefix[:-1]: text[:6000]}


class NoTracking:
    """What the pipeline calls when tracking is off: nothing happens."""

    run_id: str | None = None

    def loaded(self, splits: Splits) -> None:
        pass

    def finish(self, vertical: Vertical, model: Any, splits: Splits, metrics: dict) -> None:
        pass

    def failed(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {}


class RunTracking(NoTracking):
    """One training run in the store, opened in the background as training starts."""

    def __init__(self, store: Store, cfg: DictConfig, vertical: str, run_dir: Path,
                 sweep: str | None = None) -> None:  # fmt: skip
        self.store, self.cfg, self.vertical, self.run_dir = store, cfg, vertical, run_dir
        self.experiment = str(cfg.tracking.get("experiment") or vertical)
        self.digest: str | None = None
        self.parent_id: str | None = None
        self._calls = _executor()
        tags = {
            VERTICAL_TAG: vertical,
            RUN_DIR_TAG: str(run_dir.resolve()),
            "mlflow.source.type": "LOCAL",
            "mlflow.source.name": f"verticals train {vertical}",
            "mlflow.user": current_user(),
        }
        commit = _git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        about = None
        if sweep:
            about = {
                "id": hashlib.sha256(sweep.encode()).hexdigest()[:16],  # safe in a filter
                "folder": sweep,
                "vertical": vertical,
                "objective": str(cfg.get("optimized_metric") or ""),
            }
        self._opened = self._calls.apply_async(
            tracking_calls.open_run, (store, self.experiment, run_dir.name, tags, about)
        )

    def _wait_opened(self) -> None:
        try:
            self.run_id, self.parent_id = self._opened.get()
        except TrackingFailed as exc:
            self._calls.terminate()
            message = str(exc)
            if message.startswith("cannot open the tracking store"):  # says what to do
                raise UserError(message) from None
            raise UserError(
                f"cannot record the run in {self.store.describe()}: {message}",
                hint="check tracking.uri, or turn tracking off with tracking=none",
            ) from None

    def loaded(self, splits: Splits) -> None:
        """Hash the data, then wait for the store: a store that cannot be opened stops the
        command here, before the model is fitted."""
        started = time.perf_counter()
        self.digest = fingerprint(splits.train, splits.val, splits.test)
        self._wait_opened()
        log.info("tracking: run %s in %s (data %s, %.2f s)", self.run_id,
                 self.store.describe(), self.digest, time.perf_counter() - started)  # fmt: skip

    def info(self) -> dict[str, Any]:
        """What run.json says about the tracked run (a bundle carries it to the registry)."""
        return {"uri": self.store.describe(), "experiment": self.experiment,
                "run_id": self.run_id, "data_digest": self.digest}  # fmt: skip

    def finish(self, vertical: Vertical, model: Any, splits: Splits, metrics: dict) -> None:
        """Log what the run produced and mark it finished."""
        config = OmegaConf.to_container(redacted(self.cfg), resolve=True)
        values = {metric_key(k): float(v) for k, v in metrics.items() if _finite(v)}
        objective = self.cfg.get("optimized_metric")
        if objective and _finite(metrics.get(objective)):
            values["objective"] = float(metrics[objective])
        dataset = {
            "name": f"{vertical.name}-{self.cfg.data.get('source', 'data')}"[:500],
            "digest": str(self.digest),
            "source_type": "verticals",
            "source": json.dumps(OmegaConf.to_container(self.cfg.data, resolve=True), default=str),
            "schema": json.dumps({"mlflow_colspec": input_columns(vertical, model)}),
            "profile": json.dumps(_profile(splits.info), default=str),
        }
        tags = {"device": str(self.cfg.trainer.device), "data": str(self.digest)}
        files = [str(self.run_dir / n) for n in _ARTIFACT_FILES if (self.run_dir / n).is_file()]
        plots = str(self.run_dir / "plots") if (self.run_dir / "plots").is_dir() else None
        logged = self._calls.apply_async(tracking_calls.log_run, (
            self.store, str(self.run_id), self.parent_id, flatten(config), values, tags,
            dataset, files, plots,
        ))  # fmt: skip
        try:
            seconds = logged.get()
        except TrackingFailed as exc:
            raise UserError(f"cannot record the run in {self.store.describe()}: {exc}") from None
        finally:  # all is stored: stopped at once, not after unloading MLflow (~0.6 s)
            self._calls.terminate()
        log.info("tracking: run %s logged in %.2f s", self.run_id, seconds)

    def failed(self) -> None:
        """Mark the run failed (the error itself is the command's to report)."""
        try:
            if self.run_id is None:
                self._opened.wait()
                if not self._opened.successful():  # no run to mark: the store said why
                    return
                self.run_id, self.parent_id = self._opened.get()
            self._calls.apply_async(
                tracking_calls.end_run, (self.store, self.run_id, "FAILED")
            ).get()
        except Exception:  # noqa: BLE001 - the training error matters more than this one
            log.warning("tracking: could not mark the run failed", exc_info=True)
        finally:
            self._calls.terminate()


def _executor() -> Pool:
    """One worker for the store's calls: a process when MLflow is not imported yet and
    the command is `verticals` itself (MLflow's import then runs beside the data loading,
    not under the same GIL), else a thread (the import is paid already, or the caller's
    script may not be safe to import again in a spawned process)."""
    if "mlflow" in sys.modules or not _spawn_safe():
        _import_what_others_peek_at()
        return ThreadPool(1)
    return multiprocessing.get_context("spawn").Pool(1)


def _import_what_others_peek_at() -> None:
    """MLflow's import brings polars along; scikit-learn recognises polars frames by looking
    polars up in `sys.modules` without importing it, and a polars still half-imported by the
    store's thread then fails a data split with AttributeError (seen in a benchmark). So
    polars, when installed, is imported here first, before that thread starts."""
    if "polars" not in sys.modules and importlib.util.find_spec("polars") is not None:
        importlib.import_module("polars")


def _spawn_safe() -> bool:
    """A spawned process imports the main module again: harmless for `python -m verticals`
    (a `__main__` module, which is skipped) and the `verticals` script (guarded)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name == "verticals.__main__"
    return Path(getattr(main, "__file__", "") or "").name == "verticals"


def start(cfg: DictConfig, vertical: str, run_dir: Path, sweep: str | None = None) -> NoTracking:
    """Tracking of a training run as `cfg.tracking` says (nothing when it is off)."""
    store = Store.of(cfg)
    return NoTracking() if store is None else RunTracking(store, cfg, vertical, run_dir, sweep)


def input_columns(vertical: Vertical, model: Any) -> list[dict[str, Any]]:
    """What the served model takes, as MLflow's column spec: a record's fields, or a file."""
    if isinstance(vertical, FileVertical):
        return [{"name": "file", "type": "binary", "required": True}]
    assert isinstance(vertical, RecordVertical)
    schema = vertical.request_schema(model).model_json_schema()
    required = set(schema.get("required", ()))
    columns = []
    for name, spec in schema.get("properties", {}).items():
        kinds = [spec.get("type")] + [s.get("type") for s in spec.get("anyOf", ())]
        kind = next((_JSON_TYPES[k] for k in kinds if k in _JSON_TYPES), "string")
        columns.append({"name": name, "type": kind, "required": name in required})
    return columns


def _profile(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if isinstance(v, str | int | float | bool | dict)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _git_commit() -> str | None:
    """The commit of the git checkout the command runs in, if it runs in one."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def runs_table(store: Store, experiment: str, headline: str = "", limit: int = 20) -> Any:
    """The newest runs of `experiment` as a data frame: name, start, status, the headline
    metric, the data's hash and the run id (what `verticals runs` prints)."""
    import pandas as pd

    client = store.client()
    found = client.get_experiment_by_name(experiment)
    rows = []
    if found is not None:
        key = metric_key(headline) if headline else ""
        runs = client.search_runs(
            [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
        )
        rows = [_run_row(run, headline, key) for run in runs]
    return pd.DataFrame(rows)


def _run_row(run: Any, headline: str, key: str) -> dict[str, Any]:
    tags = run.data.tags
    sweep = "child" if tags.get("mlflow.parentRunId") else ""
    return {
        "run": run.info.run_name,
        "started": datetime.fromtimestamp(run.info.start_time // 1000),  # local time
        "status": run.info.status,
        **({headline: run.data.metrics.get(key)} if headline else {}),
        "data": tags.get("data", ""),
        "sweep": "parent" if tags.get(PARENT_TAG) == "yes" else sweep,
        "run_id": run.info.run_id,
    }
