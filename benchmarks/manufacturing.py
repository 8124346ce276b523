"""Benchmark the manufacturing vertical: inference runtimes, training overhead, real data.

A. inference (images/s) at the configured image size, one image per call as on the line:
   the bundle's ONNX Runtime model vs the same weights in PyTorch, both through
   `DefectModel.detect` (ultralytics' pre- and post-processing), and the suite's whole
   `/predict` path (read the file, detect, decide, draw the annotated JPEG);
B. training (seconds per epoch): the suite's `pipeline.train` (data checks, offline
   settings, evaluation and ONNX export excluded from the epoch time) vs raw ultralytics
   `YOLO(yaml).train(...)` with the same arguments on the same data set;
C. with `VERTICALS_DATA_DIR` holding `neu-det/` (NEU surface defects, Pascal VOC):
   `experiment=neu_det` trained for `--neu-epochs` and scored per class on its held-out
   15%. From scratch on 2 CPU cores an epoch takes over two minutes, so the CPU figure is a
   short budget's; published YOLOv8 results (pretrained, 100+ GPU epochs) are mAP50
   0.75-0.79;
D. thread safety under a server's thread pool: the suite's one model behind a lock vs one
   model per thread, images/s with `--threads` concurrent callers.

    python benchmarks/manufacturing.py [--device auto] [--epochs 3] [--neu-epochs 3]
                                       [--skip-neu] [--threads 4] [--out results.json]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import common  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import say  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.manufacturing.model import read_image  # noqa: E402
from verticals.manufacturing.offline import ultralytics  # noqa: E402

REFERENCE = "published YOLOv8 on NEU-DET (pretrained, 100+ GPU epochs): mAP50 0.75-0.79"


def neu_det() -> Path | None:
    return common.real_data("neu-det", "ANNOTATIONS")


def config(tmp: Path, device: str, *extra: str) -> DictConfig:
    return compose(
        "train",
        "manufacturing",
        # every configured epoch, also on a CPU: the raw run gets the same arguments
        [f"paths.root_dir={tmp}", f"trainer.device={device}", "training.cpu_minutes=null", *extra],
    )


def epoch_seconds(results_csv: Path) -> float:
    """Mean seconds per epoch from ultralytics' results.csv (cumulative `time` column)."""
    frame = pd.read_csv(results_csv)
    frame.columns = [c.strip() for c in frame.columns]
    return float(frame["time"].iloc[-1] / len(frame))


def bench_training(tmp: Path, device: str, epochs: int) -> tuple[dict[str, Any], Any]:
    from verticals.manufacturing.training import model_yaml, train_args

    cfg = config(tmp, device, "experiment=demo", f"training.epochs={epochs}")
    started = time.perf_counter()
    result = pipeline.train(cfg)
    suite_wall = time.perf_counter() - started
    suite_epoch = epoch_seconds(result.run_dir / "train" / "results.csv")

    from verticals.core.contract import RunContext

    ctx = RunContext(tmp / "raw", resolve_device(device), int(cfg.seed), logging.getLogger("raw"))
    args = train_args(cfg, result.splits, ctx)  # the very arguments the suite passed
    raw = ultralytics().YOLO(model_yaml(cfg.model), task="detect")
    started = time.perf_counter()
    raw.train(**args)
    raw_wall = time.perf_counter() - started
    raw_epoch = epoch_seconds(tmp / "raw" / "train" / "results.csv")
    figures = {
        "epochs": epochs,
        "images": len(result.splits.train),
        "imgsz": args["imgsz"],
        "suite_s_per_epoch": round(suite_epoch, 2),
        "raw_s_per_epoch": round(raw_epoch, 2),
        "ratio": round(suite_epoch / raw_epoch, 3),
        "suite_wall_s": round(suite_wall, 1),
        "raw_train_wall_s": round(raw_wall, 1),
        "suite_map50": round(result.metrics["map50"], 4),
    }
    return figures, result


def bench_inference(result: Any, tmp: Path, n: int) -> dict[str, Any]:
    bundle = load_bundle(write_bundle(result.run_dir, tmp / "bundles"))
    model, vertical = bundle.model, bundle.vertical
    paths = result.splits.test.images[:n]
    images = [read_image(p) for p in paths]
    rates = {}
    for runtime in ("torch", "onnxruntime"):
        for image in images[:3]:
            model.detect(image, runtime)  # warm up
        started = time.perf_counter()
        for image in images:
            model.detect(image, runtime)
        rates[runtime] = len(images) / (time.perf_counter() - started)
    started = time.perf_counter()
    for path in paths:
        vertical.predict_path(model, path)
    served = len(paths) / (time.perf_counter() - started)
    return {
        "bundle": str(bundle.path),
        "images": len(images),
        "imgsz": model.imgsz,
        "torch_images_per_s": round(rates["torch"], 1),
        "onnxruntime_images_per_s": round(rates["onnxruntime"], 1),
        "onnx_speedup": round(rates["onnxruntime"] / rates["torch"], 3),
        "predict_path_images_per_s": round(served, 1),
    }


