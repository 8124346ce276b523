"""The MLflow calls of a tracked training run, as plain functions of plain data.

`run_tracking` runs them in a pool of one worker: a process of its own in a `verticals
train` command, so that importing MLflow (about 2 s of Python, holding the GIL) runs on
another core while the data loads, and a thread elsewhere (tests and notebooks have paid
the import already, and a user's script may not be safe to import in a spawned process).
Everything they take and return is picklable; a failure comes back as `TrackingFailed`,
with the message only.
"""

from __future__ import annotations

import time
from pathlib import Path

from verticals.core.tracking import Store, current_user, experiment_id

SWEEP_TAG = "verticals.sweep"
PARENT_TAG = "verticals.sweep_parent"
VERTICAL_TAG = "verticals.vertical"
RUN_DIR_TAG = "verticals.run_dir"
_parents: dict[tuple[str, str], str] = {}  # (store, sweep) -> parent run, in this process


class TrackingFailed(Exception):
    """A call to the store failed; the message says why (no MLflow types cross over)."""


def open_run(store: Store, experiment: str, name: str, tags: dict[str, str],
             sweep: dict[str, str] | None) -> tuple[str, str | None]:  # fmt: skip
    """Create the run (under the sweep's parent run when `sweep` names one): its id and
    the parent's."""
    try:
        exp = experiment_id(store, experiment)
        parent = _parent(store, exp, sweep) if sweep else None
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent, SWEEP_TAG: sweep["id"]}  # type: ignore[index]
        run = store.client().create_run(exp, run_name=name, tags=tags)
        return run.info.run_id, parent
    except Exception as exc:  # noqa: BLE001 - crosses a process boundary as text
        raise TrackingFailed(_message(exc)) from None


def _parent(store: Store, exp: str, sweep: dict[str, str]) -> str:
    """The sweep's parent run: made by its first job, found by the others."""
    key = (store.uri, sweep["id"])
    if key not in _parents:
        client = store.client()
        found = client.search_runs(
            [exp], f"tags.`{SWEEP_TAG}` = '{sweep['id']}' and tags.`{PARENT_TAG}` = 'yes'",
            max_results=1,
        )  # fmt: skip
        if found:
            _parents[key] = found[0].info.run_id
        else:
            tags = {VERTICAL_TAG: sweep["vertical"], SWEEP_TAG: sweep["id"], PARENT_TAG: "yes",
                    RUN_DIR_TAG: sweep["folder"], "mlflow.user": current_user()}  # fmt: skip
            if sweep.get("objective"):
                tags["verticals.objective"] = sweep["objective"]
            name = f"sweep {Path(sweep['folder']).name}"
            _parents[key] = client.create_run(exp, run_name=name, tags=tags).info.run_id
    return _parents[key]


def log_run(store: Store, run_id: str, parent_id: str | None, params: dict[str, str],
            metrics: dict[str, float], tags: dict[str, str], dataset: dict[str, str],
            files: list[str], plots: str | None) -> float:  # fmt: skip
    """Log what the run produced and mark it finished; the seconds that took."""
    try:
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

        started = time.perf_counter()
        client, now = store.client(), int(time.time() * 1000)
        items = [Param(k[:250], v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes 100 parameters per call
            client.log_batch(run_id, params=items[i : i + 100])
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        context = InputTag("mlflow.data.context", "train")
        client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**dataset), tags=[context])])
        for file in files:
            client.log_artifact(run_id, file)
        if plots:
            client.log_artifacts(run_id, plots, "plots")
        client.set_terminated(run_id, "FINISHED")
        if parent_id is not None:  # a sweep ends with its last job
            if "objective" in metrics:
                client.log_metric(parent_id, "last_objective", metrics["objective"], now)
            client.set_terminated(parent_id, "FINISHED")
        return time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - crosses a process boundary as text
        raise TrackingFailed(_message(exc)) from None


def end_run(store: Store, run_id: str, status: str) -> None:
    try:
        store.client().set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001
        raise TrackingFailed(_message(exc)) from None


def _message(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:500] if lines else type(exc).__name__
