"""Batch prediction on Ray Data (`verticals predict ... cluster=ray_local|ray`): the bundle
mapped over `cluster.workers` actors, each loading it once, with the outputs of the
single-process run (`batch.predict_file`, `batch.predict_folder`).

Both ways share their code: the driver reads and checks the input exactly as `TableJob` /
`FolderJob` do (batches of `batch_size` rows, whole groups, each file's own types), the
actors score with `score_batch` / `score_path`, and the driver writes the results in input
order (`preserve_order`) with the same job, prediction log (journal) and request ids.

The tables are read on the driver, so batches and CSV types are the single run's: only
the scoring is spread. Paths (bundle, inputs) must be readable from every node, as with
any `cluster=ray` command (a shared file system).
"""

from __future__ import annotations

import pickle
from collections.abc import Generator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from verticals.core import cluster
from verticals.core.batch import (
    Failure,
    FolderJob,
    Source,
    TableJob,
    score_batch,
    score_path,
)
from verticals.core.batch_log import BatchLog
from verticals.core.bundle import Bundle
from verticals.core.contract import FileVertical
from verticals.core.errors import UserError
from verticals.core.logs import get_logger

log = get_logger("cluster_batch")
_PICKLE = pickle.HIGHEST_PROTOCOL


def predict_on_ray(
    cfg: DictConfig,
    bundle: Bundle,
    source: Source,
    target: str | Path,
    batch_size: int,
    keep: list[str],
    journal: BatchLog | None,
) -> int:
    """Score `source` into `target` on the connected Ray (`cluster.session(cfg)` entered);
    the number of rows scored (record verticals) or of inputs (file verticals)."""
    cluster.import_ray()
    workers = int(cfg.cluster.workers)
    resources = {
        "num_cpus": float(cfg.cluster.cpus_per_worker),
        "num_gpus": cluster.gpus_per_worker(cfg),
    }
    workers = _fitting(workers, resources, fixed=cluster.mode(cfg) == "ray_local")
    if isinstance(bundle.vertical, FileVertical):
        if not isinstance(source, str | Path):
            raise UserError(f"{bundle.vertical.name} takes one folder or file: input=<folder>")
        return _files(bundle, source, target, journal, workers, resources)
    return _records(bundle, source, target, batch_size, keep, journal, workers, resources)


