"""Monitoring the file verticals end to end on demo data: a seconds-long run packaged with
its training reference, served in-process with a prediction log, fed the test split's files
as a client would upload them, told the truth through `/feedback` (medical: the case's label
mask as the corrected mask, multipart NIfTI; manufacturing: the inspector's verdict and YOLO
boxes from the labels), then `verticals monitor` through the CLI: every figure inside its
bounds; then darker images / rescaled volumes, and `monitor` of that window exits 1 naming
the shifted statistics. Refusals: 404 for an unknown request id, 422 naming what is wrong.

The demo models train for two epochs, so their test metrics are far below the bounds
`conf/<vertical>/monitor/default.yaml` sets for a production model (medical Dice >= 0.5,
manufacturing escape rate <= 0.3): with those bounds the honest unshifted window breaches on
the live metrics alone (asserted below). The exit-0 run holds the live metrics to what this
model scored on its test split instead (`monitor.live.*` on the command line), which the
live figures must then match, since the outcomes are the test split's own labels."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.bundle import write_bundle  # noqa: E402
from verticals.core.predlog import LogSettings, PredictionLog  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402

from .nonetwork import NoNetwork  # noqa: E402
from .servers import run_cli  # noqa: E402

needs_monai = pytest.mark.skipif(
    importlib.util.find_spec("monai") is None, reason="monai is not installed"
)
needs_ultralytics = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed"
)

SHIFT = 0.4  # darker images, dimmer volumes: every pixel / voxel times this
OBSERVED = "2027-01-05T10:00:00"


def train_demo(name: str, root: Path, *overrides: str) -> pipeline.TrainResult:
    cfg = compose("train", name, [f"paths.root_dir={root}", "trainer.device=cpu", "debug=fast",
                                  "tracking=none", *overrides])  # fmt: skip
    return pipeline.train(cfg)


def package(run: pipeline.TrainResult, root: Path) -> Path:
    bundle = write_bundle(run.run_dir, root / "bundles")
    assert (bundle / "reference.jsonl.gz").is_file()
    return bundle


def monitor(vertical: str, bundle: Path, root: Path, output: Path, *more: str) -> int:
    """`verticals monitor` in-process; its exit code (0 inside thresholds, 1 a breach)."""
    return run_cli("monitor", vertical, f"bundle={bundle}", f"paths.root_dir={root}",
                   "tracking=none", f"output={output}", *more)  # fmt: skip


def figures_of(report: Path) -> dict[str, Any]:
    for name in ("figures.json", "summary.md", "report.html", "plots/psi.png"):
        assert (report / name).is_file(), name
    return json.loads((report / "figures.json").read_text())


def shifted_named(out: str) -> list[str]:
    """The columns the CLI's `shifted:` line names."""
    lines = [line for line in out.splitlines() if line.startswith("shifted: ")]
    return lines[-1].removeprefix("shifted: ").split(", ") if lines else []


