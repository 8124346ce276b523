"""Scaling out on Ray: what `cluster=` costs and gives, as ratios from one run.

One run measures, each against its single-process baseline (`cluster=none`):

1. serving: finance `/predict` of one record (req/s, p50, p99) from `--clients` clients
   sending `--requests` requests, served by `verticals serve` with `cluster=none
   serve.workers=1` (uvicorn), and with `cluster=ray_local serve.replicas=1` and `=2`
   (Ray Serve);
2. training: the fit seconds of finance (LightGBM, `--rows` synthetic applicants: 200,000
   by default, benchmarks/finance.py's 1,000,000 with `--rows 1000000`) and traffic (Graph
   WaveNet, a small config) with `cluster=none`, and with 1 and 2 Ray Train workers
   (`cluster.workers`), and the headline metric of each run; and finance on 2 workers from
   the same applicants as a folder of Parquet files (the sharded path: Ray tasks read the
   row groups, no process holds the table);
3. batch prediction: rows/s of finance `predict_file` on `--batch-rows` rows, and of
   `predict_on_ray` with 1 and 2 Ray actors;
4. LightGBM distributed: Ray Train's LightGBMTrainer (the suite's path, 2 workers) against
   LightGBM's own Dask interface (`DaskLGBMClassifier` on a `LocalCluster` of 2 workers,
   the same parameters, table and number of trees): fit seconds and test ROC-AUC. Dask is
   not a dependency of the suite: this part runs only when `dask.distributed` imports.

With GPUs, training and batch prediction are also run with one worker per GPU.

Parts 2 and 3 share one embedded Ray (started once, its start not counted); the fit
seconds are those of the pipeline's `cluster_fit.fit` call (on Ray: shipping the splits,
starting the workers, training, the chief's checkpoint back). Each server of part 1 is
its own `verticals serve` process, started, warmed up, measured and stopped with SIGTERM;
it runs last, on the bundle of the `cluster=none` finance run.

    .venv/bin/python benchmarks/scale.py --out /tmp/scale.json
    .venv/bin/python benchmarks/scale.py --quick
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")  # pipeline.train draws plots; no display here

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parser, say, write_figures  # noqa: E402
from benchmarks.loopback import free_port  # noqa: E402
from benchmarks.serving import one_request, warm  # noqa: E402
from verticals.configs import compose  # noqa: E402
from verticals.core import cluster, cluster_fit, pipeline  # noqa: E402
from verticals.core.batch import predict_file  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402

SEED = 42
JSON = {"Content-Type": "application/json"}
FINANCE = ["data=synthetic", "model.num_boost_round=300", "model.early_stopping_rounds=50"]
TRAFFIC = {  # Graph WaveNet and the GRU baseline, small: three fits each on 2 shared cores
    "default": ["debug=fast", "training.epochs=3"],
    "quick": ["debug=fast"],
}
READY_TIMEOUT_S = 240.0
CLEAN_ENV = dict(os.environ)  # for the servers: none of the Ray settings a session leaves


def quiet_logging() -> None:
    """The suite's and Ray's INFO logs off the console; warnings still show."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("[%(levelname)s %(name)s] %(message)s"))
    logging.getLogger().addHandler(handler)


# ------------------------------------------------------------------------------- 1. serving


