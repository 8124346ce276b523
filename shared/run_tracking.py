"""Every training run recorded in the MLflow store: config, metrics, data, plots, card.

A run is opened in a background thread as training starts (importing MLflow and opening
the store take seconds, which overlap with loading the data), and the pipeline waits for
it before fitting, so a store that cannot be reached fails the command before the
expensive part. What is logged:

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
import json
import math
import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core.contract import FileVertical, RecordVertical, Splits, Vertical
from verticals.core.errors import UserError
from verticals.core.fingerprint import fingerprint
from verticals.core.logs import get_logger
from verticals.core.tracking import Store, current_user, experiment_id, redacted

log = get_logger("tracking")
SWEEP_TAG = "verticals.sweep"
PARENT_TAG = "verticals.sweep_parent"
RUN_DIR_TAG = "verticals.run_dir"
VERTICAL_TAG = "verticals.vertical"
_ARTIFACT_FILES = ("model_card.md", "config.yaml", "metrics.json", "run.json", "train.log")
_KEY = re.compile(r"[^\w.\- :/]")
_JSON_TYPES = {"number": "double", "integer": "long", "string": "string", "boolean": "boolean"}
_parents: dict[tuple[str, str], str] = {}  # (store, sweep folder) -> parent run id


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
        self.sweep = sweep
        self.experiment = str(cfg.tracking.get("experiment") or vertical)
        self.digest: str | None = None
        self.parent_id: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, name="tracking", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            client = self.store.client()
            exp = experiment_id(self.store, self.experiment)
            tags = {
                VERTICAL_TAG: self.vertical,
                RUN_DIR_TAG: str(self.run_dir.resolve()),
                "mlflow.source.type": "LOCAL",
                "mlflow.source.name": f"verticals train {self.vertical}",
                "mlflow.user": current_user(),
            }
            commit = _git_commit()
            if commit:
                tags["mlflow.source.git.commit"] = commit
            if self.sweep:
                self.parent_id = self._parent(exp)
                tags["mlflow.parentRunId"] = self.parent_id
                tags[SWEEP_TAG] = self._sweep_id
            run = client.create_run(exp, run_name=self.run_dir.name, tags=tags)
            self.run_id = run.info.run_id
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread in `loaded`
            self._error = exc

    @property
    def _sweep_id(self) -> str:
        """The sweep folder as a tag value that is safe inside a search filter."""
        return hashlib.sha256(str(self.sweep).encode()).hexdigest()[:16]

    def _parent(self, exp: str) -> str:
        """The sweep's parent run: made by its first job, found by the others."""
        key = (self.store.uri, str(self.sweep))
        if key not in _parents:
            client = self.store.client()
            found = client.search_runs(
                [exp], f"tags.`{SWEEP_TAG}` = '{self._sweep_id}' and tags.`{PARENT_TAG}` = 'yes'",
                max_results=1,
            )  # fmt: skip
            if found:
                _parents[key] = found[0].info.run_id
            else:
                tags = {VERTICAL_TAG: self.vertical, SWEEP_TAG: self._sweep_id, PARENT_TAG: "yes",
                        RUN_DIR_TAG: str(self.sweep), "mlflow.user": current_user()}  # fmt: skip
                objective = self.cfg.get("optimized_metric")
                if objective:
                    tags["verticals.objective"] = str(objective)
                name = f"sweep {Path(str(self.sweep)).name}"
                _parents[key] = client.create_run(exp, run_name=name, tags=tags).info.run_id
        return _parents[key]

    def loaded(self, splits: Splits) -> None:
        """Hash the data, then wait for the store: a store that cannot be opened stops the
        command here, before the model is fitted."""
        started = time.perf_counter()
        self.digest = fingerprint(splits.train, splits.val, splits.test)
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, UserError):
                raise self._error
            raise UserError(
                f"cannot record the run in {self.store.describe()}: {self._error}",
                hint="check tracking.uri, or turn tracking off with tracking=none",
            ) from self._error
        log.info("tracking: run %s in %s (data %s, %.2f s)", self.run_id,
                 self.store.describe(), self.digest, time.perf_counter() - started)  # fmt: skip

    def info(self) -> dict[str, Any]:
        """What run.json says about the tracked run (a bundle carries it to the registry)."""
        return {"uri": self.store.describe(), "experiment": self.experiment,
                "run_id": self.run_id, "data_digest": self.digest}  # fmt: skip

    def finish(self, vertical: Vertical, model: Any, splits: Splits, metrics: dict) -> None:
        """Log what the run produced and mark it finished."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

        started = time.perf_counter()
        client, run_id = self.store.client(), str(self.run_id)
        now = int(time.time() * 1000)
        config = OmegaConf.to_container(redacted(self.cfg), resolve=True)
        params = [Param(k[:250], v) for k, v in flatten(config).items()]
        values = {metric_key(k): float(v) for k, v in metrics.items() if _finite(v)}
        objective = self.cfg.get("optimized_metric")
        if objective and _finite(metrics.get(objective)):
            values["objective"] = float(metrics[objective])
        for i in range(0, len(params), 100):  # MLflow takes 100 parameters per call
            client.log_batch(run_id, params=params[i : i + 100])
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in values.items()],
            tags=[RunTag("device", str(self.cfg.trainer.device)), RunTag("data", self.digest)],
        )
        dataset = Dataset(
            name=f"{vertical.name}-{self.cfg.data.get('source', 'data')}"[:500],
            digest=str(self.digest),
            source_type="verticals",
            source=json.dumps(OmegaConf.to_container(self.cfg.data, resolve=True), default=str),
            schema=json.dumps({"mlflow_colspec": input_columns(vertical, model)}),
            profile=json.dumps(_profile(splits.info), default=str),
        )
        context = InputTag("mlflow.data.context", "train")
        client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context])])
        for name in _ARTIFACT_FILES:
            if (self.run_dir / name).is_file():
                client.log_artifact(run_id, str(self.run_dir / name))
        if (self.run_dir / "plots").is_dir():
            client.log_artifacts(run_id, str(self.run_dir / "plots"), "plots")
        client.set_terminated(run_id, "FINISHED")
        if self.parent_id is not None:  # a sweep ends with its last job
            if "objective" in values:
                client.log_metric(self.parent_id, "last_objective", values["objective"], now)
            client.set_terminated(self.parent_id, "FINISHED")
        log.info("tracking: run %s logged in %.2f s", run_id, time.perf_counter() - started)

    def failed(self) -> None:
        """Mark the run failed (the error itself is the command's to report)."""
        self._thread.join()
        if self.run_id is None:
            return
        try:
            self.store.client().set_terminated(self.run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the training error matters more than this one
            log.warning("tracking: could not mark run %s failed", self.run_id, exc_info=True)


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