def bench_concurrency(bundle_dir: Path, images: list[Any], threads: int) -> dict[str, Any]:
    """Images/s with `threads` callers at once (a server's thread pool): the suite's one
    model behind a lock vs one model per thread (each its own predictor and session)."""
    from concurrent.futures import ThreadPoolExecutor

    shared = load_bundle(bundle_dir).model
    own = [load_bundle(bundle_dir).model for _ in range(threads)]
    for model in [shared, *own]:
        model.warm_up()
    expected = [shared.detect(image) for image in images]

    def run(pick: Any) -> tuple[float, bool]:
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(lambda k: pick(k).detect(images[k]), range(len(images))))
        return len(images) / (time.perf_counter() - started), found == expected

    locked, same_locked = run(lambda k: shared)
    per_thread, same_own = run(lambda k: own[k % threads])
    return {
        "threads": threads,
        "lock_images_per_s": round(locked, 1),
        "model_per_thread_images_per_s": round(per_thread, 1),
        "ratio": round(per_thread / locked, 3),
        "same_detections": same_locked and same_own,
    }


def bench_neu(tmp: Path, device: str, root: Path, epochs: int) -> dict[str, Any]:
    cfg = config(
        tmp, device, "experiment=neu_det", f"data.root={root}", f"training.epochs={epochs}"
    )
    started = time.perf_counter()
    result = pipeline.train(cfg)
    m = result.metrics
    names = result.model.names
    return {
        "epochs": epochs,
        "train_and_eval_s": round(time.perf_counter() - started, 1),
        "map50": round(m["map50"], 4),
        "map50_95": round(m["map50_95"], 4),
        "ap50_per_class": {n: round(m.get(f"ap50/{n}", float("nan")), 4) for n in names},
        "test_images": int(m["n_images"]),
        "run": str(result.run_dir),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed in part B")
    parser.add_argument("--images", type=int, default=48, help="test images timed in part A")
    parser.add_argument("--neu-epochs", type=int, default=3, help="NEU-DET epochs in part C")
    parser.add_argument("--skip-neu", action="store_true", help="skip part C")
    parser.add_argument("--threads", type=int, default=4, help="concurrent callers in part D")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("verticals").setLevel(logging.WARNING)
    dev = resolve_device(args.device)
    say(
        f"manufacturing benchmark on {dev} ({os.cpu_count()} cores, torch {torch.__version__}, "
        f"ultralytics {ultralytics().__version__}, python {platform.python_version()})"
    )
    results: dict[str, Any] = {"device": str(dev)}
    with tempfile.TemporaryDirectory() as tmp:
        b, result = bench_training(Path(tmp), args.device, args.epochs)
        a = bench_inference(result, Path(tmp), args.images)
        say(
            f"A. inference at {a['imgsz']} px, one image per call: ONNX Runtime "
            f"{a['onnxruntime_images_per_s']} images/s vs PyTorch {a['torch_images_per_s']} "
            f"-> x{a['onnx_speedup']}; whole predict path (read, detect, decide, draw) "
            f"{a['predict_path_images_per_s']} images/s"
        )
        say(
            f"B. training, {b['images']} images at {b['imgsz']} px, {b['epochs']} epochs: suite "
            f"{b['suite_s_per_epoch']} s/epoch vs raw ultralytics {b['raw_s_per_epoch']} "
            f"-> ratio {b['ratio']} (suite wall time with checks, evaluation and export "
            f"{b['suite_wall_s']} s)"
        )
        results["inference"], results["training"] = a, b
        test_images = [read_image(p) for p in result.splits.test.images[: args.images]]
        d = bench_concurrency(Path(a["bundle"]), test_images, args.threads)
        say(
            f"D. {d['threads']} concurrent callers: one model behind a lock "
            f"{d['lock_images_per_s']} images/s vs one model per thread "
            f"{d['model_per_thread_images_per_s']} -> ratio {d['ratio']} (same detections: "
            f"{d['same_detections']})"
        )
        results["concurrency"] = d
        root = neu_det()
        if root and not args.skip_neu:
            c = bench_neu(Path(tmp), args.device, root, args.neu_epochs)
            per_class = ", ".join(f"{k} {v}" for k, v in c["ap50_per_class"].items())
            say(
                f"C. NEU-DET after {c['epochs']} epochs ({c['train_and_eval_s']} s): mAP50 "
                f"{c['map50']}, mAP50-95 {c['map50_95']} on {c['test_images']} held-out "
                f"images; per class: {per_class} ({REFERENCE})"
            )
            results["neu_det"] = c
        elif not root:
            say("C. skipped: set VERTICALS_DATA_DIR to a folder holding neu-det/")
    common.write_figures(args.out, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
