"""Feedback and monitoring hooks of the file verticals (medical, manufacturing): statistics
of real predictions, outcome schemas, outcome-file checks, monitor frames and live metrics
on planted outcomes. Each vertical trains its seconds-long `debug=fast` model once."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from verticals.configs import compose  # noqa: E402
from verticals.core import registry  # noqa: E402
from verticals.core.contract import FileOutput, Logged, RunContext  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402

needs_monai = pytest.mark.skipif(
    importlib.util.find_spec("monai") is None, reason="monai is not installed"
)
needs_ultralytics = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed"
)


@dataclasses.dataclass
class Fitted:
    vertical: Any
    model: Any
    splits: Any
    root: Path


def fit_fast(name: str, root: Path, *overrides: str) -> Fitted:
    """The vertical's own load_data + fit on its `debug=fast` config (no run folder, card or
    bundle: only the model is needed here)."""
    cfg = compose(
        "train", name, [f"paths.root_dir={root}", "trainer.device=cpu", "debug=fast", *overrides]
    )
    vertical = registry.get(name)
    splits = vertical.load_data(cfg)
    ctx = RunContext(root / "run", resolve_device("cpu"), int(cfg.seed), logging.getLogger(name))
    return Fitted(vertical, vertical.fit(cfg, splits, ctx), splits, root)


def logged(i: int, path: Path, out: FileOutput, folder: Path, **files: Path) -> Logged:
    """What the core logs for one file prediction, the output file kept (`keep_outputs`)."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{i}-output{out.suffix}"
    kept.write_bytes(out.content)
    facts = {"name": path.name, "size": path.stat().st_size, "statistics": out.statistics}
    return Logged(f"req-{i}", facts, out.summary, files={"output": kept, **files})


# -- medical --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def medical(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    return fit_fast("medical", tmp_path_factory.mktemp("medical"), "data.n_cases=10")


@pytest.fixture(scope="module")
def medical_entries(medical: Fitted) -> list[tuple[Path, Logged]]:
    paths = medical.vertical.example_files(medical.splits, 4, medical.root / "examples")
    assert paths
    outs = [medical.vertical.predict_path(medical.model, p) for p in paths]
    return [
        (path, logged(i, path, out, medical.root / "log"))
        for i, (path, out) in enumerate(zip(paths, outs, strict=True))
    ]


def mask_of(entry: Logged) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.Nifti1Image.from_bytes(gzip.decompress(entry.files["output"].read_bytes()))
    return np.asarray(image.dataobj), image.affine


def write_mask(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)
    return path


@needs_monai
def test_medical_statistics_describe_the_volume(medical, medical_entries) -> None:
    import nibabel as nib

    path, entry = medical_entries[0]
    stats = entry.inputs["statistics"]
    volume = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    assert stats["intensity_mean"] == pytest.approx(volume.mean(), abs=1e-3)
    assert stats["intensity_std"] == pytest.approx(volume.std(), abs=1e-3)
    assert stats["intensity_p1"] < stats["intensity_mean"] < stats["intensity_p99"]
    assert [stats["spacing_x"], stats["spacing_y"], stats["spacing_z"]] == entry.outputs[
        "spacing_mm"
    ]
    assert stats["voxels"] == np.prod(entry.outputs["shape"])
    # a scan with half the intensities (another calibration) shows in its statistics
    image = nib.load(path)
    half = medical.root / "half.nii.gz"
    nib.save(nib.Nifti1Image(volume * 0.5, image.affine), half)
    dimmer = medical.vertical.predict_path(medical.model, half).statistics
    assert dimmer["intensity_mean"] == pytest.approx(stats["intensity_mean"] / 2, rel=1e-4)
    assert dimmer["intensity_p99"] < stats["intensity_p99"]


@needs_monai
def test_medical_outcome_schema_takes_a_note_and_nothing_else(medical) -> None:
    schema = medical.vertical.outcome_schema(medical.model)
    assert medical.vertical.outcome_file == "mask" and medical.vertical.keep_outputs
    schema.model_validate({})
    assert schema.model_validate({"note": "lesion missed"}).note == "lesion missed"
    with pytest.raises(ValidationError, match="volume_ml"):
        schema.model_validate({"volume_ml": 3.0})


@needs_monai
def test_medical_outcome_file_must_be_a_mask_of_the_input_grid(
    medical, medical_entries, tmp_path: Path
) -> None:
    check = medical.vertical.check_outcome_file
    _, entry = medical_entries[0]
    mask, affine = mask_of(entry)
    shape = list(mask.shape)
    # the prediction itself is a fine correction, under whatever name the store keeps it
    same = tmp_path / "upload"
    same.write_bytes(entry.files["output"].read_bytes())
    check(same, entry)
    check(write_mask(tmp_path / "plain.nii", mask, affine), entry)  # not gzipped

    small = write_mask(tmp_path / "small.nii.gz", mask[:16], affine)
    message = f"shape {[16, *shape[1:]]}; expected {shape}"
    with pytest.raises(UserError, match=re.escape(message)):
        check(small, entry)
    coarse = write_mask(tmp_path / "coarse.nii.gz", mask, np.diag([3.0, 3.0, 3.0, 1.0]))
    with pytest.raises(UserError, match=r"voxel size \[3.0, 3.0, 3.0\] mm; expected"):
        check(coarse, entry)
    odd = mask.copy()
    odd[0, 0, 0] = 7
    with pytest.raises(UserError, match=r"label values \[7\]; expected values among 0 "):
        check(write_mask(tmp_path / "odd.nii.gz", odd, affine), entry)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a volume")
    with pytest.raises(UserError, match="junk.nii.gz cannot be read as a NIfTI mask"):
        check(junk, entry)


