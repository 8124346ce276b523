"""Medical retraining: corrected masks join training, and a champion's holdout is kept as
files that score every model the same way (its per-case scores included)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monai")

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.contract import Logged  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.medical.synthetic import LABELS  # noqa: E402
from verticals.medical.transforms import IMAGE, LABEL, preprocessing  # noqa: E402

FAST = ["debug=fast", "data.test_fraction=0.34", "trainer.device=cpu"]  # 3 train, 1 val, 2 test


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    root = tmp_path_factory.mktemp("medical-retrain")
    return pipeline.train(compose("train", "medical", [f"paths.root_dir={root}", *FAST]))


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal dicts of floats, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


def store(root: Path, source: Path | np.ndarray, name: str, affine: np.ndarray | None = None):
    """A file as the log's content store keeps it: `<sha[:2]>/<sha>/<name>`."""
    folder = root / "ab" / f"ab{len(list(root.rglob('*'))):06d}"
    folder.mkdir(parents=True)
    if isinstance(source, Path):
        return Path(shutil.copy2(source, folder / name))
    nib.save(nib.Nifti1Image(source.astype(np.uint8), affine), folder / name)
    return folder / name


def entry(rid: str, labels: dict[str, str] | None = None, **files: Path) -> Logged:
    outputs = {"shape": [32, 32, 32], "labels": labels or LABELS}
    return Logged(rid, {"name": "input.nii.gz"}, outputs, {"mask": {}}, files=files)


def test_holdout_round_trip_gives_identical_metrics(
    run: pipeline.TrainResult, tmp_path: Path
) -> None:
    vertical, model, test = run.vertical, run.model, run.splits.test
    vertical.save_holdout(test, tmp_path / "saved")
    moved = tmp_path / "moved"  # self-contained: works wherever the folder goes
    (tmp_path / "saved").rename(moved)
    holdout = vertical.load_holdout(moved)
    assert [c["name"] for c in holdout] == [c["name"] for c in test]
    assert all(Path(c[p]).is_relative_to(moved) for c in holdout for p in ("image", "label"))
    direct = vertical.evaluate(model, test)
    assert same(vertical.evaluate(model, holdout), direct)
    assert same(direct, run.metrics)  # as the training run's own evaluation said
    assert (moved / "holdout.json").read_text().count(str(tmp_path)) == 0  # relative paths