def upload(client: TestClient, path: Path) -> str:
    """Upload a file to `/predict` as a client would; its request id."""
    reply = client.post("/predict?format=summary", files={"file": (path.name, path.read_bytes())})
    assert reply.status_code == 200, reply.text
    return reply.json()["request_id"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def psi_of(figures: dict[str, Any]) -> dict[str, float]:
    return {name: round(c["psi"], 4) for name, c in figures["columns"].items()}


def report_figures(capsys: pytest.CaptureFixture, tag: str, figures: dict[str, Any]) -> None:
    """Shown with `pytest -s`: what the demo's monitor saw."""
    with capsys.disabled():
        print(f"\n[{tag}] requests={figures['requests']} feedback={figures['feedback']} "
              f"psi={psi_of(figures)} live={figures['live']} test={figures['test']} "
              f"breaches={[b['message'] for b in figures['breaches']]}")  # fmt: skip


# -- medical --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def medical_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.TrainResult, Path]:
    pytest.importorskip("monai")
    root = tmp_path_factory.mktemp("medical")
    # 24 phantoms, 10 or 11 test cases: the reference and the uploads (the monitor judges
    # drift against a reference of monitor.min_reference_rows=10 or more)
    run = train_demo("medical", root, "data.n_cases=24", "data.test_fraction=0.45")
    assert len(run.splits.test) >= 10
    return run, package(run, root)


@needs_monai
def test_medical_monitor_on_demo_data_then_dimmer_volumes(
    medical_demo, tmp_path: Path, capsys
) -> None:
    import nibabel as nib

    run, bundle = medical_demo
    cases = run.splits.test
    client = TestClient(
        create_app(bundle, prediction_log=LogSettings.default(tmp_path / "predlog"))
    )
    rounds = 1  # medical judges from monitor.min_rows=10 volumes: each test case once
    for _ in range(rounds):
        for case in cases:
            image, label = Path(case["image"]), Path(case["label"])
            rid = upload(client, image)
            reply = client.post(
                "/feedback",
                data={"request_id": rid, "observed_at": OBSERVED, "note": "read twice"},
                files={"mask": (f"{image.name[:-7]}_corrected.nii.gz", label.read_bytes())},
            )
            assert reply.json() == {"stored": 1, "replaced": 0}, reply.text
    n = rounds * len(cases)
    log = PredictionLog(LogSettings.default(tmp_path / "predlog"))
    assert log.counts("medical") == {"predictions": n, "outcomes": n}

    # the conf's bounds are a production model's: this one breaches on Dice alone
    assert monitor("medical", bundle, tmp_path, tmp_path / "strict") == 1
    out = capsys.readouterr().out
    strict = figures_of(tmp_path / "strict")
    assert [b["figure"] for b in strict["breaches"]] == ["dice_mean"], strict["breaches"]
    assert "BREACH dice_mean" in out and "shifted:" not in out

    test_dice = run.metrics["dice_mean"]
    bound = f"monitor.live.dice_mean.min={max(test_dice - 0.01, 0.0):.6f}"
    report = tmp_path / "report"
    assert monitor("medical", bundle, tmp_path, report, bound) == 0, capsys.readouterr().out
    assert "every figure inside its threshold" in capsys.readouterr().out
    figures = figures_of(report)
    report_figures(capsys, "medical unshifted", figures)
    assert figures["requests"] == n and figures["feedback"] == n and figures["judged"]
    assert figures["reference_rows"] == len(cases) and not figures["breaches"]
    live = figures["live"]
    assert live["corrected_cases"] == n
    # the corrected masks are the test labels: live Dice is the test split's Dice
    assert live["dice_mean"] == pytest.approx(test_dice, abs=1e-6)
    assert figures["test"]["dice_mean"] == pytest.approx(test_dice)
    for key in ("dice_organ", "dice_lesion", "dice_vessel"):
        if key in live:
            assert live[key] == pytest.approx(run.metrics[key], abs=1e-6), key
    columns = figures["columns"]
    intensity = {"intensity_mean", "intensity_std", "intensity_p1", "intensity_p99"}
    assert intensity | {"spacing_x", "voxels", "volume_ml.organ"} <= set(columns)
    assert max(c["psi"] for c in columns.values()) < figures["thresholds"]["psi_watch"]

    # a scanner recalibrated: every voxel times 0.4, the same grid
    since = now_iso()
    dim = tmp_path / "dim"
    dim.mkdir()
    for case in cases:
        image = nib.load(case["image"])
        data = np.asarray(image.dataobj, dtype=np.float32) * SHIFT
        path = dim / Path(case["image"]).name
        nib.save(nib.Nifti1Image(data, image.affine), path)
        for _ in range(rounds):
            upload(client, path)
    shifted = tmp_path / "shifted"
    assert monitor("medical", bundle, tmp_path, shifted, bound, f"since={since}") == 1
    named = shifted_named(capsys.readouterr().out)
    later = figures_of(shifted)
    report_figures(capsys, "medical shifted", later)
    assert later["requests"] == n and later["feedback"] == 0 and later["live"] == {}
    assert intensity <= set(named), named
    assert not {"spacing_x", "spacing_y", "spacing_z", "voxels"} & set(named), named  # same grid


@needs_monai
def test_medical_mask_feedback_over_multipart(medical_demo, tmp_path: Path) -> None:
    run, bundle = medical_demo
    client = TestClient(create_app(bundle, prediction_log=LogSettings.default(tmp_path / "log")))
    case = run.splits.test[0]
    rid = upload(client, Path(case["image"]))
    mask = ("corrected.nii.gz", Path(case["label"]).read_bytes())
    reply = client.post("/feedback", data={"request_id": rid}, files={"mask": mask})
    assert reply.status_code == 200, reply.text
    # in bulk: a table whose mask column names the files (relative to the table)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "case.nii.gz").write_bytes(mask[1])
    table = tmp_path / "outcomes.csv"
    table.write_text(f"request_id,mask\n{rid},masks/case.nii.gz\n")
    args = [f"input={table}", f"bundle={bundle}", f"paths.log_dir={tmp_path / 'log'}"]
    assert run_cli("feedback", "medical", *args) == 0
    (entry,) = PredictionLog(LogSettings.default(tmp_path / "log")).entries("medical")
    assert entry.outcome["mask"]["sha256"] and entry.files["outcome"].read_bytes() == mask[1]


@needs_monai
def test_medical_feedback_refusals(medical_demo, tmp_path: Path) -> None:
    import nibabel as nib

    run, bundle = medical_demo
    client = TestClient(create_app(bundle, prediction_log=LogSettings.default(tmp_path / "log")))
    case = run.splits.test[0]
    image, label = Path(case["image"]), Path(case["label"])
    rid = upload(client, image)
    mask = ("corrected.nii.gz", label.read_bytes())

    ghost = client.post("/feedback", data={"request_id": "ghost-1"}, files={"mask": mask})
    assert ghost.status_code == 404 and ghost.json()["request_ids"] == ["ghost-1"]

    truth = nib.load(label)
    shape = list(truth.shape)
    cropped = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(truth.dataobj)[:, :, :16], truth.affine), cropped)
    wrong = client.post("/feedback", data={"request_id": rid},
                        files={"mask": ("cropped.nii.gz", cropped.read_bytes())})  # fmt: skip
    assert wrong.status_code == 422
    message = wrong.json()["message"]
    assert f"shape {[*shape[:2], 16]}; expected {shape}" in message, message
    assert "cropped.nii.gz" in message and str(tmp_path) not in message

    bare = client.post("/feedback", json={"request_id": rid, "note": "no mask"})
    assert bare.status_code == 422 and "the mask file is missing" in bare.json()["message"]
    extra = client.post("/feedback", data={"request_id": rid, "volume_ml": "3"},
                        files={"mask": mask})  # fmt: skip
    assert extra.status_code == 422 and "feedback[0].volume_ml" in extra.json()["message"]
    log = PredictionLog(LogSettings.default(tmp_path / "log"))
    assert log.counts("medical") == {"predictions": 1, "outcomes": 0}  # nothing stored

    stored = client.post("/feedback", data={"request_id": rid}, files={"mask": mask})
    assert stored.json() == {"stored": 1, "replaced": 0}
    (entry,) = log.entries("medical", outcomes_only=True)
    assert entry.outcome["mask"]["name"] == "corrected.nii.gz"
    assert entry.files["outcome"].read_bytes() == label.read_bytes()