@needs_monai
def test_medical_monitor_frame_has_statistics_and_volumes(medical, medical_entries) -> None:
    entries = [entry for _, entry in medical_entries]
    frame = medical.vertical.monitor_frame(medical.model, entries)
    assert len(frame) == len(entries)
    names = list(medical.model.foreground.values())
    assert {f"volume_ml.{n}" for n in names} <= set(frame.columns)
    assert {"intensity_mean", "intensity_p99", "spacing_z", "voxels"} <= set(frame.columns)
    first = entries[0].outputs["volumes_ml"]
    assert frame.loc[0, f"volume_ml.{names[0]}"] == first[names[0]]
    for column in frame.columns:  # numbers only: each is compared as a distribution
        assert frame[column].dtype.kind == "f", column
    # without the inputs (`log.inputs=none`) the outputs' columns remain
    blind = medical.vertical.monitor_frame(
        medical.model, [dataclasses.replace(entries[0], inputs=None)]
    )
    assert list(blind.columns) == [f"volume_ml.{n}" for n in names]


@needs_monai
def test_medical_live_dice_against_corrected_masks(medical, medical_entries, tmp_path) -> None:
    vertical, model = medical.vertical, medical.model
    names = list(model.foreground.values())

    def corrected(make) -> list[Logged]:
        out = []
        for i, (_, entry) in enumerate(medical_entries):
            mask, affine = mask_of(entry)
            path = write_mask(tmp_path / f"{i}-{make.__name__}.nii.gz", make(mask, i), affine)
            out.append(
                dataclasses.replace(entry, outcome={}, files={**entry.files, "outcome": path})
            )
        return out

    def same(mask: np.ndarray, i: int) -> np.ndarray:
        return mask

    def empty(mask: np.ndarray, i: int) -> np.ndarray:
        return np.zeros_like(mask)

    def shifted(mask: np.ndarray, i: int) -> np.ndarray:
        return np.roll(mask, 4, axis=0)

    perfect = vertical.live_metrics(model, corrected(same))
    assert perfect["dice_mean"] == 1.0 and perfect["corrected_cases"] == len(medical_entries)
    predicted = {n for _, e in medical_entries for n in names if e.outputs["volumes_ml"][n] > 0}
    assert {f"dice_{n}" for n in predicted} <= set(perfect)
    assert vertical.live_metrics(model, corrected(empty))["dice_mean"] == 0.0
    assert 0.0 < vertical.live_metrics(model, corrected(shifted))["dice_mean"] < 1.0

    # corrected masks equal to the test labels: live Dice is the test split's Dice
    truths = {Path(item["image"]).name: Path(item["label"]) for item in medical.splits.test}
    labelled = [
        dataclasses.replace(e, outcome={}, files={**e.files, "outcome": truths[p.name]})
        for p, e in medical_entries
    ]
    live = vertical.live_metrics(model, labelled)
    test = vertical.evaluate(model, medical.splits.test[: len(labelled)])
    for key in [f"dice_{n}" for n in names] + ["dice_mean"]:
        if np.isnan(test[key]):
            assert key not in live
        else:
            assert live[key] == pytest.approx(test[key], abs=1e-9), key
    # an entry without its files (not kept) is not a corrected case
    bare = dataclasses.replace(medical_entries[0][1], outcome={"note": "x"}, files={})
    assert vertical.live_metrics(model, [bare]) == {"corrected_cases": 0.0}


# -- manufacturing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manufacturing(tiny, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """The session's tiny manufacturing run (`debug=fast`), with a folder of this module's."""
    run, _ = tiny("manufacturing")
    return Fitted(run.vertical, run.model, run.splits, tmp_path_factory.mktemp("manufacturing"))


@pytest.fixture(scope="module")
def inspected(manufacturing: Fitted) -> list[tuple[Path, Logged]]:
    """Logged inspections with both decisions: half by the trained model, half by the same
    model with a fail threshold every detection reaches (a two-epoch model fails nothing)."""
    vertical, model = manufacturing.vertical, manufacturing.model
    paths = vertical.example_files(manufacturing.splits, 8, manufacturing.root / "examples")
    strict = dataclasses.replace(
        model, inspection={**model.inspection, "conf": 1e-4, "fail_threshold": 1e-4}
    )
    half = len(paths) // 2
    outs = vertical.predict_paths(model, paths[:half]) + vertical.predict_paths(
        strict, paths[half:]
    )
    entries = [
        (path, logged(i, path, out, manufacturing.root / "log"))
        for i, (path, out) in enumerate(zip(paths, outs, strict=True))
    ]
    decisions = [entry.outputs["decision"] for _, entry in entries]
    assert set(decisions) == {"pass", "fail"}, decisions
    return entries


