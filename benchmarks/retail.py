"""Benchmark the retail vertical against raw `implicit` doing the same work.

A. training: the suite's `fit` (ids -> dense indices, CSR, weighting, fit) against
   `AlternatingLeastSquares.fit` on the prebuilt matrix with the same parameters, on a
   synthetic log of `--interactions` rows (default 10M): the overhead ratio and fit time;
B. with `VERTICALS_DATA_DIR` holding `movielens/ml-100k/u.data`: the ML-100K protocol
   (ratings >= 4, the last 20% of each user's positives by time held out), raw ALS with 64
   factors against the suite's default model and popularity, scored by both
   `implicit.evaluation.ranking_metrics_at_k` and the suite's metrics;
C. `/predict` latency (p50/p99) for single customers under `--concurrency` loopback clients.

    python benchmarks/retail.py [--interactions 10000000] [--requests 400] [--concurrency 8]
                                [--device auto] [--out results.json]
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import common  # noqa: E402
import httpx  # noqa: E402
import implicit.gpu  # noqa: E402
import numpy as np  # noqa: E402
from common import say  # noqa: E402
from implicit.als import AlternatingLeastSquares  # noqa: E402
from implicit.evaluation import ranking_metrics_at_k  # noqa: E402
from loopback import serving  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.bundle import write_bundle  # noqa: E402
from verticals.core.contract import RunContext  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.retail.data import Log, load_splits  # noqa: E402
from verticals.retail.evaluation import evaluate  # noqa: E402
from verticals.retail.model import fit, matrix  # noqa: E402

log = logging.getLogger("bench")


def bench_fit(tmp: Path, n: int, device: str) -> dict[str, Any]:
    cfg = compose(
        "train",
        "retail",
        [
            f"paths.root_dir={tmp}",
            f"trainer.device={device}",
            f"data.n_interactions={n}",
            f"data.n_users={n // 30}",
            f"data.n_items={max(1000, n // 300)}",
        ],
    )
    started = time.perf_counter()
    splits = load_splits(cfg)
    prepare = time.perf_counter() - started
    train: Log = splits.train
    ctx = RunContext(tmp, resolve_device(device), 42, log)
    started = time.perf_counter()
    model = fit(cfg, splits, ctx)
    suite = time.perf_counter() - started
    csr, _, _ = matrix(train.frame)
    p = model.params
    with threadpool_limits(1, "blas"):
        raw_model = AlternatingLeastSquares(
            factors=p["factors"],
            regularization=p["regularization"],
            alpha=p["alpha"],
            iterations=p["iterations"],
            random_state=42,
            use_gpu=ctx.device.is_cuda and implicit.gpu.HAS_CUDA,  # the rule `fit` uses
        )
        started = time.perf_counter()
        raw_model.fit(csr, show_progress=False)
        raw = time.perf_counter() - started
    return {
        "interactions": n,
        "train_nnz": int(csr.nnz),
        "users": csr.shape[0],
        "items": csr.shape[1],
        "generate_and_split_s": round(prepare, 2),
        "suite_fit_s": round(suite, 2),
        "raw_fit_s": round(raw, 2),
        "overhead": round(suite / raw, 3),
    }


def bench_movielens(tmp: Path, path: Path, device: str) -> dict[str, Any]:
    cfg = compose(
        "train",
        "retail",
        [
            f"paths.root_dir={tmp}",
            f"trainer.device={device}",
            "data=movielens",
            f"data.path={path}",
        ],
    )
    result = pipeline.train(cfg)
    model, truth = result.model, result.splits.test
    # raw implicit: ALS, 64 factors, its defaults otherwise, on the same training matrix
    with threadpool_limits(1, "blas"):
        raw = AlternatingLeastSquares(factors=64, random_state=42)
        raw.fit(model.user_items, show_progress=False)
    users = [model.user_index[u] for u in truth.users]
    rows, cols = [], []
    for u, items in zip(users, truth.items, strict=True):
        for i in items:
            rows.append(u)
            cols.append(model.item_index[i])
    test = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=model.user_items.shape)
    implicit_raw = ranking_metrics_at_k(raw, model.user_items, test, K=10, show_progress=False)
    implicit_suite = ranking_metrics_at_k(
        model.recommender, model.user_items, test, K=10, show_progress=False
    )
    suite_metrics = result.metrics
    raw_model = type(model)(
        raw,
        model.user_ids,
        model.item_ids,
        model.user_items,
        model.popularity,
        None,
        {**model.params, "name": "raw-als"},
    )
    raw_metrics = evaluate(raw_model, truth, None)
    keys = ["precision@10", "ndcg@10", "map@10"]
    return {
        "suite_default": {k: round(suite_metrics[k], 4) for k in keys},
        "raw_als_64": {k: round(raw_metrics[k], 4) for k in keys},
        "popularity": {k: round(suite_metrics[f"popularity_{k}"], 4) for k in keys},
        "implicit_metrics_suite": {k: round(float(v), 4) for k, v in implicit_suite.items()},
        "implicit_metrics_raw": {k: round(float(v), 4) for k, v in implicit_raw.items()},
        "run": str(result.run_dir),
    }


def bench_serving(tmp: Path, n_requests: int, concurrency: int) -> dict[str, Any]:
    cfg = compose(
        "train", "retail", [f"paths.root_dir={tmp}", "experiment=demo", "trainer.device=cpu"]
    )
    result = pipeline.train(cfg)
    bundle = write_bundle(result.run_dir, tmp / "bundles")
    users = result.splits.test.users
    bodies = [{"user_id": users[i % len(users)]} for i in range(n_requests)]
    chunks = [bodies[i::concurrency] for i in range(concurrency)]

    def post_all(url: str, part: list[dict[str, Any]]) -> list[float]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for body in part:
                started = time.perf_counter()
                client.post("/predict", json=body).raise_for_status()
                out.append(time.perf_counter() - started)
        return out

    with serving(bundle, 1) as url:
        post_all(url, bodies[:20])  # warm up
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = [t for part in pool.map(lambda c: post_all(url, c), chunks) for t in part]
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": n_requests,
        "concurrency": concurrency,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "requests_per_s": round(n_requests / wall, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.parser(__doc__)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    logging.getLogger("verticals").setLevel(logging.WARNING)
    dev = resolve_device(args.device)
    say(f"retail benchmark on {dev} ({os.cpu_count()} cores, python {platform.python_version()})")
    results: dict[str, Any] = {"device": str(dev)}
    root = os.environ.get("VERTICALS_DATA_DIR")
    ml = Path(root) / "movielens" / "ml-100k" / "u.data" if root else None
    with tempfile.TemporaryDirectory() as tmp:
        a = bench_fit(Path(tmp), args.interactions, args.device)
        say(
            f"A. fit on {a['train_nnz']:,} user-item pairs ({a['interactions']:,} interactions): "
            f"suite {a['suite_fit_s']} s vs raw implicit {a['raw_fit_s']} s -> x{a['overhead']}"
        )
        results["fit"] = a
        if ml and ml.is_file():
            b = bench_movielens(Path(tmp), ml, args.device)
            say(
                f"B. ML-100K: suite default {b['suite_default']}, raw ALS-64 {b['raw_als_64']}, "
                f"popularity {b['popularity']}"
            )
            say(
                f"   implicit's ranking_metrics_at_k: suite {b['implicit_metrics_suite']}, "
                f"raw {b['implicit_metrics_raw']}"
            )
            results["movielens"] = b
        else:
            say("B. skipped: set VERTICALS_DATA_DIR to a folder holding movielens/ml-100k/")
        c = bench_serving(Path(tmp), args.requests, args.concurrency)
        say(
            f"C. /predict: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, "
            f"{c['requests_per_s']} req/s ({c['concurrency']} clients)"
        )
        results["serving"] = c
    common.write_figures(args.out, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