# -- manufacturing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manufacturing_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pipeline.TrainResult, Path]:
    root = tmp_path_factory.mktemp("manufacturing")
    with NoNetwork() as guard:
        # 16 test images (the reference and the uploads), half of them without a defect
        run = train_demo("manufacturing", root, "data.n_test=16", "data.defect_free=0.5")
        bundle = package(run, root)
    assert guard.attempts == [], "\n".join(guard.attempts)
    return run, bundle


def inspector(image: Path) -> dict[str, Any]:
    """The verdict a careful inspector gives: fail with the planted defects' boxes."""
    from verticals.manufacturing.dataset import label_path

    label = label_path(image)
    lines = label.read_text().splitlines() if label.is_file() else []
    boxes = [line.strip() for line in lines if line.strip()]
    return {"verdict": "fail", "boxes": boxes} if boxes else {"verdict": "pass"}


@needs_ultralytics
def test_manufacturing_monitor_on_demo_data_then_darker_images(
    manufacturing_demo, tmp_path: Path, capsys
) -> None:
    from PIL import Image

    run, bundle = manufacturing_demo
    images = run.splits.test.images
    client = TestClient(
        create_app(bundle, prediction_log=LogSettings.default(tmp_path / "predlog"))
    )
    rounds = 2  # monitor.min_rows=30: each of the 16 test images twice
    verdicts = []
    for _ in range(rounds):
        items = [{"request_id": upload(client, image), "observed_at": OBSERVED, **inspector(image)}
                 for image in images]  # fmt: skip
        reply = client.post("/feedback", json=items)
        assert reply.json() == {"stored": len(items), "replaced": 0}, reply.text
        verdicts += [item["verdict"] for item in items]
    assert set(verdicts) == {"pass", "fail"}, verdicts
    n = rounds * len(images)

    # the conf's bounds are a production line's: this two-epoch detector misses defects
    assert monitor("manufacturing", bundle, tmp_path, tmp_path / "strict") == 1
    out = capsys.readouterr().out
    strict = figures_of(tmp_path / "strict")
    assert {b["figure"] for b in strict["breaches"]} <= {"escape_rate", "decision_accuracy"}
    assert strict["breaches"] and "shifted:" not in out

    test = run.metrics
    bounds = [f"monitor.live.decision_accuracy.min={max(test['decision_accuracy'] - 0.01, 0):.6f}",
              f"monitor.live.escape_rate.max={min(test['escape_rate'] + 0.01, 1):.6f}"]  # fmt: skip
    report = tmp_path / "report"
    assert monitor("manufacturing", bundle, tmp_path, report, *bounds) == 0, capsys.readouterr().out
    assert "every figure inside its threshold" in capsys.readouterr().out
    figures = figures_of(report)
    report_figures(capsys, "manufacturing unshifted", figures)
    assert figures["requests"] == n and figures["feedback"] == n and figures["judged"]
    assert figures["reference_rows"] == len(images) and not figures["breaches"]
    live = figures["live"]
    assert live["inspected"] == n
    # the verdicts are the test labels: live decision figures are the test split's
    for key in ("decision_accuracy", "escape_rate", "false_reject_rate"):
        if key in live:
            assert live[key] == pytest.approx(test[key], abs=1e-9), key
    assert "decision_accuracy" in live
    columns = figures["columns"]
    assert {"brightness", "contrast", "width", "height", "decision", "max_confidence"} <= set(
        columns
    )
    assert columns["brightness"]["kind"] == "numeric"  # 16 distinct reference values
    assert max(c["psi"] for c in columns.values()) < figures["thresholds"]["psi_watch"]

    # the line's lighting fails: every pixel times 0.4
    since = now_iso()
    dark = tmp_path / "dark"
    dark.mkdir()
    shifted_paths = []
    for image in images:
        rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.float64)
        path = dark / image.name
        Image.fromarray((rgb * SHIFT).astype(np.uint8)).save(path)
        shifted_paths.append(path)
    for _ in range(rounds):
        for path in shifted_paths:
            upload(client, path)
    shifted = tmp_path / "shifted"
    assert monitor("manufacturing", bundle, tmp_path, shifted, *bounds, f"since={since}") == 1
    named = shifted_named(capsys.readouterr().out)
    later = figures_of(shifted)
    report_figures(capsys, "manufacturing shifted", later)
    assert later["requests"] == n and later["feedback"] == 0
    assert all(b["figure"].startswith("psi:") for b in later["breaches"])
    assert {"brightness", "contrast"} <= set(named), named
    assert not {"width", "height"} & set(named), named  # the same camera