def _fitting(workers: int, resources: dict[str, float], fixed: bool) -> int:
    """`workers`, or as many actors as the cluster holds at once: on an embedded Ray
    (`fixed`, no autoscaler) an actor without room would wait for ever; a cluster may grow,
    so there it is only a warning."""
    import ray

    have = ray.cluster_resources()
    room = workers
    for name, key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        if resources[name] > 0:
            room = min(room, int(have.get(key, 0) // resources[name]))
    if room >= workers:
        return workers
    if not fixed:
        log.warning("cluster.workers=%d: the cluster holds %d such actors now; the rest wait "
                    "for room", workers, room)  # fmt: skip
        return workers
    if room < 1:
        raise UserError(
            f"one actor needs {resources['num_cpus']:g} CPUs and {resources['num_gpus']:g} GPUs; "
            f"this Ray has {have.get('CPU', 0):g} and {have.get('GPU', 0):g} "
            "(cluster.cpus_per_worker, cluster.gpus_per_worker)"
        )
    log.warning("cluster.workers=%d: room for %d actors on this Ray; using %d", workers, room, room)
    return room


# -- record verticals -----------------------------------------------------------------------


class _TableScorer:
    """A Ray Data actor: the bundle loaded once, then `score_batch` on each pickled batch.
    A `UserError` comes back as a `Failure`, so the driver raises it as the single run does."""

    def __init__(
        self, bundle_path: str, keep: list[str], text_ids: bool, reserved: frozenset[str]
    ) -> None:
        from verticals.core.bundle import load_bundle

        self.bundle = load_bundle(bundle_path)
        self.keep, self.text_ids, self.reserved = keep, text_ids, reserved

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for path, start, payload in zip(batch["path"], batch["start"], batch["frame"], strict=True):
            frame = pickle.loads(payload)
            try:
                result: Any = score_batch(self.bundle.vertical, self.bundle.model, frame,
                                          self.keep, self.text_ids, self.reserved,
                                          Path(path), int(start))  # fmt: skip
            except UserError as exc:
                result = Failure(exc.message)
            results.append(pickle.dumps(result, protocol=_PICKLE))
        return {"index": batch["index"], "result": _objects(results)}


def _records(
    bundle: Bundle,
    source: Source,
    target: str | Path,
    batch_size: int,
    keep: list[str],
    journal: BatchLog | None,
    workers: int,
    resources: dict[str, float],
) -> int:
    job = TableJob(bundle, source, target, keep, journal)
    items, sizes = [], []
    for i, (path, start, frame) in enumerate(job.batches(batch_size)):
        items.append({"index": i, "path": str(path), "start": start,
                      "frame": pickle.dumps(frame, protocol=_PICKLE)})  # fmt: skip
        sizes.append(len(frame))
    if not items:
        raise UserError(f"input {job.source} has no rows to score")
    inputs = [item["frame"] for item in items] if journal is not None else None
    scorer = (str(bundle.path), job.keep, job.text_ids, job.reserved)
    results = _mapped(items, _TableScorer, scorer, workers, resources)
    del items
    with closing(results), job:
        for index, payload in results:
            result = pickle.loads(payload)
            if isinstance(result, Failure):
                raise UserError(result.message)
            frame = None if inputs is None else pickle.loads(inputs[index])
            job.write(result, sizes[index], frame)
    return job.done


# -- file verticals -------------------------------------------------------------------------


class _FileScorer:
    """A Ray Data actor: the bundle loaded once, then `score_path` on each input file."""

    def __init__(self, bundle_path: str) -> None:
        from verticals.core.bundle import load_bundle

        self.bundle = load_bundle(bundle_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [
            pickle.dumps(score_path(self.bundle.vertical, self.bundle.model, Path(p)), _PICKLE)
            for p in batch["path"]
        ]
        return {"index": batch["index"], "result": _objects(results)}


def _files(
    bundle: Bundle,
    source: str | Path,
    target: str | Path,
    journal: BatchLog | None,
    workers: int,
    resources: dict[str, float],
) -> int:
    job = FolderJob(bundle, source, target, journal)
    items = [{"index": i, "path": str(path)} for i, path in enumerate(job.files)]
    with closing(_mapped(items, _FileScorer, (str(bundle.path),), workers, resources)) as results:
        for index, payload in results:
            job.add(job.files[index], pickle.loads(payload))
    return len(job.finish())


# -- Ray Data ---------------------------------------------------------------------------------


def _objects(values: list[bytes]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _mapped(
    items: list[dict[str, Any]],
    actor: type,
    args: tuple[Any, ...],
    workers: int,
    resources: dict[str, float],
) -> Generator[tuple[int, bytes], None, None]:
    """(index, pickled result) for every item, in order: the items as a dataset of one
    block each, mapped by a pool of `workers` `actor(*args)`, with Ray Data's progress
    bar. The caller's `items` may be dropped: the dataset holds them once made."""
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    size = max(1, min(workers, len(items)))
    context = DataContext.get_current()
    saved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # the output in the input's order
    try:
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        del items  # in the object store now
        dataset = dataset.map_batches(
            actor,
            fn_constructor_args=args,
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=size),
            **resources,
        )
        expected = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for index, payload in zip(batch["index"], batch["result"], strict=True):
                if int(index) != expected:  # preserve_order promises this; say so if not
                    raise RuntimeError(f"Ray Data gave batch {index} where {expected} was due")
                expected += 1
                yield int(index), payload
    finally:
        context.execution_options.preserve_order = saved