@contextmanager
def served(bundle: Path, root: Path, extra: list[str]) -> Iterator[str]:
    """`verticals serve finance bundle=<bundle> ...extra` in its own process group; yields
    the URL once `/ready` answers 200, and stops it with SIGTERM after."""
    port = free_port()
    command = [
        sys.executable, "-m", "verticals", "serve", "finance", f"bundle={bundle}",
        f"serve.port={port}", f"paths.root_dir={root}", "log=off", *extra,
    ]  # fmt: skip
    logfile = (root / f"serve-{port}.log").open("w")
    server = subprocess.Popen(
        command, stdout=logfile, stderr=subprocess.STDOUT, env=CLEAN_ENV, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() - started > READY_TIMEOUT_S:
                tail = (root / f"serve-{port}.log").read_text()[-2000:]
                raise RuntimeError(f"{' '.join(extra)}: not ready at {url}/ready\n{tail}")
            time.sleep(0.25)
        say(f"    ready in {time.monotonic() - started:.1f} s")
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # our own process group only
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        logfile.close()


def fixed_load(url: str, body: bytes, clients: int, requests: int) -> dict[str, float]:
    """`requests` POSTs of `body` shared by `clients` httpx clients (threads), each waiting
    for its answer before the next: requests/s over the whole, latency percentiles."""
    share = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(n: int) -> list[float]:
        times = []
        with httpx.Client(timeout=120) as http:
            for _ in range(n):
                sent = time.perf_counter()
                http.post(url, content=body, headers=JSON).raise_for_status()
                times.append(time.perf_counter() - sent)
        return times

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for part in pool.map(client, share) for t in part]
    elapsed = time.perf_counter() - started
    ms = np.array(times) * 1000
    return {
        "requests": len(ms),
        "requests_per_s": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def bench_serving(bundle: Path, root: Path, clients: int, requests: int) -> dict[str, Any]:
    body = one_request(bundle)
    setups = {
        "uvicorn_w1": ["cluster=none", "serve.workers=1"],
        "ray_serve_r1": ["cluster=ray_local", "serve.replicas=1"],
        "ray_serve_r2": ["cluster=ray_local", "serve.replicas=2"],
    }
    result: dict[str, Any] = {"clients": clients, "requests": requests}
    for name, extra in setups.items():
        say(f"  {name}: {' '.join(extra)}")
        with served(bundle, root, extra) as url:
            warm(f"{url}/predict", body, n=100)
            time.sleep(1.0)
            figures = fixed_load(f"{url}/predict", body, clients, requests)
        result[name] = figures
        say(
            f"    {figures['requests_per_s']:.0f} req/s, p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms"
        )
    return result


# ------------------------------------------------------------------------------ 2. training


class FitTimer:
    """Times the pipeline's `cluster_fit.fit` call (the vertical's fit, on Ray or not)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._fit = cluster_fit.fit

    def __enter__(self) -> FitTimer:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            model = self._fit(*args, **kwargs)
            self.seconds.append(time.perf_counter() - started)
            return model

        cluster_fit.fit = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        cluster_fit.fit = self._fit  # type: ignore[assignment]


def train_once(vertical: str, overrides: list[str]) -> tuple[float, pipeline.TrainResult]:
    cfg = compose("train", vertical, overrides)
    with FitTimer() as timer:
        result = pipeline.train(cfg)
    return timer.seconds[-1], result


def headline(result: pipeline.TrainResult) -> tuple[str, float]:
    name = result.vertical.headline_metric
    return name, float(result.metrics.get(name, float("nan")))


def train_row(vertical: str, label: str, overrides: list[str]) -> tuple[dict[str, Any], Any]:
    seconds, result = train_once(vertical, overrides)
    metric, value = headline(result)
    say(f"  {vertical:8} {label:12} fit {seconds:6.1f} s, {metric} {value:.4f}")
    return {"fit_s": seconds, metric: value}, result


def sharded_row(rows: int, root: Path) -> dict[str, Any]:
    """finance on 2 workers from the same applicants written as 8 Parquet files: Ray tasks
    profile the row groups, each worker reads its own, the test split is scored by tasks.
    `fit_s` is the fit alone, `run_s` the whole run (profile and scoring passes too)."""
    from verticals.finance.synthetic import generate_applicants

    folder = root / "applicants_parquet"
    folder.mkdir(exist_ok=True)
    frame = generate_applicants(rows, SEED)
    step = -(-rows // 8)
    for i in range(8):
        part = frame.iloc[i * step : (i + 1) * step]
        part.to_parquet(folder / f"part-{i}.parquet", row_group_size=max(step // 2, 1), index=False)
    del frame
    overrides = ["data=table", f"data.path={folder}", "data.drop=[application_date]",
                 *FINANCE[1:], f"paths.root_dir={root}", f"seed={SEED}",
                 *ray_overrides(2)]  # fmt: skip
    started = time.perf_counter()
    figures, _ = train_row("finance", "ray w=2 parquet", overrides)
    figures["run_s"] = time.perf_counter() - started
    say(f"  finance  (the whole sharded run, profile and scoring passes included: "
        f"{figures['run_s']:.1f} s)")  # fmt: skip
    return figures


# --------------------------------------------------------------------------- 3. batch scoring


def batch_table(rows: int, path: Path, features: list[str]) -> None:
    from verticals.finance.synthetic import generate_applicants

    frame = generate_applicants(rows, SEED + 1)[features]
    frame.reset_index(names="id").to_parquet(path, index=False)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


# ---------------------------------------------------------------------------- 4. LightGBM Dask


def dask_available() -> bool:
    try:
        import dask.distributed  # noqa: F401
        import lightgbm.dask  # noqa: F401
    except ImportError:
        return False
    return True


def bench_dask(cfg: Any, splits: Any, trees: int, workers: int) -> dict[str, Any]:
    """LightGBM's Dask interface on the same splits and parameters (`cfg.model`) as the Ray
    Train run, and as many trees as it built (Dask's interface has no early stopping)."""
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster
    from lightgbm import DaskLGBMClassifier
    from sklearn.metrics import roc_auc_score

    from verticals.finance.model import lightgbm_params

    schema = splits.info["schema"]
    params = lightgbm_params(cfg.model, schema, splits.train.y, SEED)
    params.pop("metric", None)  # no validation set: nothing to report
    params.pop("num_threads", None)  # Dask's interface sets it: one per worker's thread
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                     dashboard_address=None, host="127.0.0.1") as local,
        Client(local) as client,
    ):  # fmt: skip
        started = time.perf_counter()
        X = dd.from_pandas(splits.train.X, npartitions=workers)
        y = dd.from_pandas(
            pd.Series(np.asarray(splits.train.y), index=splits.train.X.index, name="y"),
            npartitions=workers,
        )
        model = DaskLGBMClassifier(client=client, n_estimators=trees, **params)
        model.fit(X, y, categorical_feature=list(schema.categorical))
        seconds = time.perf_counter() - started
        local_model = model.to_local()
    auc = float(roc_auc_score(splits.test.y, local_model.predict_proba(splits.test.X)[:, 1]))
    return {"fit_s": seconds, "roc_auc": auc, "trees": trees, "workers": workers}


