"""The vertical's data sources -> a checked YOLO data set and its train/val/test splits."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from verticals.core.cache import key
from verticals.core.config import require_int
from verticals.core.contract import Splits
from verticals.core.errors import UserError
from verticals.manufacturing import checks, dataset, synthetic, voc


def data_yaml(cfg: DictConfig) -> Path:
    """The data.yaml to train from: the user's, a converted VOC set, or generated surfaces."""
    data, cache = cfg.data, Path(cfg.paths.cache_dir)
    seed = int(cfg.seed)
    if data.source == "yolo":
        if not data.yaml:
            raise UserError("data.yaml is not set: give the YOLO data set's data.yaml")
        return Path(data.yaml).expanduser().resolve()
    if data.source == "voc":
        if not data.root:
            raise UserError("data.root is not set: give the folder with images and VOC .xml files")
        return voc.convert(
            data.root, cache, seed, float(data.val_fraction), float(data.test_fraction),
            data.images_dir, data.annotations_dir,
            list(data.classes) if data.classes else None, data.max_images,
        )  # fmt: skip
    if data.source == "synthetic":
        counts = {
            s: require_int(data[f"n_{s}"], f"data.n_{s}", minimum=1)
            for s in ("train", "val", "test")
        }
        size = require_int(data.image_size, "data.image_size", minimum=32)
        if size % 32:
            raise UserError(f"data.image_size={size}: use a multiple of 32 (YOLO's stride)")
        if not 0 <= float(data.defect_free) < 1:
            raise UserError(f"data.defect_free={data.defect_free}: expected a share in [0, 1)")
        max_defects = require_int(data.max_defects, "data.max_defects", minimum=1)
        free = float(data.defect_free)
        folder = (
            cache
            / "manufacturing"
            / f"surfaces-{synthetic.dataset_key(counts, size, max_defects, free, seed)}"
        )
        return synthetic.write_dataset(folder, counts, size, max_defects, free, seed) / "data.yaml"
    raise UserError(f"data.source={data.source!r} is not one of synthetic, yolo, voc")


def _signature(parts: dict[str, dataset.ImageSet]) -> list:
    """What the user's files look like now: a changed image or label makes a new mirror."""
    stamp = []
    for split, part in parts.items():
        for image in part.images:
            label = dataset.label_path(image)
            stat = label.stat() if label.is_file() else None
            stamp.append((split, str(image), image.stat().st_mtime_ns,
                          stat.st_mtime_ns if stat else None))  # fmt: skip
    return stamp


def load_splits(cfg: DictConfig) -> Splits:
    path = data_yaml(cfg)
    parts = dataset.load(path)
    checks.check(parts)
    if cfg.data.source == "yolo":  # hand ultralytics a normalised copy (see dataset.mirror)
        folder = (
            Path(cfg.paths.cache_dir)
            / "manufacturing"
            / f"yolo-{key(str(path), _signature(parts))}"
        )
        parts = dataset.load(dataset.mirror(parts, folder))
    test = parts.get("test", parts["val"])
    info = {
        "source": str(cfg.data.source),
        "data_yaml": str(path),  # the user's (a yolo data set trains from its cached copy)
        "classes": ", ".join(parts["train"].names),
        **{f"n_{k}": len(v) for k, v in parts.items()},
        "test_split": test.split,
    }
    return Splits(parts["train"], parts["val"], test, info)
