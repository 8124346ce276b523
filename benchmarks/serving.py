"""Serving speed: the suite's `/predict` against a hand-written floor, big requests beside
small ones, micro-batched uploads.

One run prints, side by side:

A. finance, retail and traffic `/predict` of one record (traffic: one window of readings):
   p50/p99 at 1 client and at 8 clients, and requests/s, with 1 and 2 server workers; the
   same record scored by `floors.py` (FastAPI calling the raw library on a NumPy row) and
   the suite's ratio to it.
B. `/health` and one-record `/predict` latency while a 100,000-record finance request is
   scored: with big requests in their own process (the default) and in the server.
C. medical and manufacturing uploads: files per second from 8 clients with and without
   micro-batching.

The load comes from `wrk` (Debian's package) in its own process on loopback; without it,
from httpx clients in this process (slower, and the note says so). Bundles are trained
once into `--bundles` (default: a temporary folder) and reused when already there.

    .venv/bin/python benchmarks/serving.py --out /tmp/serving.json
    .venv/bin/python benchmarks/serving.py --only finance --seconds 5
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parser, say, write_figures  # noqa: E402
from benchmarks.loopback import serving  # noqa: E402
from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.examples import EXAMPLES, example_body  # noqa: E402
from verticals.core.serving import SERVE_ENV  # noqa: E402

RECORD_VERTICALS = ("finance", "retail", "traffic")
FILE_VERTICALS = ("medical", "manufacturing")
TRAINING = {  # small, quick models of each vertical: serving cost, not model quality
    "finance": [],  # German Credit, shipped with the package
    "retail": [],
    "traffic": ["experiment=demo"],
    "medical": ["experiment=demo"],
    "manufacturing": ["experiment=demo"],
}
BIG_RECORDS = 100_000


JSON = {"Content-Type": "application/json"}


def bundle_for(vertical: str, root: Path, device: str) -> Path:
    """The latest bundle of `vertical` under `root`, trained and packaged if there is none."""
    found = sorted((root / "bundles" / vertical).glob("*/manifest.json"))
    if found:
        return found[-1].parent
    say(f"training a {vertical} model for the benchmark ...")
    overrides = [*TRAINING[vertical], f"trainer.device={device}", f"paths.root_dir={root}"]
    result = pipeline.train(compose("train", vertical, overrides))
    return write_bundle(result.run_dir, root / "bundles")  # -> bundles/<vertical>/<version>


def one_request(bundle: Path) -> bytes:
    """One request as a client sends it: the first example record, or (records grouped by a
    column, as traffic's windows) every record of the first group."""
    records = json.loads(example_body(bundle / EXAMPLES) or b"[]")
    group = load_bundle(bundle).vertical.group_column
    if group and records and records[0].get(group) is not None:
        records = [r for r in records if r.get(group) == records[0][group]]
        return json.dumps(records).encode()
    return json.dumps(records if group else records[0]).encode()


# ----------------------------------------------------------------------------- load clients

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk_ms(text: str, label: str) -> float:
    match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk_load(url: str, body: bytes, clients: int, seconds: float, tmp: Path,
             headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """POST `body` to `url` from `clients` connections for `seconds` with wrk."""
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    script = tmp / "post.lua"
    script.write_text(
        f'local f = io.open("{body_file}", "rb"); local body = f:read("*a"); f:close()\n'
        'wrk.method = "POST"; wrk.body = body\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
        + "done = function(summary, latency, requests)\n"
        '  io.write(string.format("non2xx %d\\n", summary.errors.status))\n'
        "end\n"
    )
    threads, duration = min(clients, 2), f"{max(int(seconds), 1)}s"
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{clients}", f"-d{duration}", "--latency", "-s", str(script),
         url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    failed = re.search(r"non2xx (\d+)", out)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"{failed.group(1)} requests to {url} did not answer 2xx")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "p50_ms": _wrk_ms(out, "50%"),
        "p99_ms": _wrk_ms(out, "99%"),
        "requests_per_s": float(rate.group(1)) if rate else float("nan"),
    }


