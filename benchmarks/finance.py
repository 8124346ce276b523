"""Benchmark the finance vertical against raw LightGBM doing the same work.

One run measures four things and prints a report (also written as JSON with `--out`):

A. training overhead: the suite's `fit` vs `lgb.train` with the same params, Datasets and
   early stopping, on synthetic applicants;
B. batch scoring: `verticals.core.batch.predict_file` over a Parquet file vs reading it, typing the
   features, predicting PD and SHAP contributions and writing PD + top-4 reason indices;
C. `/predict` latency of the FastAPI app under concurrent single-record requests;
D. with `VERTICALS_DATA_DIR` set: 5-fold cross-validation on UCI German Credit, default
   model config vs `lgb.LGBMClassifier()`.

    python benchmarks/finance.py [--rows 1000000] [--device auto] [--requests 400]
                                 [--concurrency 8] [--out results.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import platform
import pstats
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")  # pipeline.train draws plots; no display here

import common  # noqa: E402
import httpx  # noqa: E402
import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from common import say  # noqa: E402
from loopback import serving  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core.batch import predict_file  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.contract import RunContext, Splits  # noqa: E402
from verticals.core.device import Device, resolve_device  # noqa: E402
from verticals.core.pipeline import train  # noqa: E402
from verticals.finance import german  # noqa: E402
from verticals.finance.data import (  # noqa: E402
    FeatureSchema,
    Part,
    binary_target,
    infer_schema,
    load_splits,
    to_features,
    to_matrix,
)
from verticals.finance.metrics import classification_metrics  # noqa: E402
from verticals.finance.model import PSI_SAMPLE, fit, lightgbm_params  # noqa: E402
from verticals.finance.synthetic import generate_applicants  # noqa: E402

SEED = 42
N_REASONS = 4
BATCH_SIZE = 50_000
WARMUP_REQUESTS = 20
BATCH_POST_RECORDS = 1000
SEQUENTIAL_REQUESTS = 100  # one client, one request at a time: latency without queueing
PROFILE_RATIO = 1.2  # profile the suite's batch scoring when it is slower than raw by this

log = logging.getLogger("bench")


# --------------------------------------------------------------------------- helpers


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (Linux), else None."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait; steal counts as busy: someone else ran
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    """Wall seconds of one measurement, and the CPU other processes used meanwhile."""

    seconds: float
    background: float | None  # cores busy outside this process (None: not measurable)

    def note(self) -> str:
        if self.background is None:
            return ""
        return f" [other processes: {self.background:.2f} cores]"


def timed(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    """How long `fn()` took (with the machine's background load), and what it returned."""
    busy, own = _busy_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    busy_after, own_after = _busy_cpu_seconds(), time.process_time()
    background = None
    if busy is not None and busy_after is not None:
        other = (busy_after - busy) - (own_after - own)
        background = max(other, 0.0) / max(seconds, 1e-9)
    return Timing(seconds, background), result


def alternate(
    repeats: int, runs: dict[str, Callable[[], Any]], label: Callable[[str, Any], str]
) -> tuple[dict[str, list[Timing]], dict[str, Any]]:
    """Run each of `runs` in turn, `repeats` times; every timing, and each run's last result."""
    timings: dict[str, list[Timing]] = {name: [] for name in runs}
    last: dict[str, Any] = {}
    for i in range(repeats):
        for name, fn in runs.items():
            timing, last[name] = timed(fn)
            timings[name].append(timing)
            what = label(name, last[name])
            say(f"  repeat {i + 1}: {what} {timing.seconds:.2f} s{timing.note()}")
    return timings, last


def best_of(timings: dict[str, list[Timing]], baseline: str = "raw") -> dict[str, Any]:
    """Min time of each run, its ratio to `baseline`, and every repeat (with background load)."""
    out: dict[str, Any] = {}
    for name, items in timings.items():
        best = min(items, key=lambda t: t.seconds)
        out[f"{name}_s"] = best.seconds
        out[f"{name}_background_cores"] = best.background
        out[f"{name}_times_s"] = [t.seconds for t in items]
        out[f"{name}_background_cores_all"] = [t.background for t in items]
    out["ratio"] = out["suite_s"] / out[f"{baseline}_s"]
    return out


def contention_warning(result: dict[str, Any], limit: float = 0.25) -> str | None:
    """A warning when another process used CPU during a best-of measurement."""
    busy = [v for k, v in result.items() if k.endswith("_background_cores") and v and v > limit]
    if not busy:
        return None
    return (
        f"  WARNING: other processes used up to {max(busy):.2f} cores during the best "
        "repeats; LightGBM's OpenMP threads slow down badly when a core is taken, so these "
        "timings are pessimistic and the ratio is unreliable"
    )


def quiet_logging() -> None:
    """Keep the library's INFO logs (and LightGBM's) off the console; warnings still show."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("[%(levelname)s %(name)s] %(message)s"))
    logging.getLogger().addHandler(handler)


def train_config(rows: int, device: str, root: Path) -> DictConfig:
    """The suite's config for the synthetic training benchmark (parts A to C)."""
    return compose(
        "train",
        "finance",
        [
            "data=synthetic",
            f"data.n_rows={rows}",
            "model.num_boost_round=300",
            "model.early_stopping_rounds=50",
            f"paths.root_dir={root}",
            f"trainer.device={device}",
        ],
    )


def auc_on(booster: lgb.Booster, best: int, part: Part) -> float:
    return float(roc_auc_score(part.y, booster.predict(part.X, num_iteration=best)))


# --------------------------------------------------------------------------- A. training


def raw_train(
    cfg: DictConfig, splits: Splits, schema: FeatureSchema, device: Device
) -> tuple[lgb.Booster, int]:
    """What `verticals.finance.model.fit` trains, with LightGBM alone (GPU first on CUDA)."""
    params = lightgbm_params(cfg.model, schema, splits.train.y, SEED)
    categorical = list(schema.categorical)
    dtrain = lgb.Dataset(
        splits.train.X, splits.train.y, categorical_feature=categorical, free_raw_data=False
    )
    dval = lgb.Dataset(
        splits.val.X, splits.val.y, categorical_feature=categorical, reference=dtrain
    )

    def run(params: dict[str, Any]) -> lgb.Booster:
        stop = lgb.early_stopping(
            cfg.model.early_stopping_rounds, first_metric_only=True, verbose=False
        )
        return lgb.train(
            params,
            dtrain,
            num_boost_round=cfg.model.num_boost_round,
            valid_sets=[dval],
            callbacks=[stop],
        )

    booster = None
    if device.is_cuda:
        try:
            booster = run({**params, "device_type": "gpu"})
        except lgb.basic.LightGBMError:
            booster = None
    if booster is None:
        booster = run(params)
    return booster, booster.best_iteration or booster.current_iteration()


def bench_training(
    cfg: DictConfig, splits: Splits, device: Device, repeats: int, tmp: Path
) -> dict[str, Any]:
    """Suite `fit` vs raw `lgb.train`, alternated, best of `repeats` each."""
    schema: FeatureSchema = splits.info["schema"]
    ctx = RunContext(run_dir=tmp / "fit", device=device, seed=SEED, log=log)

    def label(name: str, result: Any) -> str:
        trees = result.best_iteration if name == "suite" else result[1]
        return f"{'suite fit' if name == 'suite' else 'raw lgb.train'} ({trees} trees)"

    timings, last = alternate(
        repeats,
        {
            "suite": lambda: fit(cfg, splits, ctx),
            "raw": lambda: raw_train(cfg, splits, schema, device),
        },
        label,
    )
    model, (booster, best) = last["suite"], last["raw"]
    # What fit does besides training: PD on (a sample of) the training rows for PSI.
    sample = splits.train.X
    if len(sample) > PSI_SAMPLE:
        sample = sample.sample(PSI_SAMPLE, random_state=42)
    psi, _ = timed(lambda: booster.predict(sample, num_iteration=best))
    suite_auc = auc_on(model.booster, model.best_iteration, splits.test)
    raw_auc = auc_on(booster, best, splits.test)
    result = {
        "rows": splits.info["rows"],
        "split": splits.info["split"],
        "lightgbm_device": model.lightgbm_device,
        **best_of(timings),
        "train_predict_s": psi.seconds,
        "suite_best_iteration": model.best_iteration,
        "raw_best_iteration": best,
        "suite_test_auc": suite_auc,
        "raw_test_auc": raw_auc,
        "auc_abs_diff": abs(suite_auc - raw_auc),
    }
    result["ratio_without_psi_baseline"] = (result["suite_s"] - psi.seconds) / result["raw_s"]
    return result


# --------------------------------------------------------------------------- B. batch scoring


def make_bundle(cfg: DictConfig, tmp: Path) -> tuple[Path, dict[str, float]]:
    """Train a run with the suite's pipeline and package it; return the bundle folder."""
    training, result = timed(lambda: train(cfg))
    packaging, bundle_dir = timed(lambda: write_bundle(result.run_dir, tmp / "bundles"))
    return bundle_dir, {"pipeline_train_s": training.seconds, "package_s": packaging.seconds}


def raw_predict_file(
    booster: lgb.Booster,
    best: int,
    schema: FeatureSchema,
    src: Path,
    dst: Path,
    batch_size: int,
) -> int:
    """The same scoring with LightGBM and NumPy: PD from the SHAP sum, top-4 reasons by
    |SHAP| as feature names and signed log-odds (score and grade are left out: cheap)."""
    n_features = len(schema.features)
    names = np.array([f.replace("_", " ") for f in schema.features], dtype=object)
    writer: pq.ParquetWriter | None = None
    done = 0
    for batch in pq.ParquetFile(src).iter_batches(batch_size=batch_size):
        X = to_matrix(batch.to_pandas(), schema)  # LightGBM's fastest input: a float matrix
        full = booster.predict(X, num_iteration=best, pred_contrib=True)
        pd_ = 1.0 / (1.0 + np.exp(-full.sum(axis=1)))
        contrib = full[:, :n_features]
        top = np.argsort(-np.abs(contrib), axis=1)[:, :N_REASONS]
        effects = np.round(np.take_along_axis(contrib, top, axis=1), 4)
        columns = {"pd": pd_}
        for k in range(N_REASONS):
            columns[f"reason_{k + 1}"] = names[top[:, k]]
            columns[f"reason_{k + 1}_log_odds"] = effects[:, k]
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(dst, table.schema)
        writer.write_table(table)
        done += len(X)
    if writer is not None:
        writer.close()
    return done


# Stages of the suite's scoring, as (file, function) in the profile: where the time goes.
PROFILE_STAGES = {
    "read Parquet batches (iter_batches)": ("tables.py", "iter_batches"),
    "type features (to_matrix)": ("data.py", "to_matrix"),
    "LightGBM predict (PD + SHAP)": ("basic.py", "predict"),
    "reason codes (scorecard.top_reasons)": ("scorecard.py", "top_reasons"),
    "write Parquet (TableWriter.write)": ("tables.py", "write"),
}


def profile_suite_scoring(
    bundle: Any, src: Path, dst: Path, rows: int, top: int = 15
) -> tuple[dict[str, float], str]:
    """cProfile of `predict_file` on the first `rows` rows: seconds per stage, and the top
    functions by own time."""
    sample = src.with_name("profile_in.parquet")
    pq.write_table(pq.read_table(src).slice(0, rows), sample)
    profiler = cProfile.Profile()
    profiler.enable()
    predict_file(bundle, sample, dst, batch_size=BATCH_SIZE, progress=False)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    cumulative = {(f, fn): 0.0 for f, _, fn in stats.stats}  # type: ignore[attr-defined]
    for (f, _, fn), (*_, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        # Same-named functions (Booster.predict wraps _InnerPredictor.predict): the outermost.
        cumulative[f, fn] = max(cumulative[f, fn], ct)
    stages = {"total (under cProfile)": cumulative[("batch.py", "predict_file")]}
    stages |= {stage: cumulative.get(key, 0.0) for stage, key in PROFILE_STAGES.items()}
    stats.sort_stats("tottime").print_stats(top)
    return stages, out.getvalue()


def bench_batch(
    bundle_dir: Path,
    features: pd.DataFrame,
    repeats: int,
    tmp: Path,
) -> dict[str, Any]:
    """`predict_file` vs raw LightGBM on the same Parquet file, alternated, best of each."""
    src = tmp / "score_in.parquet"
    frame = features.reset_index(names="id")
    frame.to_parquet(src, index=False)
    bundle = load_bundle(bundle_dir)
    model = bundle.model
    suite_out, raw_out = tmp / "score_suite.parquet", tmp / "score_raw.parquet"
    timings, _ = alternate(
        repeats,
        {
            "suite": lambda: predict_file(
                bundle, src, suite_out, batch_size=BATCH_SIZE, progress=False
            ),
            "raw": lambda: raw_predict_file(
                model.booster, model.best_iteration, model.schema, src, raw_out, BATCH_SIZE
            ),
        },
        lambda name, n: f"{'suite predict_file' if name == 'suite' else 'raw LightGBM'} ({n} rows)",
    )
    suite_pd = pd.read_parquet(suite_out, columns=["pd"])["pd"].to_numpy()
    raw_pd = pd.read_parquet(raw_out, columns=["pd"])["pd"].to_numpy()
    result = {"rows": len(frame), "batch_size": BATCH_SIZE, **best_of(timings)}
    result |= {
        "suite_rows_per_s": len(frame) / result["suite_s"],
        "raw_rows_per_s": len(frame) / result["raw_s"],
        "pd_max_abs_diff": float(np.max(np.abs(suite_pd - raw_pd))),
        "profile": None,
    }
    if result["ratio"] > PROFILE_RATIO:
        rows = min(BATCH_SIZE, len(frame))
        say(f"  ratio above {PROFILE_RATIO}: profiling predict_file on {rows} rows")
        stages, listing = profile_suite_scoring(bundle, src, tmp / "profile_out.parquet", rows)
        result["profile_rows"] = rows
        result["profile_stages_s"] = stages
        result["profile"] = listing
    return result


# --------------------------------------------------------------------------- C. serving


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: None for missing values, plain Python numbers."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()} for r in rows]


def _post(client: httpx.Client, body: Any) -> float:
    started = time.perf_counter()
    response = client.post("/predict", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"/predict answered {response.status_code}: {response.text[:300]}")
    return elapsed


def _post_all(url: str, bodies: list[dict[str, Any]]) -> list[float]:
    """One client posting `bodies` one after another; the latency of each."""
    with httpx.Client(base_url=url, timeout=60.0) as client:
        return [_post(client, body) for body in bodies]


def bench_serving(
    bundle_dir: Path, records: list[dict[str, Any]], n_requests: int, concurrency: int, workers: int
) -> dict[str, Any]:
    """Single-record `/predict` latency under `concurrency` clients, and one large batch."""
    bodies = [records[i % len(records)] for i in range(n_requests)]
    batch = [records[i % len(records)] for i in range(BATCH_POST_RECORDS)]
    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    bundle = load_bundle(bundle_dir)
    in_process = []
    for body in records[:SEQUENTIAL_REQUESTS]:
        one = pd.DataFrame([body])
        timing, _ = timed(lambda one=one: bundle.vertical.predict(bundle.model, one))
        in_process.append(timing.seconds)
    with serving(bundle_dir, workers) as url, httpx.Client(base_url=url, timeout=120.0) as client:
        for body in records[:WARMUP_REQUESTS]:
            _post(client, body)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            load, timings = timed(lambda: list(pool.map(lambda c: _post_all(url, c), chunks)))
        sequential = [_post(client, body) for body in records[:SEQUENTIAL_REQUESTS]]
        _post(client, batch)  # warm-up
        batch_times = [_post(client, batch) for _ in range(3)]
    latencies = [t for chunk in timings for t in chunk]
    ms = np.array(latencies) * 1000
    batch_ms = float(np.median(batch_times) * 1000)
    return {
        "requests": n_requests,
        "concurrency": concurrency,
        "workers": workers,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "requests_per_s": n_requests / load.seconds,
        "background_cores": load.background,
        "sequential_requests": len(sequential),
        "sequential_p50_ms": float(np.percentile(np.array(sequential) * 1000, 50)),
        "sequential_p99_ms": float(np.percentile(np.array(sequential) * 1000, 99)),
        "in_process_predict_p50_ms": float(np.percentile(np.array(in_process) * 1000, 50)),
        "batch_records": BATCH_POST_RECORDS,
        "batch_ms": batch_ms,
        "batch_records_per_s": BATCH_POST_RECORDS / (batch_ms / 1000),
    }


# --------------------------------------------------------------------------- D. German Credit


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}


def bench_german(path: Path, device: str, tmp: Path, folds: int = 5) -> dict[str, Any]:
    """Stratified k-fold CV on UCI German Credit: the vertical's default model vs LightGBM's."""
    cfg = compose(
        "train",
        "finance",
        [f"data.path={path}", f"paths.root_dir={tmp}", f"trainer.device={device}"],
    )
    data = cfg.data
    frame = german.load_uci(path, data.target)
    where = f"data (UCI german.data at {path})"
    y = binary_target(frame, data.target, where)
    schema = infer_schema(frame, data, where)
    X = to_features(frame, schema, where)
    no_extra = frame[[]]
    ctx = RunContext(run_dir=tmp / "german", device=resolve_device(device), seed=SEED, log=log)
    names = ("roc_auc", "gini", "ks")
    scores: dict[str, dict[str, list[float]]] = {
        k: {m: [] for m in names} for k in ("suite", "raw_same_rows", "raw_all_rows")
    }
    trees: list[int] = []

    def part(idx: np.ndarray) -> Part:
        return Part(X.iloc[idx], y[idx], no_extra.iloc[idx])

    def record(kind: str, y_true: np.ndarray, pd_: np.ndarray) -> None:
        metrics = classification_metrics(y_true, pd_)
        for m in names:
            scores[kind][m].append(metrics[m])

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for fold, (rest, test) in enumerate(cv.split(X, y), start=1):
        # The vertical's split: validation carved from the training part, stratified.
        tr, va = train_test_split(
            rest, test_size=data.val_size, random_state=int(cfg.seed), stratify=y[rest]
        )
        tr, va = np.sort(tr), np.sort(va)
        splits = Splits(part(tr), part(va), part(test), {"schema": schema})
        model = fit(cfg, splits, ctx)
        trees.append(model.best_iteration)
        record("suite", y[test], model.pd(X.iloc[test]))
        for kind, rows in (("raw_same_rows", tr), ("raw_all_rows", rest)):
            clf = lgb.LGBMClassifier(verbose=-1)
            clf.fit(X.iloc[rows], y[rows])
            record(kind, y[test], clf.predict_proba(X.iloc[test])[:, 1])
        say(
            f"  fold {fold}: suite AUC {scores['suite']['roc_auc'][-1]:.4f} "
            f"({model.best_iteration} trees), LGBMClassifier() "
            f"{scores['raw_same_rows']['roc_auc'][-1]:.4f} (same rows), "
            f"{scores['raw_all_rows']['roc_auc'][-1]:.4f} (train+val rows)"
        )
    return {
        "path": str(path),
        "rows": len(frame),
        "folds": folds,
        "val_size": float(data.val_size),
        "suite_trees": trees,
        **{kind: {m: mean_std(v) for m, v in by.items()} for kind, by in scores.items()},
    }


# --------------------------------------------------------------------------- report


def fmt_ms(value: float) -> str:
    return f"{value:.1f} ms"


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, suite, raw LightGBM, suite/raw) for every part that ran."""
    rows: list[tuple[str, str, str, str]] = []
    if a := results.get("training"):
        ratio = f"{a['ratio']:.2f}"
        rows.append(("A fit time (best)", f"{a['suite_s']:.2f} s", f"{a['raw_s']:.2f} s", ratio))
        rows.append(("A test AUC", f"{a['suite_test_auc']:.4f}", f"{a['raw_test_auc']:.4f}", ""))
    if b := results.get("batch"):
        ratio = f"{b['ratio']:.2f}"
        rows.append(
            ("B batch scoring (best)", f"{b['suite_s']:.2f} s", f"{b['raw_s']:.2f} s", ratio)
        )
        suite_rate, raw_rate = f"{b['suite_rows_per_s']:,.0f}", f"{b['raw_rows_per_s']:,.0f}"
        rows.append(("B rows/s", suite_rate, raw_rate, ""))
    if c := results.get("serving"):
        pcts = f"{c['p50_ms']:.1f} / {c['p90_ms']:.1f} / {c['p99_ms']:.1f} ms"
        rows.append((f"C /predict p50/p90/p99 (x{c['concurrency']})", pcts, "", ""))
        rows.append(("C requests/s", f"{c['requests_per_s']:.1f}", "", ""))
        rows.append((f"C {c['batch_records']}-record POST", fmt_ms(c["batch_ms"]), "", ""))
    if d := results.get("german"):
        for m in ("roc_auc", "gini", "ks"):
            s, r = d["suite"][m], d["raw_same_rows"][m]
            suite, raw = f"{s['mean']:.4f} ± {s['std']:.4f}", f"{r['mean']:.4f} ± {r['std']:.4f}"
            rows.append((f"D German {d['folds']}-fold {m}", suite, raw, ""))
    else:
        rows.append(("D German Credit CV", "skipped", "", ""))
    return rows


def print_summary(results: dict[str, Any]) -> None:
    header = ("measure", "suite", "raw LightGBM", "suite/raw")
    rows = summary_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    say("\nSUMMARY")
    for row in [None, header, None, *rows, None]:
        say(
            rule if row is None else "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        )
    busy = [contention_warning(results[k]) for k in ("training", "batch") if results.get(k)]
    if any(busy):
        say("note: other processes were busy during A or B (see the warnings above)")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic applicants")
    parser.add_argument("--requests", type=int, default=400, help="single-record /predict calls")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="server processes for part C")
    parser.add_argument("--repeats", type=int, default=2, help="alternated repeats in A and B")
    return parser.parse_args(argv)


def run_training(
    args: argparse.Namespace, cfg: DictConfig, device: Device, tmp: Path
) -> tuple[dict[str, Any], pd.DataFrame, Splits]:
    """Part A; also returns the generated applicants and the suite's splits for B and C."""
    say("\n[A] training: suite fit vs raw lgb.train")
    generating, frame = timed(lambda: generate_applicants(args.rows, int(cfg.seed)))
    frame = frame.drop(columns=["application_date"])
    loading, splits = timed(lambda: load_splits(cfg))
    gen_s, split_s = generating.seconds, loading.seconds
    say(f"  generated {len(frame):,} rows in {gen_s:.1f} s; load_splits {split_s:.1f} s")
    say(f"  split {splits.info['split']}")
    a = bench_training(cfg, splits, device, args.repeats, tmp)
    a.update(generate_s=gen_s, load_splits_s=split_s)
    say(
        f"  best of {args.repeats}: suite {a['suite_s']:.2f} s, raw {a['raw_s']:.2f} s, "
        f"ratio {a['ratio']:.2f}; fit also scores "
        f"{min(len(splits.train.y), PSI_SAMPLE):,} training rows for its PSI baseline "
        f"({a['train_predict_s']:.2f} s): without it the ratio is "
        f"{a['ratio_without_psi_baseline']:.2f}"
    )
    say(
        f"  test AUC: suite {a['suite_test_auc']:.5f}, raw {a['raw_test_auc']:.5f} "
        f"(|diff| {a['auc_abs_diff']:.2e}); trees {a['suite_best_iteration']} vs "
        f"{a['raw_best_iteration']} on {a['lightgbm_device']}"
    )
    if warning := contention_warning(a):
        say(warning)
    return a, frame, splits