@needs_ultralytics
def test_manufacturing_feedback_refusals(manufacturing_demo, tmp_path: Path) -> None:
    run, bundle = manufacturing_demo
    client = TestClient(create_app(bundle, prediction_log=LogSettings.default(tmp_path / "log")))
    rid = upload(client, run.splits.test.images[0])
    n_classes = len(run.model.names)

    both = [{"request_id": rid, "verdict": "pass"}, {"request_id": "ghost-1", "verdict": "fail"}]
    ghost = client.post("/feedback", json=both)
    assert ghost.status_code == 404 and ghost.json()["request_ids"] == ["ghost-1"]
    for item, words in (
        ({"verdict": "fail", "boxes": ["0 0.5 0.5 0.2 0.1", "0 0.5 1.5 0.2 0.1"]},
         ["feedback[0].boxes", "line 1 '0 0.5 1.5 0.2 0.1'", "cy=1.5 is outside [0, 1]"]),
        ({"verdict": "fail", "boxes": [f"{n_classes} 0.5 0.5 0.2 0.1"]},
         [f"line 0 '{n_classes} 0.5 0.5 0.2 0.1'", "is not one of the model's classes"]),
        ({"verdict": "fail", "boxes": ["0 0.5 0.5 0.2"]}, ["has 4 fields; expected 5"]),
        ({"verdict": "maybe"}, ["feedback[0].verdict"]),
        ({"boxes": []}, ["feedback[0].verdict"]),
        ({"verdict": "pass", "defects": 2}, ["feedback[0].defects"]),
    ):  # fmt: skip
        reply = client.post("/feedback", json={"request_id": rid, **item})
        assert reply.status_code == 422, reply.text
        for word in words:
            assert word in reply.json()["message"], (word, reply.json()["message"])
    log = PredictionLog(LogSettings.default(tmp_path / "log"))
    assert log.counts("manufacturing") == {"predictions": 1, "outcomes": 0}  # nothing stored

    good = {"request_id": rid, "verdict": "fail", "boxes": ["0 0.5 0.5 0.2 0.1"]}
    assert client.post("/feedback", json=good).json() == {"stored": 1, "replaced": 0}
    again = client.post("/feedback", json={"request_id": rid, "verdict": "pass"}).json()
    assert again["replaced"] == 1 and again["replaced_request_ids"] == [rid]
    (entry,) = log.entries("manufacturing", outcomes_only=True)
    assert entry.outcome == {"verdict": "pass", "boxes": None}