def httpx_load(url: str, body: bytes, clients: int, seconds: float,
               extra: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The same load from httpx clients in threads of this process (no wrk installed)."""
    stop = time.monotonic() + seconds
    headers = {"Content-Type": "application/json", **(extra or {})}

    def client(_: int) -> list[float]:
        times = []
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                http.post(url, content=body, headers=headers).raise_for_status()
                times.append(time.perf_counter() - started)
        return times

    with ThreadPoolExecutor(clients) as pool:
        times = [t for part in pool.map(client, range(clients)) for t in part]
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(ms) / seconds,
    }


def load(url: str, body: bytes, clients: int, seconds: float, tmp: Path,
         headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    if shutil.which("wrk"):
        return wrk_load(url, body, clients, seconds, tmp, headers)
    return httpx_load(url, body, clients, seconds, headers)


def warm(url: str, body: bytes, n: int = 50, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(timeout=120) as http:
        for _ in range(n):
            sent = {"Content-Type": "application/json", **(headers or {})}
            response = http.post(url, content=body, headers=sent)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")


# --------------------------------------------------------------------------------- A. records


def bench_record(vertical: str, bundle: Path, seconds: float, tmp: Path) -> dict[str, Any]:
    body = one_request(bundle)
    result: dict[str, Any] = {"request_bytes": len(body)}
    for name, app in (
        ("suite", "verticals.core.serving:app_from_env"),
        ("floor", f"benchmarks.floors:{vertical}"),
    ):
        for workers in (1, 2):
            with serving(bundle, workers, app=app) as url:
                warm(f"{url}/predict", body)
                time.sleep(1.0)  # a second worker may still be warming up
                for clients in (1, 8):
                    figures = load(f"{url}/predict", body, clients, seconds, tmp)
                    result[f"{name}_w{workers}_c{clients}"] = figures
                    say(
                        f"  {vertical:8} {name:5} workers={workers} clients={clients}: "
                        f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
                        f"{figures['requests_per_s']:.0f} req/s"
                    )
    suite, floor = result["suite_w1_c1"], result["floor_w1_c1"]
    result["p50_ratio_to_floor_c1"] = suite["p50_ms"] / floor["p50_ms"]
    for w in (1, 2):
        s, f = result[f"suite_w{w}_c8"], result[f"floor_w{w}_c8"]
        result[f"throughput_ratio_to_floor_w{w}_c8"] = f["requests_per_s"] / s["requests_per_s"]
    result["workers_speedup_c8"] = (
        result["suite_w2_c8"]["requests_per_s"] / result["suite_w1_c8"]["requests_per_s"]
    )
    return result


# ------------------------------------------------------------------------ B. a big request


def big_body(bundle: Path, n: int) -> bytes:
    records = json.loads(example_body(bundle / EXAMPLES) or b"[]")
    return json.dumps([records[i % len(records)] for i in range(n)]).encode()


def bench_big(bundle: Path, n: int, tmp: Path) -> dict[str, Any]:
    """`/health` and one-record `/predict` polled while one `n`-record request is scored."""
    body, one = big_body(bundle, n), one_request(bundle)
    result: dict[str, Any] = {"records": n, "body_mb": len(body) / 1e6}
    for label, settings in (("own_process", {}), ("in_server", {"big_request_kib": None})):
        env = {SERVE_ENV: json.dumps(settings)} if settings else {}
        with serving(bundle, 1, env=env) as url, httpx.Client(base_url=url, timeout=600) as http:
            warm(f"{url}/predict", one, 20)
            if label == "own_process":  # the first big request starts the process: time it
                started = time.perf_counter()
                http.post("/predict", content=body, headers=JSON).raise_for_status()
                result["first_big_request_s"] = time.perf_counter() - started
            done = threading.Event()
            big_time: list[float] = []

            def send_big(done: threading.Event = done, big_time: list[float] = big_time) -> None:
                started = time.perf_counter()
                with httpx.Client(base_url=url, timeout=600) as own:
                    answer = own.post("/predict", content=body, headers=JSON)
                big_time.append(time.perf_counter() - started)
                done.set()
                answer.raise_for_status()

            sender = threading.Thread(target=send_big)
            sender.start()
            health, single = [], []
            while not done.is_set():
                started = time.perf_counter()
                http.get("/health").raise_for_status()
                health.append(time.perf_counter() - started)
                started = time.perf_counter()
                http.post("/predict", content=one, headers=JSON).raise_for_status()
                single.append(time.perf_counter() - started)
                time.sleep(0.02)
            sender.join()
        h, s = np.array(health) * 1000, np.array(single) * 1000
        result[label] = {
            "big_request_s": big_time[0],
            "health_samples": len(h),
            "health_p50_ms": float(np.percentile(h, 50)),
            "health_p99_ms": float(np.percentile(h, 99)),
            "health_max_ms": float(h.max()),
            "single_predict_p50_ms": float(np.percentile(s, 50)),
            "single_predict_p99_ms": float(np.percentile(s, 99)),
        }
        r = result[label]
        say(
            f"  finance  {n:,}-record request ({label}): {r['big_request_s']:.1f} s; /health "
            f"p50 {r['health_p50_ms']:.1f} ms, p99 {r['health_p99_ms']:.1f} ms, max "
            f"{r['health_max_ms']:.0f} ms; one record p99 {r['single_predict_p99_ms']:.1f} ms"
        )
    return result


# ------------------------------------------------------------------------------ C. uploads


def upload_rate(url: str, path: Path, clients: int, seconds: float) -> dict[str, Any]:
    data = path.read_bytes()
    stop = time.monotonic() + seconds

    def client(_: int) -> list[float]:
        times = []
        with httpx.Client(base_url=url, timeout=600) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                answer = http.post(
                    "/predict", params={"format": "summary"}, files={"file": (path.name, data)}
                )
                answer.raise_for_status()
                times.append(time.perf_counter() - started)
        return times

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for part in pool.map(client, range(clients)) for t in part]
    elapsed = time.perf_counter() - started
    ms = np.array(times) * 1000
    return {
        "files": len(times),
        "files_per_s": len(times) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def bench_uploads(vertical: str, bundle: Path, seconds: float, clients: int) -> dict[str, Any]:
    loaded = load_bundle(bundle)
    files = loaded.vertical.find_inputs(bundle / EXAMPLES)
    if not files:
        raise RuntimeError(f"{bundle} has no example files to upload")
    result: dict[str, Any] = {"clients": clients, "file": files[0].name}
    for label, batching in (("one_by_one", "off"), ("micro_batched", "on")):
        env = {SERVE_ENV: json.dumps({"batching": batching})}
        with serving(bundle, 1, env=env) as url:
            upload_rate(url, files[0], 1, 1.0)  # warm
            figures = upload_rate(url, files[0], clients, seconds)
            metrics = httpx.get(f"{url}/metrics").text
        calls = re.search(r"verticals_batch_inputs_count\S*\s+([\d.e+]+)", metrics)
        figures["model_calls"] = float(calls.group(1)) if calls else None
        result[label] = figures
        say(
            f"  {vertical:13} {label:13}: {figures['files_per_s']:.2f} files/s, "
            f"p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms"
        )
    result["batching_speedup"] = (
        result["micro_batched"]["files_per_s"] / result["one_by_one"]["files_per_s"]
    )
    return result


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__)
    args.add_argument("--seconds", type=float, default=8.0, help="each load run's duration")
    args.add_argument("--big-records", type=int, default=BIG_RECORDS)
    args.add_argument("--upload-clients", type=int, default=8)
    args.add_argument("--bundles", type=Path, default=None, help="reuse/keep trained bundles")
    args.add_argument("--only", nargs="*", default=None, help="verticals to measure")
    opts = args.parse_args(argv)
    wanted = opts.only or [*RECORD_VERTICALS, *FILE_VERTICALS]
    root = opts.bundles or Path(tempfile.mkdtemp(prefix="verticals-bench-serving-"))
    results: dict[str, Any] = {"load_client": "wrk" if shutil.which("wrk") else "httpx"}
    say(f"load client: {results['load_client']}; bundles under {root}")
    with tempfile.TemporaryDirectory() as tmp:
        for vertical in wanted:
            bundle = bundle_for(vertical, root, opts.device)
            if vertical in RECORD_VERTICALS:
                say(f"A. {vertical}: one record, suite vs floor")
                results[vertical] = bench_record(vertical, bundle, opts.seconds, Path(tmp))
                if vertical == "finance":
                    say(f"B. finance: /health during a {opts.big_records:,}-record request")
                    results["big_request"] = bench_big(bundle, opts.big_records, Path(tmp))
            else:
                say(f"C. {vertical}: uploads, micro-batching off and on")
                results[vertical] = bench_uploads(
                    vertical, bundle, opts.seconds, opts.upload_clients
                )
    print_summary(results)
    write_figures(opts.out, results)
    return results


def _pair(figures: dict[str, float]) -> str:
    return f"{figures['p50_ms']:.2f}/{figures['p99_ms']:.2f}"


def print_summary(results: dict[str, Any]) -> None:
    rows = []
    for v in RECORD_VERTICALS:
        if v not in results:
            continue
        r = results[v]
        for w in (1, 2):
            s1, s8 = r[f"suite_w{w}_c1"], r[f"suite_w{w}_c8"]
            f1, f8 = r[f"floor_w{w}_c1"], r[f"floor_w{w}_c8"]
            rows.append(
                (v, w, _pair(s1), _pair(f1), _pair(s8), f"{s8['requests_per_s']:.0f}",
                 f"{f8['requests_per_s']:.0f}")
            )  # fmt: skip
    if rows:
        frame = pd.DataFrame(
            rows,
            columns=["vertical", "workers", "suite c1 p50/p99 ms", "floor c1 p50/p99 ms",
                     "suite c8 p50/p99 ms", "suite c8 req/s", "floor c8 req/s"],
        )  # fmt: skip
        say("\n" + frame.to_string(index=False))
        for v in RECORD_VERTICALS:
            if v in results:
                r = results[v]
                say(
                    f"{v}: p50 {r['p50_ratio_to_floor_c1']:.2f}x the floor at 1 client; floor "
                    f"serves {r['throughput_ratio_to_floor_w2_c8']:.2f}x the suite's req/s at 8 "
                    f"clients, 2 workers; 2 workers give {r['workers_speedup_c8']:.2f}x 1 worker"
                )
    for v in FILE_VERTICALS:
        if v in results:
            say(f"{v}: micro-batching gives {results[v]['batching_speedup']:.2f}x files/s")


if __name__ == "__main__":
    main()