# ------------------------------------------------------------------------------------- main


def ray_overrides(workers: int, gpus: int | None = None) -> list[str]:
    extra = ["cluster=ray_local", f"cluster.workers={workers}", "cluster.log_to_driver=false"]
    if gpus is not None:
        extra.append(f"cluster.gpus_per_worker={gpus}")
    return extra


def run_training_and_batch(opts: Any, root: Path, gpus: int) -> dict[str, Any]:
    """Parts 2-4 (the Ray ones inside one embedded Ray, whose start is not counted)."""
    from verticals.core.cluster_batch import predict_on_ray

    results: dict[str, Any] = {"finance": {}, "traffic": {}, "batch": {}}
    finance = [*FINANCE, f"data.n_rows={opts.rows}", f"paths.root_dir={root}", f"seed={SEED}"]
    traffic = [*TRAFFIC["quick" if opts.quick else "default"], f"paths.root_dir={root}",
               f"seed={SEED}"]  # fmt: skip
    cpu_only = 0 if gpus else None  # with GPUs, the CPU rows hold none
    say(f"\n[2] training: cluster=none vs Ray Train workers ({opts.rows:,} finance rows)")
    base, baseline = train_row("finance", "cluster=none", finance)
    results["finance"]["none"] = base
    bundle_dir = write_bundle(baseline.run_dir, root / "bundles")
    features = list(baseline.splits.info["schema"].features)
    results["traffic"]["none"], _ = train_row("traffic", "cluster=none", traffic)

    table, out = root / "batch_in.parquet", root / "batch_out.parquet"
    batch_table(opts.batch_rows, table, features)
    bundle = load_bundle(bundle_dir)
    say(f"\n[3] batch prediction of {opts.batch_rows:,} finance rows (batch {opts.batch_size:,})")
    seconds, rows = timed(
        lambda: predict_file(bundle, table, out, batch_size=opts.batch_size, progress=False)
    )
    results["batch"]["none"] = {"s": seconds, "rows_per_s": rows / seconds}
    say(f"  predict_file (one process): {seconds:.1f} s, {rows / seconds:,.0f} rows/s")
    del baseline

    session_cfg = compose("train", "finance", [*finance, *ray_overrides(1, cpu_only)])
    with cluster.session(session_cfg):
        import ray

        threads = ray.get(
            ray.remote(lambda: os.environ.get("OMP_NUM_THREADS")).options(num_cpus=1).remote()
        )
        results["omp_num_threads_in_ray_worker"] = threads
        say(f"  (Ray: {ray.cluster_resources()}; a 1-CPU task sees OMP_NUM_THREADS={threads})")
        runs = [(w, cpu_only, f"ray w={w}") for w in (1, 2)]
        if gpus:
            runs.append((gpus, 1, f"ray {gpus} GPU"))
        say("\n[2] training on Ray")
        ray_result = None
        for workers, per_gpu, label in runs:
            key = label.replace(" ", "_").replace("=", "")
            extra = ray_overrides(workers, per_gpu)
            results["finance"][key], trained = train_row("finance", label, [*finance, *extra])
            if workers == 2 and per_gpu == cpu_only:
                ray_result = trained
                results["finance"][key]["trees_built"] = trained.model.booster.current_iteration()
                results["finance"][key]["best_iteration"] = trained.model.best_iteration
            del trained
            results["traffic"][key], _ = train_row("traffic", label, [*traffic, *extra])
        if not gpus:  # the same applicants as a Parquet folder that no process holds whole
            results["finance"]["ray_w2_parquet"] = sharded_row(opts.rows, root)

        say("\n[3] batch prediction on Ray actors")
        for workers, per_gpu, label in runs:
            key = label.replace(" ", "_").replace("=", "")
            cfg = compose("predict", "finance", [f"input={table}", f"output={out}",
                                                 f"paths.root_dir={root}", "log=off",
                                                 *ray_overrides(workers, per_gpu)])  # fmt: skip
            seconds, rows = timed(
                lambda cfg=cfg: predict_on_ray(cfg, bundle, table, out, opts.batch_size, [], None)
            )
            results["batch"][key] = {"s": seconds, "rows_per_s": rows / seconds}
            say(f"  {label} actors: {seconds:.1f} s, {rows / seconds:,.0f} rows/s")

    say("\n[4] LightGBM distributed: Ray Train's LightGBMTrainer vs LightGBM's Dask interface")
    ray_fig = results["finance"]["ray_w2"]
    results["lightgbm_distributed"] = {"ray_train": {
        "fit_s": ray_fig["fit_s"], "roc_auc": ray_fig["roc_auc"],
        "trees": ray_fig["trees_built"], "best_iteration": ray_fig["best_iteration"],
    }}  # fmt: skip
    say(
        f"  Ray Train, 2 workers: fit {ray_fig['fit_s']:.1f} s, ROC-AUC {ray_fig['roc_auc']:.4f} "
        f"({ray_fig['trees_built']} trees built, best {ray_fig['best_iteration']})"
    )
    if not dask_available():
        say("  skipped: dask.distributed is not installed (pip install 'dask[distributed]')")
        results["lightgbm_distributed"]["dask"] = None
    else:
        assert ray_result is not None
        cfg = compose("train", "finance", finance)
        dask_fig = bench_dask(cfg, ray_result.splits, ray_fig["trees_built"], 2)
        results["lightgbm_distributed"]["dask"] = dask_fig
        say(f"  Dask, 2 workers: fit {dask_fig['fit_s']:.1f} s, ROC-AUC {dask_fig['roc_auc']:.4f} "
            f"({dask_fig['trees']} trees)")  # fmt: skip
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def print_summary(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    s = results.get("serving")
    if s:
        base = s["uvicorn_w1"]["requests_per_s"]
        for key, label in (("uvicorn_w1", "uvicorn, 1 worker"), ("ray_serve_r1", "Ray Serve, 1"),
                           ("ray_serve_r2", "Ray Serve, 2")):  # fmt: skip
            f = s[key]
            rows.append((f"1 serve {label}", f"{f['requests_per_s']:.0f} req/s",
                         f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms",
                         ratio(f["requests_per_s"], base)))  # fmt: skip
        r1, r2 = s["ray_serve_r1"], s["ray_serve_r2"]
        rows.append(("1 serve 2 vs 1 replicas", "", "", ratio(r2["requests_per_s"],
                                                             r1["requests_per_s"])))  # fmt: skip
    for vertical in ("finance", "traffic"):
        t = results.get(vertical) or {}
        if "none" not in t:
            continue
        base = t["none"]["fit_s"]
        for key, f in t.items():
            skip = ("fit_s", "run_s", "trees_built", "best_iteration")
            metric = next(k for k in f if k not in skip)
            rows.append((f"2 train {vertical} {key}", f"{f['fit_s']:.1f} s",
                         f"{metric} {f[metric]:.4f}", ratio(base, f["fit_s"])))  # fmt: skip
        if "ray_w1" in t and "ray_w2" in t:
            rows.append((f"2 train {vertical} 2 vs 1 workers", "", "",
                         ratio(t["ray_w1"]["fit_s"], t["ray_w2"]["fit_s"])))  # fmt: skip
    b = results.get("batch") or {}
    if "none" in b:
        for key, f in b.items():
            rows.append((f"3 batch {key}", f"{f['rows_per_s']:,.0f} rows/s", f"{f['s']:.1f} s",
                         ratio(f["rows_per_s"], b["none"]["rows_per_s"])))  # fmt: skip
        if "ray_w1" in b and "ray_w2" in b:
            rows.append(("3 batch 2 vs 1 actors", "", "",
                         ratio(b["ray_w2"]["rows_per_s"], b["ray_w1"]["rows_per_s"])))  # fmt: skip
    d = results.get("lightgbm_distributed") or {}
    if d:
        r = d["ray_train"]
        rows.append(("4 LightGBM Ray Train x2", f"{r['fit_s']:.1f} s", f"AUC {r['roc_auc']:.4f}",
                     ""))  # fmt: skip
        if d.get("dask"):
            k = d["dask"]
            rows.append(("4 LightGBM Dask x2", f"{k['fit_s']:.1f} s", f"AUC {k['roc_auc']:.4f}",
                         f"Ray/Dask time {ratio(r['fit_s'], k['fit_s'])}"))  # fmt: skip
        else:
            rows.append(("4 LightGBM Dask x2", "skipped", "dask not installed", ""))
    header = ("measurement", "figure", "detail", "vs baseline")
    say("\nratios: serving and batch as throughput / baseline's; training as baseline time / "
        "this time (above 1x: faster)")  # fmt: skip
    say(pd.DataFrame(rows, columns=header).to_string(index=False))
    say(results["gpu_note"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__)
    args.add_argument("--quick", action="store_true", help="smaller tables and loads")
    args.add_argument("--rows", type=int, default=None, help="finance training rows "
                      "(default 200,000, a fifth of benchmarks/finance.py's, to stay "
                      "near 10 min on 2 cores; --quick 50,000)")  # fmt: skip
    args.add_argument("--batch-rows", type=int, default=None, help="default 200,000")
    args.add_argument("--batch-size", type=int, default=25_000)
    args.add_argument("--clients", type=int, default=8)
    args.add_argument("--requests", type=int, default=None, help="default 1,000")
    args.add_argument("--skip-serving", action="store_true")
    opts = args.parse_args(argv)
    opts.rows = opts.rows or (50_000 if opts.quick else 200_000)
    opts.batch_rows = opts.batch_rows or (50_000 if opts.quick else 200_000)
    opts.requests = opts.requests or (300 if opts.quick else 1_000)
    quiet_logging()
    import torch

    gpus = torch.cuda.device_count() if opts.device != "cpu" else 0
    started = time.perf_counter()
    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "gpus": gpus, "load_average_at_start": os.getloadavg()[0]},
        "gpu_note": (f"{gpus} GPU(s): the 'ray_{gpus}_GPU' rows are one worker per GPU" if gpus
                     else "no GPU on this machine: no one-worker-per-GPU rows"),
    }  # fmt: skip
    say(f"Scaling out: {os.cpu_count()} CPUs, {gpus} GPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp_name:
        root = Path(tmp_name)
        results |= run_training_and_batch(opts, root, gpus)
        if not opts.skip_serving:
            say(f"\n[1] serving: finance /predict, {opts.clients} clients, {opts.requests} "
                "requests each setup")  # fmt: skip
            bundle = sorted((root / "bundles" / "finance").glob("*/manifest.json"))[-1].parent
            results["serving"] = bench_serving(bundle, root, opts.clients, opts.requests)
    results["environment"]["load_average_at_end"] = os.getloadavg()[0]
    results["wall_s"] = time.perf_counter() - started
    print_summary(results)
    say(f"wall time {results['wall_s']:.0f} s; load average at start "
        f"{results['environment']['load_average_at_start']:.1f}, at end "
        f"{results['environment']['load_average_at_end']:.1f}")  # fmt: skip
    write_figures(opts.out, results)
    return results


if __name__ == "__main__":
    main()