def run_batch(
    args: argparse.Namespace, cfg: DictConfig, test_raw: pd.DataFrame, tmp: Path
) -> tuple[dict[str, Any], Path]:
    """Part B; also returns the bundle folder for C."""
    say("\n[B] batch scoring: predict_file vs raw LightGBM")
    bundle_dir, packaging = make_bundle(cfg, tmp)
    say(
        f"  pipeline.train {packaging['pipeline_train_s']:.1f} s, "
        f"write_bundle {packaging['package_s']:.1f} s"
    )
    b = bench_batch(bundle_dir, test_raw, args.repeats, tmp)
    b.update(packaging)
    say(
        f"  best of {args.repeats} on {b['rows']:,} rows: suite {b['suite_s']:.2f} s "
        f"({b['suite_rows_per_s']:,.0f} rows/s), raw {b['raw_s']:.2f} s "
        f"({b['raw_rows_per_s']:,.0f} rows/s), ratio {b['ratio']:.2f}; "
        f"max |PD diff| {b['pd_max_abs_diff']:.1e}"
    )
    if warning := contention_warning(b):
        say(warning)
    if b["profile"]:
        say(f"  cProfile of predict_file on {b['profile_rows']:,} rows, by stage (cumulative):")
        stages = b["profile_stages_s"]
        total = stages["total (under cProfile)"]
        for stage, seconds in stages.items():
            say(f"    {stage:<46} {seconds:7.2f} s  {seconds / total:6.1%}")
        say("  top functions by own time:")
        lines = b["profile"].strip().splitlines()
        say("\n".join("    " + ln for ln in lines if ln.strip()))
    return b, bundle_dir