@needs_ultralytics
def test_manufacturing_statistics_see_brightness(manufacturing, inspected, tmp_path) -> None:
    from PIL import Image

    vertical, model = manufacturing.vertical, manufacturing.model
    path, entry = inspected[0]
    stats = entry.inputs["statistics"]
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    assert stats["brightness"] == pytest.approx(grey.mean(), abs=1.0)
    assert stats["contrast"] == pytest.approx(grey.std(), abs=1.0)
    assert (stats["width"], stats["height"]) == (grey.shape[1], grey.shape[0])
    assert vertical.predict_path(model, path).statistics == stats  # one image or a batch
    dark = tmp_path / "dark.png"
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    Image.fromarray((rgb * 0.5).astype(np.uint8)).save(dark)
    darker = vertical.predict_path(model, dark).statistics
    assert darker["brightness"] == pytest.approx(stats["brightness"] / 2, abs=1.0)
    assert darker["contrast"] < stats["contrast"]


@needs_ultralytics
def test_manufacturing_outcome_schema_checks_verdict_and_label_lines(manufacturing) -> None:
    schema = manufacturing.vertical.outcome_schema(manufacturing.model)
    n = len(manufacturing.model.names)
    assert schema.model_validate({"verdict": "pass"}).boxes is None
    good = {"verdict": "fail", "boxes": [f"{n - 1} 0.5 0.5 0.2 0.1", "0 0 1 1 1"]}
    assert schema.model_validate(good).boxes == good["boxes"]
    bad = [
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "fail", "defects": 2}, "defects"),
        ({"verdict": "fail", "boxes": ["0 0.5 0.5 0.2 0.1", f"{n} 0.5 0.5 0.2 0.1"]},
         rf"line 1 '{n} 0.5 0.5 0.2 0.1': class {n} is not one of the model's classes \(0 "),
        ({"verdict": "fail", "boxes": ["0 0.5 1.5 0.2 0.1"]}, r"cy=1.5 is outside \[0, 1\]"),
        ({"verdict": "fail", "boxes": ["0 0.5 0.5 0.2"]}, "has 4 fields; expected 5"),
        ({"verdict": "fail", "boxes": ["crack 0.5 0.5 0.2 0.1"]}, "'crack' is not a class number"),
        ({"verdict": "fail", "boxes": ["0 0.5 0.5 0.2 wide"]}, "h 'wide' is not a number"),
    ]  # fmt: skip
    for outcome, message in bad:
        with pytest.raises(ValidationError, match=message):
            schema.model_validate(outcome)


@needs_ultralytics
def test_manufacturing_monitor_frame(manufacturing, inspected) -> None:
    entries = [entry for _, entry in inspected]
    frame = manufacturing.vertical.monitor_frame(manufacturing.model, entries)
    assert len(frame) == len(entries)
    expected = {"brightness", "contrast", "width", "height", "decision", "n_detections"}
    assert expected | {"max_confidence"} <= set(frame.columns)
    assert not {"detections", "failed_classes"} & set(frame.columns)  # lists are no columns
    assert set(frame["decision"]) == {"pass", "fail"}
    tops = [max((d["confidence"] for d in e.outputs["detections"]), default=0.0) for e in entries]
    assert frame["max_confidence"].tolist() == tops


@needs_ultralytics
def test_manufacturing_live_metrics_against_the_inspector(manufacturing, inspected) -> None:
    vertical, model = manufacturing.vertical, manufacturing.model
    entries = [entry for _, entry in inspected]

    def judged(verdict_of) -> list[Logged]:
        return [
            dataclasses.replace(e, outcome={"verdict": verdict_of(e.outputs["decision"])})
            for e in entries
        ]

    agree = vertical.live_metrics(model, judged(lambda d: d))
    assert agree == {
        "decision_accuracy": 1.0,
        "escape_rate": 0.0,
        "false_reject_rate": 0.0,
        "inspected": float(len(entries)),
    }
    flipped = vertical.live_metrics(model, judged(lambda d: "pass" if d == "fail" else "fail"))
    assert flipped["decision_accuracy"] == 0.0
    assert flipped["escape_rate"] == 1.0 and flipped["false_reject_rate"] == 1.0
    # every part good by the inspector: no escape rate to speak of
    good = vertical.live_metrics(model, judged(lambda d: "pass"))
    assert "escape_rate" not in good
    passed = sum(e.outputs["decision"] == "pass" for e in entries)
    assert good["decision_accuracy"] == passed / len(entries)
    assert good["false_reject_rate"] == 1 - passed / len(entries)
    assert vertical.live_metrics(model, []) == {"inspected": 0.0}
