"""Benchmark the medical vertical: its data pipeline and inference against plain MONAI, and
its default recipe on real data.

A. training throughput (patches/s): the suite's pipeline (CacheDataset of preprocessed
   volumes with cached foreground/background indices, thread loader) vs a plain MONAI
   `Dataset` + `DataLoader` over the same files with the same transforms, model, loss and
   optimiser, for the same number of steps;
B. sliding-window inference (volumes/s): the suite's `segment` (preprocess, sliding window,
   map back to the input's grid) vs `sliding_window_inference` alone on volumes already
   loaded and preprocessed;
C. with `VERTICALS_DATA_DIR` holding `hippocampus/` (Decathlon Task04): `experiment=hippocampus`
   trained for `--minutes` and scored per label on its held-out 20%; on a GPU also the time
   until validation Dice first reached 0.85.

A and B use the hippocampus volumes when present, else the synthetic phantoms.

    python benchmarks/medical.py [--device auto] [--steps 40] [--minutes 8] [--skip-quality]
                                 [--out results.json]
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
import torch  # noqa: E402
from common import say  # noqa: E402
from monai.data import DataLoader, Dataset  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline, registry  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.medical import networks  # noqa: E402
from verticals.medical.model import MedicalModel, segment  # noqa: E402
from verticals.medical.training import datasets, recipe, train_loader  # noqa: E402
from verticals.medical.transforms import IMAGE, LABEL, augmentation, preprocessing  # noqa: E402

REFERENCE = "plain MONAI 3D UNet (1.2M), padded 48x64x48, DiceCE, batch 8: 0.85 / 0.84 in ~8 min"


def hippocampus() -> Path | None:
    return common.real_data("hippocampus", "dataset.json")


def config(tmp: Path, device: str, data_root: Path | None, *extra: str) -> DictConfig:
    base = [f"paths.root_dir={tmp}", f"trainer.device={device}"]
    if data_root:
        base += ["experiment=hippocampus", f"data.root={data_root}"]
    else:
        base += ["data.n_cases=24", "data.shape=[64,64,64]"]
    return compose("train", "medical", [*base, *extra])


def _network(cfg: DictConfig, n_labels: int, device: str) -> Any:
    torch.manual_seed(0)
    net_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = networks.build(net_cfg, 1, n_labels).to(device)
    if device == "cpu" and cfg.training.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    return net


def _steps(loader: Any, net: Any, device: str, steps: int, warmup: int = 3) -> float:
    """Patches per second over `steps` training steps (after `warmup` untimed ones)."""
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    fmt = torch.channels_last_3d if device == "cpu" else torch.contiguous_format
    done, patches, started = 0, 0, 0.0
    while done < steps + warmup:
        for batch in loader:
            if done == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                started, patches = time.perf_counter(), 0
            x = batch[IMAGE].as_tensor().to(device, non_blocking=True)
            x = x.contiguous(memory_format=fmt)
            y = batch[LABEL].as_tensor().to(device, non_blocking=True)
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            patches += x.shape[0]
            done += 1
            if done >= steps + warmup:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return patches / (time.perf_counter() - started)


def bench_pipeline(cfg: DictConfig, device: str, steps: int) -> dict[str, Any]:
    vertical = registry.get("medical")
    splits = vertical.load_data(cfg)
    prep = recipe(cfg, splits.info)
    n_labels = len(splits.info["labels"])
    net_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    log = logging.getLogger("bench")

    started = time.perf_counter()
    train_ds, _, roi = datasets(
        cfg, splits, prep, networks.divisor(net_cfg), log, None, networks.min_side(net_cfg)
    )
    cache_seconds = time.perf_counter() - started
    suite = _steps(
        train_loader(cfg, train_ds, device), _network(cfg, n_labels, device), device, steps
    )

    data = cfg.data
    crop = RandCropByPosNegLabeld(
        [IMAGE, LABEL],
        LABEL,
        roi,
        pos=data.pos_fraction,
        neg=1 - data.pos_fraction,
        num_samples=data.samples_per_volume,
    )
    raw_chain = Compose(
        preprocessing(prep)
        + [SpatialPadd([IMAGE, LABEL], roi), crop]
        + augmentation(roi, 1, 0.5, [0], bool(data.augment), float(data.affine_prob))[1:]
    )
    raw_loader = DataLoader(
        Dataset(splits.train, raw_chain),
        batch_size=cfg.training.batch_size,
        shuffle=True,
        num_workers=int(data.num_workers),
    )
    raw = _steps(raw_loader, _network(cfg, n_labels, device), device, steps)
    return {
        "volumes": len(splits.train),
        "patch": roi,
        "batch": f"{cfg.training.batch_size} volumes x {data.samples_per_volume} patches",
        "steps": steps,
        "cache_build_s": round(cache_seconds, 2),
        "suite_patches_per_s": round(suite, 2),
        "raw_patches_per_s": round(raw, 2),
        "speedup": round(suite / raw, 2),
        "splits": splits,
        "prep": prep,
        "roi": roi,
    }


def bench_inference(cfg: DictConfig, part_a: dict[str, Any], device: str, n: int = 10) -> dict:
    dev = resolve_device(device)
    splits, prep, roi = part_a["splits"], part_a["prep"], part_a["roi"]
    labels = {int(k): v for k, v in splits.info["labels"].items()}
    net = _network(cfg, len(labels), dev.kind).to(memory_format=torch.contiguous_format).eval()
    net_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = MedicalModel(
        net,
        net_cfg,
        prep,
        labels,
        1,
        roi,
        int(cfg.training.sw_batch_size),
        float(cfg.training.sw_overlap),
        dev.kind,
        dev.precision if dev.is_cuda else "fp32",
    )
    items = (splits.test * n)[:n]
    segment(model, Path(items[0]["image"]))  # warm up
    started = time.perf_counter()
    for item in items:
        segment(model, Path(item["image"]))
    suite = len(items) / (time.perf_counter() - started)

    chain = Compose(preprocessing(prep, with_label=False))
    loaded = [chain({IMAGE: item["image"]})[IMAGE].as_tensor()[None].to(dev.kind) for item in items]
    started = time.perf_counter()
    with torch.inference_mode():
        for x in loaded:
            sliding_window_inference(
                x, roi, model.sw_batch_size, net, model.sw_overlap, mode="gaussian"
            ).argmax(1).cpu()
    raw = len(items) / (time.perf_counter() - started)
    return {
        "volumes": len(items),
        "suite_volumes_per_s": round(suite, 2),
        "raw_sliding_window_volumes_per_s": round(raw, 2),
        "ratio": round(suite / raw, 2),
    }


def bench_quality(tmp: Path, device: str, root: Path, minutes: float) -> dict[str, Any]:
    cfg = config(tmp, device, root, f"training.max_minutes={minutes}")
    started = time.perf_counter()
    result = pipeline.train(cfg)
    seconds = time.perf_counter() - started
    history = result.model.history
    reached = next((h["seconds"] for h in history if h["val_dice"] >= 0.85), None)
    m = result.metrics
    return {
        "dice_anterior": round(m["dice_Anterior"], 4),
        "dice_posterior": round(m["dice_Posterior"], 4),
        "hd95_mean_mm": round(m["hd95_mean"], 3),
        "epochs": len(history),
        "train_and_eval_s": round(seconds, 1),
        "time_to_val_dice_0.85_s": reached,
        "test_cases": int(m["n_cases"]),
        "run": str(result.run_dir),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps in part A")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget in part C")
    parser.add_argument("--skip-quality", action="store_true", help="skip part C")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("verticals").setLevel(logging.WARNING)
    dev = resolve_device(args.device)
    root = hippocampus()
    say(
        f"medical benchmark on {dev} ({os.cpu_count()} cores, torch {torch.__version__}, "
        f"python {platform.python_version()}); data: {root or 'synthetic phantoms'}"
    )
    results: dict[str, Any] = {"device": str(dev), "data": str(root or "phantoms")}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), args.device, root)
        a = bench_pipeline(cfg, dev.kind, args.steps)
        say(
            f"A. training: suite {a['suite_patches_per_s']} patches/s vs plain Dataset+DataLoader "
            f"{a['raw_patches_per_s']} -> x{a['speedup']} (patch {a['patch']}, cache built in "
            f"{a['cache_build_s']} s)"
        )
        b = bench_inference(cfg, a, args.device)
        say(
            f"B. inference: suite {b['suite_volumes_per_s']} volumes/s (with preprocessing and "
            f"inversion) vs sliding window alone {b['raw_sliding_window_volumes_per_s']} "
            f"-> ratio {b['ratio']}"
        )
        results["pipeline"] = {k: v for k, v in a.items() if k not in ("splits", "prep", "roi")}
        results["inference"] = b
        if root and not args.skip_quality:
            c = bench_quality(Path(tmp), args.device, root, args.minutes)
            say(
                f"C. hippocampus: Dice anterior {c['dice_anterior']} / posterior "
                f"{c['dice_posterior']} on {c['test_cases']} held-out cases after "
                f"{c['epochs']} epochs, {c['train_and_eval_s']} s (reference: {REFERENCE})"
            )
            if c["time_to_val_dice_0.85_s"] is not None:
                say(f"   validation Dice reached 0.85 after {c['time_to_val_dice_0.85_s']:.0f} s")
            results["hippocampus"] = c
        elif not root:
            say("C. skipped: set VERTICALS_DATA_DIR to a folder holding hippocampus/")
    common.write_figures(args.out, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