def run_serving(
    args: argparse.Namespace, bundle_dir: Path, test_raw: pd.DataFrame, tmp: Path
) -> dict[str, Any]:
    """Part C."""
    say(
        f"\n[C] /predict latency: {args.requests} requests, {args.concurrency} clients, "
        f"server in {args.workers} separate process(es)"
    )
    records = json_records(test_raw.head(max(args.requests, BATCH_POST_RECORDS)))
    c = bench_serving(bundle_dir, records, args.requests, args.concurrency, args.workers)
    say(
        f"  p50 {fmt_ms(c['p50_ms'])}, p90 {fmt_ms(c['p90_ms'])}, p99 {fmt_ms(c['p99_ms'])}, "
        f"{c['requests_per_s']:.1f} requests/s{Timing(0, c['background_cores']).note()}"
    )
    say(
        f"  one client, {c['sequential_requests']} sequential requests: "
        f"p50 {fmt_ms(c['sequential_p50_ms'])}, p99 {fmt_ms(c['sequential_p99_ms'])}; "
        f"of which vertical.predict() on one record, in process: "
        f"p50 {fmt_ms(c['in_process_predict_p50_ms'])}"
    )
    say(
        f"  {c['batch_records']}-record POST: {fmt_ms(c['batch_ms'])} (median of 3, "
        f"{c['batch_records_per_s']:,.0f} records/s)"
    )
    return c


