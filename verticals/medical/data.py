"""The vertical's data sources -> train/val/test lists of Decathlon cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from verticals.core.contract import Splits
from verticals.core.errors import UserError
from verticals.medical.decathlon import Task, check_cases, read_task
from verticals.medical.synthetic import dataset_key, write_dataset


def task_root(cfg: DictConfig) -> Path | None:
    """The Decathlon folder to read: the user's, or the generated phantoms (made once)."""
    data = cfg.data
    if data.source == "decathlon":
        return Path(data.root) if data.root else None
    if data.source == "synthetic":
        if data.n_cases < 3:
            raise UserError(f"data.n_cases={data.n_cases}: need at least 3 (train, val, test)")
        shape = [int(s) for s in data.shape]
        if len(shape) != 3 or min(shape) < 16:
            raise UserError(f"data.shape={shape}: give three sizes of at least 16 voxels")
        seed = int(cfg.seed)
        key = dataset_key(int(data.n_cases), shape, float(data.voxel_mm), seed)
        folder = Path(cfg.paths.cache_dir) / "medical" / f"phantoms-{key}"
        return write_dataset(folder, int(data.n_cases), shape, float(data.voxel_mm), seed)
    raise UserError(f"data.source={data.source!r} is not one of synthetic, decathlon")


def items(cases: list[Any]) -> list[dict[str, str]]:
    return [{"image": str(c.image), "label": str(c.label), "name": c.name} for c in cases]


def load_splits(cfg: DictConfig) -> Splits:
    """The configured task, checked case by case, split into train/val/test by `cfg.seed`."""
    data, seed = cfg.data, int(cfg.seed)  # ranges: MedicalDataConfig.__post_init__
    task = read_task(task_root(cfg))
    cases = task.cases[: data.max_cases] if data.max_cases else task.cases
    if len(cases) < 3:
        raise UserError(f"{task.root}: {len(cases)} labelled case(s); need at least 3")
    check_cases(Task(task.root, task.name, task.labels, task.modality, cases))
    order = np.random.default_rng(seed).permutation(len(cases))
    n_test = max(1, round(len(cases) * float(data.test_fraction)))
    n_val = max(1, round(len(cases) * float(data.val_fraction)))
    test = [cases[i] for i in order[:n_test]]
    val = [cases[i] for i in order[n_test : n_test + n_val]]
    train = [cases[i] for i in order[n_test + n_val :]]
    if not train:
        raise UserError(
            f"{task.root}: {len(cases)} cases leave none to train on after {n_test} test and "
            f"{n_val} validation cases; lower data.test_fraction / data.val_fraction"
        )
    info = {
        "source": data.source,
        "root": str(task.root),
        "task": task.name,
        "modality": {str(k): v for k, v in task.modality.items()},
        "labels": {str(k): v for k, v in task.labels.items()},
        "is_ct": task.is_ct,
        "cases": {"train": len(train), "val": len(val), "test": len(test)},
    }
    return Splits(items(train), items(val), items(test), info)
