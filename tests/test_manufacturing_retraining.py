"""Manufacturing retraining: inspectors' boxes -> training images; a holdout that moves and
scores the same; per-image scores that add up to `evaluate`."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("ultralytics is not installed", allow_module_level=True)

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline, registry  # noqa: E402
from verticals.core.contract import Logged  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.manufacturing import dataset, retraining  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """The smallest trained detector (debug=fast) and the config it came from."""
    root = tmp_path_factory.mktemp("manufacturing-retrain")
    cfg = compose(
        "train",
        "manufacturing",
        [f"paths.root_dir={root}", "trainer.device=cpu", "debug=fast", "tracking=none"],
    )
    return cfg, pipeline.train(cfg)


@pytest.fixture(scope="module")
def vertical():
    return registry.get("manufacturing")


def logged(image: Path, folder: Path, i: int, verdict: str, boxes: list[str] | None) -> Logged:
    """A logged prediction whose input the log kept (a copy, named as the log names it)."""
    kept = folder / f"{i:02d}" / f"input{image.suffix}"
    kept.parent.mkdir(parents=True)
    shutil.copyfile(image, kept)
    outcome = {"verdict": verdict} if boxes is None else {"verdict": verdict, "boxes": boxes}
    return Logged(f"req-{i}", None, {"decision": "pass"}, outcome, files={"input": kept})


def labelled(image: Path, folder: Path, i: int) -> Logged:
    """Feedback that gives the image's true boxes (verdict from them)."""
    lines = dataset.label_path(image).read_text().splitlines()
    return logged(image, folder, i, "fail" if lines else "pass", [ln for ln in lines if ln])


def test_holdout_moves_and_scores_the_same(run, vertical, tmp_path: Path) -> None:
    _, result = run
    first = tmp_path / "first"
    vertical.save_holdout(result.splits.test, first)
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    holdout = vertical.load_holdout(moved)
    assert [p.name for p in holdout.images] == [p.name for p in result.splits.test.images]
    assert not [p for p in moved.rglob("*") if p.is_symlink() or p.suffix in (".pkl", ".pickle")]
    assert vertical.evaluate(result.model, holdout) == vertical.evaluate(
        result.model, result.splits.test
    )


def test_corrected_boxes_join_training(run, vertical, tmp_path: Path) -> None:
    cfg, result = run
    splits = result.splits
    images = splits.test.images[:3]
    feedback = [labelled(image, tmp_path, i) for i, image in enumerate(images)]
    feedback.append(logged(images[0], tmp_path, 10, "pass", []))  # same image: latest wins
    feedback.append(logged(images[1], tmp_path, 11, "fail", None))  # a verdict alone
    feedback.append(Logged("req-12", None, {}, {"verdict": "fail", "boxes": ["0 .5 .5 .1 .1"]}))
    new = vertical.learn_from(cfg, splits, feedback)

    assert len(new.train) == len(splits.train) + 3
    assert len(new.val) == len(splits.val) and len(new.test) == len(splits.test)
    added = sorted(p for p in new.train.images if p.name.startswith("feedback_"))
    labels = sorted(dataset.label_path(p).read_text() for p in added)
    expected = [""] + [dataset.label_path(p).read_text() for p in images[1:]]
    assert labels == sorted(expected)
    info = new.info["feedback"]
    assert info["images"] == 3 and info["defect_free"] == 1
    assert info["verdict_only"] == 1 and info["without_image"] == 1
    assert new.info["n_train"] == len(splits.train) + 3
    assert new.train.yaml.is_relative_to(Path(cfg.paths.cache_dir))
    assert vertical.learn_from(cfg, splits, feedback).train.yaml == new.train.yaml  # reused

    from ultralytics.data.utils import check_det_dataset

    assert check_det_dataset(str(new.train.yaml))["nc"] == len(splits.train.names)


def test_feedback_without_kept_images_is_one_clear_error(run, vertical, tmp_path: Path) -> None:
    cfg, result = run
    no_file = Logged("a", None, {}, {"verdict": "fail", "boxes": ["0 0.5 0.5 0.1 0.1"]})
    verdict_only = logged(result.splits.test.images[0], tmp_path, 0, "fail", None)
    with pytest.raises(UserError, match="log.keep_files=true") as caught:
        vertical.learn_from(cfg, result.splits, [no_file, verdict_only])
    assert "\n" not in str(caught.value)
    wrong_class = logged(result.splits.test.images[1], tmp_path, 1, "fail", ["99 .5 .5 .1 .1"])
    with pytest.raises(UserError, match="req-1: boxes line 0"):
        vertical.learn_from(cfg, result.splits, [wrong_class])


def test_extended_holdout_scores_per_image_as_evaluate(run, vertical, tmp_path: Path) -> None:
    _, result = run
    vertical.save_holdout(result.splits.test, tmp_path / "holdout")
    holdout = vertical.load_holdout(tmp_path / "holdout")
    val = result.splits.val.images
    extra = [labelled(p, tmp_path / "log", i) for i, p in enumerate(val[:3])]
    extra.append(logged(val[3], tmp_path / "log", 3, "pass", []))  # a part without defects
    extended = vertical.extend_holdout(result.model, holdout, extra)
    assert len(extended) == len(holdout) + 4
    assert len(vertical.load_holdout(tmp_path / "holdout")) == len(holdout)  # left as it was

    # a debug model finds nothing at the line's thresholds: fail on anything, so that the
    # decision figures are not all zero (the good part is rejected)
    inspection = {**result.model.inspection, "conf": 1e-4, "fail_threshold": 1e-4}
    model = replace(result.model, inspection=inspection)
    metrics = vertical.evaluate(model, extended)
    assert 0 < metrics["decision_accuracy"] < 1 and metrics["false_reject_rate"] == 1, metrics
    scores = vertical.score_cases(model, extended)
    assert scores is not None and scores.n == len(extended) == metrics["n_images"]
    everything = scores.metrics(np.arange(scores.n))
    assert set(everything) >= {"map50", "map50_95", "decision_accuracy", "escape_rate"}
    assert everything == {k: metrics[k] for k in everything}
    resample = scores.metrics(np.random.default_rng(0).integers(0, scores.n, scores.n))
    assert all(0.0 <= v <= 1.0 for v in resample.values()), resample
    shutil.rmtree(extended.yaml.parent)  # built in the temporary folder, beside no run


def image_stats(tp: list[bool], conf: list[float], truth: list[int]) -> dict:
    """One image's validation statistics as ultralytics keeps them (class 0 predictions)."""
    return {
        "tp": np.repeat(np.array(tp, dtype=bool)[:, None], 10, axis=1).reshape(len(tp), 10),
        "conf": np.array(conf),
        "pred_cls": np.zeros(len(tp)),
        "target_cls": np.array(truth, dtype=float),
        "target_img": np.unique(np.array(truth, dtype=float)),
    }


def test_resampled_map_comes_from_the_chosen_images() -> None:
    found = image_stats([True], [0.9], [0])  # the one defect found
    missed = image_stats([False], [0.8], [0])  # a false alarm beside a missed defect
    assert retraining.box_metrics([found, found], ["dent"])["map50"] == pytest.approx(1.0, 0.01)
    assert retraining.box_metrics([missed], ["dent"])["map50"] == 0.0
    both = retraining.box_metrics([found, missed], ["dent"])
    assert 0.4 < both["map50"] < 0.6 and both["recall"] == pytest.approx(0.5, abs=0.01)
