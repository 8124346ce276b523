"""Batch prediction on Ray (`verticals predict ... cluster=ray_local|ray`): the bundle
mapped over `cluster.workers` Ray actors, each loading it once, with the outputs of the
single-process run (`batch.predict_file`, `batch.predict_folder`).

Both ways share their code: the driver reads and checks the input exactly as `TableJob` /
`FolderJob` do (batches of `batch_size` rows, whole groups, each file's own types), the
actors score with `score_batch` / `score_path`, and the driver writes the results in input
order with the same job, prediction log (journal) and request ids.

The driver streams: it reads a batch only when an actor is free for it, and keeps at most
`IN_FLIGHT` batches per actor between reading and writing, so an input of any size runs in
bounded memory, as the single run does. (Ray Data's `map_batches` would need the whole
input as a dataset first: it has no source that a driver feeds as it reads; its own
readers would type CSV columns per block, not per file as the single run does.) Paths
(bundle, inputs) must be readable from every node, as with any `cluster=ray` command.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from tqdm.auto import tqdm

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
T = TypeVar("T")


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
    """A Ray actor: the bundle loaded once, then `score_batch` on each batch. A `UserError`
    comes back as a `Failure`, so the driver raises it as the single run does."""

    def __init__(
        self, bundle_path: str, keep: list[str], text_ids: bool, reserved: frozenset[str]
    ) -> None:
        from verticals.core.bundle import load_bundle

        self.bundle = load_bundle(bundle_path)
        self.keep, self.text_ids, self.reserved = keep, text_ids, reserved

    def score(self, path: str, start: int, frame: Any) -> Any:
        try:
            return score_batch(self.bundle.vertical, self.bundle.model, frame, self.keep,
                               self.text_ids, self.reserved, Path(path), start)  # fmt: skip
        except UserError as exc:
            return Failure(exc.message)


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
    scorer = (str(bundle.path), job.keep, job.text_ids, job.reserved)
    work = (((str(path), start, frame), frame) for path, start, frame in job.batches(batch_size))
    bar = tqdm(total=job.total_rows(), unit="rows", desc="predict on Ray")
    scored = 0
    try:
        with job, closing(_streamed(work, _TableScorer, scorer, workers, resources)) as out:
            for frame, result in out:
                if isinstance(result, Failure):
                    raise UserError(result.message)
                job.write(result, len(frame), frame if journal is not None else None)
                scored += 1
                bar.update(len(frame))
    finally:
        bar.close()
    if not scored:
        raise UserError(f"input {job.source} has no rows to score")
    return job.done


# -- file verticals -------------------------------------------------------------------------


class _FileScorer:
    """A Ray actor: the bundle loaded once, then `score_path` on each input file."""

    def __init__(self, bundle_path: str) -> None:
        from verticals.core.bundle import load_bundle

        self.bundle = load_bundle(bundle_path)

    def score(self, path: str) -> Any:
        return score_path(self.bundle.vertical, self.bundle.model, Path(path))


def _files(
    bundle: Bundle,
    source: str | Path,
    target: str | Path,
    journal: BatchLog | None,
    workers: int,
    resources: dict[str, float],
) -> int:
    job = FolderJob(bundle, source, target, journal)
    work = (((str(path),), path) for path in job.files)
    with closing(_streamed(work, _FileScorer, (str(bundle.path),), workers, resources)) as out:
        for path, result in tqdm(out, total=len(job.files), unit="file", desc="predict on Ray"):
            job.add(path, result)
    return len(job.finish())


# -- the actor pool ---------------------------------------------------------------------------

IN_FLIGHT = 2  # batches per actor sent and not yet written: one scoring, one waiting


def _streamed(
    work: Iterator[tuple[tuple[Any, ...], T]],
    actor: type,
    args: tuple[Any, ...],
    workers: int,
    resources: dict[str, float],
) -> Generator[tuple[T, Any], None, None]:
    """(item, `actor.score(*call)`) for each (call, item) of `work`, in order, scored by
    `workers` actors `actor(*args)`. `work` is read only as actors have room, so at most
    `IN_FLIGHT * workers` items are held here at once."""
    import ray

    pool = [ray.remote(actor).options(**resources).remote(*args) for _ in range(workers)]
    window: deque[tuple[T, Any]] = deque()  # (item, result ref), in input order
    turn, todo = 0, iter(work)
    try:
        while True:
            if len(window) >= IN_FLIGHT * workers:  # full: write the oldest before reading
                done, ref = window.popleft()
                yield done, ray.get(ref)
            nxt = next(todo, None)
            if nxt is None:
                break
            call, item = nxt
            window.append((item, pool[turn % workers].score.remote(*call)))
            turn += 1
        while window:
            done, ref = window.popleft()
            yield done, ray.get(ref)
    finally:
        if ray.is_initialized():  # not after the session's shutdown
            for handle in pool:
                ray.kill(handle)