def run_german(args: argparse.Namespace, tmp: Path) -> dict[str, Any] | None:
    """Part D, when `$VERTICALS_DATA_DIR/credit/german.data` exists."""
    say("\n[D] UCI German Credit: 5-fold CV, default config vs LGBMClassifier()")
    data_dir = os.environ.get("VERTICALS_DATA_DIR")
    path = Path(data_dir) / "credit" / "german.data" if data_dir else None
    if path is None or not path.is_file():
        where = path or "$VERTICALS_DATA_DIR/credit/german.data"
        say(
            f"  skipped: {where} not found. To run it, download UCI Statlog German Credit "
            "(german.data) and set VERTICALS_DATA_DIR so that "
            "$VERTICALS_DATA_DIR/credit/german.data exists."
        )
        return None
    d = bench_german(path, args.device, tmp)
    for kind, label in (
        ("suite", "suite (default config, early stopping)"),
        ("raw_same_rows", "LGBMClassifier() on the same training rows"),
        ("raw_all_rows", "LGBMClassifier() on training + validation rows"),
    ):
        figures = ", ".join(
            f"{m} {d[kind][m]['mean']:.4f} ± {d[kind][m]['std']:.4f}"
            for m in ("roc_auc", "gini", "ks")
        )
        say(f"  {label}: {figures}")
    return d


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet_logging()
    started = time.perf_counter()
    device = resolve_device(args.device)
    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "python": platform.python_version(),
            "lightgbm": lgb.__version__,
            "cpus": os.cpu_count(),
            "device": str(device),
            "machine": platform.platform(),
            "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
    }
    say(
        f"Finance benchmark: {args.rows:,} synthetic rows on {device}, {os.cpu_count()} CPUs, "
        f"LightGBM {lgb.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_finance_") as tmp_name:
        tmp = Path(tmp_name)
        cfg = train_config(args.rows, args.device, tmp)
        results["training"], frame, splits = run_training(args, cfg, device, tmp)
        schema: FeatureSchema = splits.info["schema"]
        test_raw = frame.loc[splits.test.X.index, schema.features]
        del frame
        results["batch"], bundle_dir = run_batch(args, cfg, test_raw, tmp)
        results["serving"] = run_serving(args, bundle_dir, test_raw, tmp)
        results["german"] = run_german(args, tmp)

    results["wall_s"] = time.perf_counter() - started
    print_summary(results)
    say(f"wall time {results['wall_s']:.1f} s")
    common.write_figures(args.out, results)
    return results


if __name__ == "__main__":
    main()