def test_load_holdout_names_what_is_missing(run: pipeline.TrainResult, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a medical holdout folder"):
        run.vertical.load_holdout(tmp_path)
    run.vertical.save_holdout(run.splits.test[:1], tmp_path)
    next((tmp_path / "labels").iterdir()).unlink()
    with pytest.raises(UserError, match="label .* is missing"):
        run.vertical.load_holdout(tmp_path)


def test_score_cases_on_all_positions_equals_evaluate(run: pipeline.TrainResult) -> None:
    vertical, model, test = run.vertical, run.model, run.splits.test
    scores = vertical.score_cases(model, test)
    assert scores is not None and scores.n == len(test) == 2
    everything = scores.metrics(np.arange(scores.n))
    assert vertical.headline_metric in everything
    metrics = vertical.evaluate(model, test)
    for name, value in everything.items():
        assert value == pytest.approx(metrics[name], nan_ok=True, rel=1e-12), name
    once = scores.metrics(np.array([0, 0]))  # a resample: the first case twice
    assert once["dice_mean"] == pytest.approx(
        vertical.score_cases(model, test[:1]).metrics(np.array([0]))["dice_mean"], nan_ok=True
    )


def test_learn_from_adds_corrected_cases_to_training(
    run: pipeline.TrainResult, tmp_path: Path
) -> None:
    vertical, splits = run.vertical, run.splits
    image, label = Path(splits.test[0]["image"]), Path(splits.test[0]["label"])
    truth = np.asarray(nib.load(label).dataobj)
    affine = nib.load(image).affine
    logs = tmp_path / "files"
    volume = store(logs, image, "input.nii.gz")
    # another model's numbering (organ and vessel swapped): matched to training by name
    swapped = {"0": "background", "1": "vessel", "2": "lesion", "3": "organ"}
    renumbered = np.choose(truth, [0, 3, 2, 1])
    feedback = [
        entry("r1", input=volume, outcome=store(logs, truth, "mask.nii.gz", affine)),
        entry("r2", swapped, input=volume, outcome=store(logs, renumbered, "m.nii", affine)),
        entry("r3", outcome=store(logs, truth, "mask.nii.gz", affine)),  # log.keep_files off
        entry("r4", input=volume, output=volume),  # no correction posted
        entry("r5", input=volume, outcome=store(logs, truth[:16], "mask.nii.gz", affine)),
        entry("r6", input=volume, outcome=store(logs, truth + 4 * (truth == 3), "x.nii", affine)),
    ]
    cfg = compose("train", "medical", [f"paths.root_dir={tmp_path}", *FAST])
    learnt = vertical.learn_from(cfg, splits, feedback)
    assert learnt.train[: len(splits.train)] == splits.train
    added = learnt.train[len(splits.train) :]
    assert [c["image"] for c in added] == [str(volume)] * 2
    assert [c["name"] for c in added] == ["feedback_r1", "feedback_r2"]
    for case in added:
        staged = nib.load(case["label"])
        np.testing.assert_array_equal(np.asarray(staged.dataobj), truth)
        np.testing.assert_allclose(staged.affine, affine)
    assert learnt.info["feedback"] == {
        "cases": 2,
        "skipped": {"no_input": 1, "no_mask": 1, "grid": 1, "labels": 1},
    }
    assert learnt.info["cases"]["train"] == len(splits.train) + 2
    assert learnt.val == splits.val and learnt.test == splits.test
    assert "feedback" not in splits.info  # the given splits are left as they were
    # the pair loads through training's own preprocessing, voxel for voxel
    from monai.transforms import Compose

    loaded = Compose(preprocessing(run.model.prep))(dict(added[1]))
    assert loaded[IMAGE].shape == loaded[LABEL].shape


def test_learn_from_without_kept_inputs_says_how_to_fix(
    run: pipeline.TrainResult, tmp_path: Path
) -> None:
    truth = np.asarray(nib.load(run.splits.test[0]["label"]).dataobj)
    mask = store(tmp_path / "files", truth, "mask.nii.gz", np.eye(4))
    cfg = compose("train", "medical", [f"paths.root_dir={tmp_path}", *FAST])
    with pytest.raises(UserError, match=r"none of the 2 .*log\.keep_files=true"):
        run.vertical.learn_from(cfg, run.splits, [entry("a", outcome=mask), entry("b")])


def test_extend_holdout_adds_feedback_cases_that_evaluate_scores(
    run: pipeline.TrainResult, tmp_path: Path
) -> None:
    vertical, model, test = run.vertical, run.model, run.splits.test
    image, label = Path(test[1]["image"]), Path(test[1]["label"])
    truth = np.asarray(nib.load(label).dataobj)
    files = tmp_path / "files"
    corrected = store(files, truth, "mask.nii.gz", nib.load(image).affine)
    fresh = [entry("new", input=store(files, image, "input.nii.gz"), outcome=corrected)]
    holdout = vertical.extend_holdout(model, test, [*fresh, entry("lost", outcome=corrected)])
    assert len(holdout) == len(test) + 1 and holdout[:2] == test
    metrics = vertical.evaluate(model, holdout)
    assert metrics["n_cases"] == 3
    vertical.save_holdout(holdout, tmp_path / "holdout")
    assert same(vertical.evaluate(model, vertical.load_holdout(tmp_path / "holdout")), metrics)


def test_score_cases_after_evaluate_segments_each_volume_once(
    run: pipeline.TrainResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    from verticals.medical import evaluation

    calls: list[Path] = []
    segment = evaluation.segment

    def counted(model, path, keep_image=False):  # noqa: ANN001, ANN202
        calls.append(path)
        return segment(model, path, keep_image)

    monkeypatch.setattr(evaluation, "segment", counted)
    vertical, model = run.vertical, run.model
    vertical.save_holdout(run.splits.test[:1], tmp_path)  # files no test has scored yet
    test = vertical.load_holdout(tmp_path)
    vertical.evaluate(model, test)
    vertical.score_cases(model, test)
    assert len(calls) == 1
    with torch.no_grad():  # weights changed in place: the cached answers are stale
        next(model.network.parameters()).mul_(1.0)
    vertical.score_cases(model, test)
    assert len(calls) == 2
