"""Manufacturing vertical: planted defects -> YOLO -> mAP; data checks; ONNX; API; offline."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

if importlib.util.find_spec("ultralytics") is None:  # find, not import: see below
    pytest.skip("ultralytics is not installed", allow_module_level=True)

from fastapi.testclient import TestClient  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline, registry  # noqa: E402
from verticals.core.batch import predict_folder  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402
from verticals.manufacturing import checks, dataset, synthetic, voc  # noqa: E402
from verticals.manufacturing.model import (  # noqa: E402
    BOX_TOLERANCE_PX,
    CONF_TOLERANCE,
    DefectModel,
    onnx_batch,
    read_image,
)

from .nonetwork import NoNetwork
from .servers import cli_session

# Small enough for CI's two cores; easy planted defects, so a from-scratch YOLO gets there
# (at 96 px: mAP50 0.50, the hole class 0.96).
IMAGE = 96
TINY = [
    "data.n_train=192",
    "data.n_val=48",
    "data.n_test=48",
    f"data.image_size={IMAGE}",
    "training.epochs=20",
    "training.mosaic=0",
    "training.close_mosaic=0",
    "training.workers=0",
    "training.cpu_minutes=null",  # the quality asserted needs all 20 epochs, however busy
    "++training.extra.val=false",  # validate once, after the last epoch
]


def cfg(root: Path, *overrides: str):
    return compose(
        "train", "manufacturing", [f"paths.root_dir={root}", "trainer.device=cpu", *overrides]
    )


@pytest.fixture(scope="session")
def network_log() -> list[str]:
    return []


@pytest.fixture(scope="session")
def manufacturing_run(tmp_path_factory: pytest.TempPathFactory, network_log: list[str]):
    with NoNetwork() as guard:
        result = pipeline.train(cfg(tmp_path_factory.mktemp("manufacturing"), *TINY))
    network_log.extend(guard.attempts)
    return result


@pytest.fixture(scope="session")
def manufacturing_bundle(manufacturing_run, tmp_path_factory: pytest.TempPathFactory, network_log):
    with NoNetwork() as guard:
        bundle = load_bundle(write_bundle(manufacturing_run.run_dir, tmp_path_factory.mktemp("b")))
    network_log.extend(guard.attempts)
    return bundle


def test_planted_defects_have_exact_boxes() -> None:
    rng = np.random.default_rng(0)
    textures = {name: synthetic._texture(name) for name in synthetic.TEXTURES}
    surface = synthetic.surface(96, rng, textures)
    for kind in synthetic.CLASSES:
        alpha, value = synthetic.defect(kind, 96, rng)
        box = synthetic._box(alpha)
        assert box is not None, kind
        cx, cy, w, h = (v * 96 for v in box)
        changed = np.abs(surface * (1 - alpha) + value * alpha - surface) > 0.04
        rows, cols = np.nonzero(changed)
        # every visibly changed pixel lies in the box (one pixel of anti-aliasing aside)
        assert cols.min() >= cx - w / 2 - 1 and cols.max() <= cx + w / 2 + 1, kind
        assert rows.min() >= cy - h / 2 - 1 and rows.max() <= cy + h / 2 + 1, kind


def test_training_learns_planted_defects(manufacturing_run) -> None:
    m = manufacturing_run.metrics
    history = pd.read_csv(manufacturing_run.run_dir / "history.csv")
    history.columns = [c.strip() for c in history.columns]
    losses = history["train/box_loss"] + history["train/cls_loss"]
    assert losses.iloc[-1] < 0.7 * losses.iloc[0], losses.tolist()
    assert m["map50"] > 0.25, m
    assert max(m[f"ap50/{c}"] for c in synthetic.CLASSES if f"ap50/{c}" in m) > 0.6, m
    assert 0 <= m["escape_rate"] <= 1 and 0 <= m["false_reject_rate"] <= 1
    run = manufacturing_run.run_dir
    assert (run / "train" / "results.png").is_file()  # training.plots: true by default
    for name in ("detections.png", "per_class.png", "training_curve.png", "BoxPR_curve.png",
                 "confusion_matrix.png"):  # fmt: skip
        assert (run / "plots" / name).is_file(), name
    assert {"decision", "defective"} <= set(pd.read_csv(run / "inspections.csv").columns)
    assert "| hole |" in (run / "model_card.md").read_text()


def test_nothing_reached_for_the_network(manufacturing_bundle, network_log: list[str]) -> None:
    assert network_log == [], "\n".join(network_log)
    fonts = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    assert (fonts / "Arial.ttf").is_file()


def _matched(a: list[dict], b: list[dict], margin: float) -> list[tuple[dict, dict]]:
    """Pairs of same-class detections (by box overlap); every confident detection of either
    list must find its partner (ones near the reporting threshold may drop out of one)."""
    pairs = []
    for det in a:
        near = [
            d for d in b
            if d["defect_class"] == det["defect_class"]
            and np.abs(np.array(d["box"]) - np.array(det["box"])).max() <= 2 * BOX_TOLERANCE_PX
        ]  # fmt: skip
        if near:
            pairs.append((det, near[0]))
        else:
            assert det["confidence"] < margin, (det, b)
    return pairs


def test_onnx_and_pytorch_agree(manufacturing_bundle, manufacturing_run) -> None:
    model = manufacturing_bundle.model
    assert model.runtime == "onnxruntime" and model.onnx.is_file()
    meta = json.loads((manufacturing_bundle.path / "model" / "meta.json").read_text())
    assert meta["runtime"] == "onnxruntime" and meta["onnx_simplified"] is True  # the default
    margin = float(model.inspection["conf"]) + 0.05
    compared = 0
    images = [read_image(p) for p in manufacturing_run.splits.test.images[:16]]
    wide = np.concatenate([images[0], images[1][:, : IMAGE // 2]], axis=1)  # wide: padded square
    for image in [*images, wide]:
        torch_dets, onnx_dets = model.detect(image, "torch"), model.detect(image, "onnxruntime")
        for x, y in _matched(torch_dets, onnx_dets, margin) + _matched(
            onnx_dets, torch_dets, margin
        ):
            assert np.abs(np.array(x["box"]) - np.array(y["box"])).max() <= BOX_TOLERANCE_PX
            assert abs(x["confidence"] - y["confidence"]) <= CONF_TOLERANCE
            compared += 1
    assert compared >= 5  # the comparison saw real detections


def test_concurrent_calls_give_the_sequential_answers(
    manufacturing_bundle, manufacturing_run
) -> None:
    """The server's thread pool shares one model: concurrent parts get their own answers."""
    from concurrent.futures import ThreadPoolExecutor

    model = manufacturing_bundle.model
    images = [read_image(p) for p in manufacturing_run.splits.test.images[:24]]
    sequential = [model.inspect(image) for image in images]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(model.inspect, images))
    assert concurrent == sequential
    assert len({json.dumps(a["detections"]) for a in sequential}) > 1  # the parts differ


def test_api_inspects_an_upload(manufacturing_bundle, manufacturing_run) -> None:
    client = TestClient(create_app(manufacturing_bundle))
    path = manufacturing_run.splits.test.images[0]
    got = client.post("/predict", files={"file": (path.name, path.read_bytes())})
    assert got.status_code == 200, got.text
    body = got.json()
    pred = body["prediction"]
    assert pred["decision"] in ("pass", "fail")
    assert (pred["width"], pred["height"]) == (IMAGE, IMAGE)
    expected = manufacturing_bundle.model.inspect(read_image(path))
    assert pred == expected
    assert body["output_file"]["media_type"] == "image/jpeg"
    raw = client.post("/predict?format=file", files={"file": (path.name, path.read_bytes())})
    assert raw.content[:3] == b"\xff\xd8\xff" and json.loads(raw.headers["x-prediction"]) == pred
    short = client.post("/predict?format=summary", files={"file": (path.name, path.read_bytes())})
    assert short.json()["output_file"] is None
    bad = client.post("/predict", files={"file": ("part.png", b"not an image")})
    assert bad.status_code == 422 and "part.png cannot be read as an image" in bad.json()["message"]
    wrong = client.post("/predict", files={"file": ("part.txt", b"x")})
    assert wrong.status_code == 422 and ".png" in wrong.json()["message"]


def test_thresholds_decide_pass_or_fail(manufacturing_bundle, manufacturing_run) -> None:
    model = manufacturing_bundle.model
    image = read_image(manufacturing_run.splits.test.images[0])
    saved = dict(model.inspection)
    try:
        model.inspection["fail_threshold"] = 0.0
        model.inspection["conf"] = 0.001
        strict = model.inspect(image)
        assert strict["decision"] == "fail" and strict["failed_classes"]
        model.inspection["fail_threshold"] = 1.0
        assert model.inspect(image)["decision"] == "pass"
        model.inspection["thresholds"] = {strict["failed_classes"][0]: 0.0}
        assert model.inspect(image)["failed_classes"] == [strict["failed_classes"][0]]
        # a class threshold under the reporting level still fails the part
        model.inspection["conf"] = 0.99
        below = model.inspect(image)
        assert below["decision"] == "fail" and all(d["fails"] for d in below["detections"])
    finally:
        model.inspection.clear()
        model.inspection.update(saved)


def test_predict_folder_writes_a_table_or_annotated_images(
    manufacturing_bundle, manufacturing_run, tmp_path: Path
) -> None:
    inputs = tmp_path / "parts"
    inputs.mkdir()
    for image in manufacturing_run.splits.test.images[:3]:
        shutil.copy2(image, inputs / image.name)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserError, match="1 of 4 inputs failed.*broken.jpg"):
        predict_folder(manufacturing_bundle, inputs, tmp_path / "table.csv", progress=False)
    table = pd.read_csv(tmp_path / "table.csv")
    assert len(table) == 4 and table["error"].notna().sum() == 1
    assert set(table["decision"].dropna()) <= {"pass", "fail"}
    json.loads(table["detections"].dropna().iloc[0])  # one JSON list per image
    (inputs / "broken.jpg").unlink()
    out = predict_folder(manufacturing_bundle, inputs, tmp_path / "annotated", progress=False)
    assert len(list((tmp_path / "annotated").glob("*.jpg"))) == 3 and len(out) == 3


def test_predict_paths_batches_and_equals_predict_path_each(
    manufacturing_bundle, manufacturing_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's micro-batch: one detector call, and each file's own answer, byte for byte."""
    import cv2

    vertical, model = manufacturing_bundle.vertical, manufacturing_bundle.model
    assert onnx_batch(model.onnx) is None and model.batch_limit() > 1  # dynamic export
    assert vertical.batches_well(model)
    paths = list(manufacturing_run.splits.test.images[:6])
    images = [read_image(p) for p in paths[:2]]
    wide = tmp_path / "wide.png"  # another size in the same batch: padded on its own
    cv2.imwrite(str(wide), np.concatenate([images[0], images[1][:, :64]], axis=1)[..., ::-1])
    paths.append(wide)
    single = [vertical.predict_path(model, p) for p in paths]
    assert len({json.dumps(o.summary["detections"]) for o in single}) > 1  # the parts differ

    net, calls = model.network(), []
    predict = net.predict

    def counted(images: list[np.ndarray], **kwargs: object) -> list:
        calls.append(len(images))
        return predict(images, **kwargs)

    monkeypatch.setattr(net, "predict", counted)
    for expected in ([7], [3, 3, 1]):
        if expected == [3, 3, 1]:  # as a graph exported with a fixed batch of 3 would take
            monkeypatch.setattr(model, "batch_limit", lambda runtime=None: 3)
        calls.clear()
        batched = vertical.predict_paths(model, paths)
        assert calls == expected  # one detector call per batch, not per image
        assert [o.summary for o in batched] == [o.summary for o in single]
        assert [o.content for o in batched] == [o.content for o in single]
        assert {(o.suffix, o.media_type) for o in batched} == {(".jpg", "image/jpeg")}


def test_predict_paths_fails_on_a_corrupt_file(
    manufacturing_bundle, manufacturing_run, tmp_path: Path
) -> None:
    """One bad file fails the batch call (the server then retries the files one by one)."""
    good = manufacturing_run.splits.test.images[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserError, match="broken.jpg cannot be read as an image"):
        manufacturing_bundle.vertical.predict_paths(
            manufacturing_bundle.model, [good[0], broken, good[1]]
        )


def test_fixed_batch_onnx_goes_an_image_at_a_time(tmp_path: Path) -> None:
    """Bundles exported before the dynamic export hold a batch-1 graph: no batches, and the
    server is told so (no micro-batching wait for nothing)."""
    import onnx
    from onnx import TensorProto, helper

    def graph(batch: int | str) -> Path:
        shape = [batch, 3, 8, 8]
        node = helper.make_node("Identity", ["images"], ["output0"])
        g = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)],
        )
        path = tmp_path / f"b{batch}.onnx"
        onnx.save(helper.make_model(g), str(path))
        return path

    assert onnx_batch(graph(1)) == 1 and onnx_batch(graph("batch")) is None
    inspection = {"conf": 0.25, "iou": 0.7, "fail_threshold": 0.5}
    old = DefectModel(tmp_path / "m.pt", ["hole"], 8, inspection, graph(1), "onnxruntime")
    assert old.batch_limit() == 1 and not old.batches_well()
    new = DefectModel(tmp_path / "m.pt", ["hole"], 8, inspection, graph("batch"), "onnxruntime")
    assert new.batch_limit() > 1 and new.batches_well()


def _yolo_set(root: Path) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            from PIL import Image

            Image.new("RGB", (32, 32), (100, 100, 100)).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames: [scratch, hole]\n"
    )
    return root / "data.yaml"


def test_yolo_checks_name_file_and_line(tmp_path: Path) -> None:
    path = _yolo_set(tmp_path)
    checks.check(dataset.load(path), progress=False)  # a clean set passes
    (tmp_path / "labels/train/0.txt").write_text("0 0.5 0.5 0.2 0.2\n1 1.2 0.5 0.1 0.1\n")
    (tmp_path / "labels/train/1.txt").write_text("7 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n")
    (tmp_path / "labels/val/0.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    (tmp_path / "labels/val/ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "images/val/1.png").write_bytes(b"garbage")
    with pytest.raises(UserError) as err:
        checks.check(dataset.load(path), progress=False)
    text = str(err.value)
    assert "6 problem(s)" in text
    assert "labels/train/1.txt line 2: '0 nan 0.5 0.2 0.2' holds nan or inf" in text
    assert "labels/val/0.txt: mixes box rows" in text
    assert "labels/train/0.txt line 2: x_center=1.2 is outside [0, 1]" in text
    assert (
        "labels/train/1.txt line 1: class 7 is not in the class list (0: scratch, 1: hole)" in text
    )
    assert "labels/val/ghost.txt: label without an image" in text
    assert "images/val/1.png cannot be read as an image" in text


def test_yolo_lists_over_one_folder_pass_the_checks(tmp_path: Path) -> None:
    """The common layout: one images/ and labels/ folder, split by train.txt / val.txt."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(4):
        Image.new("L", (40, 30), 90).save(tmp_path / "images" / f"{i}.jpg")
        (tmp_path / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "._0.jpg").write_bytes(b"AppleDouble junk")  # hidden files are not images
    (tmp_path / "train.txt").write_text("./images/0.jpg\n./images/1.jpg\nimages/2.jpg\n")
    (tmp_path / "val.txt").write_text("images/3.jpg\n")
    (tmp_path / "data.yaml").write_text(
        "path: .\ntrain: train.txt\nval: val.txt\nnames: {0: dent}\n"
    )
    parts = dataset.load(tmp_path / "data.yaml")
    assert (len(parts["train"]), len(parts["val"])) == (3, 1)
    checks.check(parts, progress=False)


def test_user_yolo_set_trains_from_a_cached_copy(tmp_path: Path) -> None:
    path = _yolo_set(tmp_path / "line")
    (tmp_path / "line" / "data.yaml").write_text(
        path.read_text() + "download: https://example.com/should-never-be-fetched.zip\n"
    )
    with NoNetwork() as guard:
        result = pipeline.train(
            cfg(tmp_path, "data=yolo", f"data.yaml={path}", "training.epochs=1",
                "training.imgsz=64", "training.batch=2", "training.workers=0",
                "training.plots=false", "model.onnx_simplify=false")
        )  # fmt: skip
    assert guard.attempts == []
    # neither ultralytics' training figures nor onnxslim, as asked (seconds each on a CPU)
    assert not list((result.run_dir / "train").glob("*.png")), "training.plots=false ignored"
    meta = json.loads((result.run_dir / "model" / "meta.json").read_text())
    assert meta["onnx_simplified"] is False
    assert result.splits.train.yaml.is_relative_to(tmp_path / "cache")
    assert "download" not in result.splits.train.yaml.read_text()
    user_files = {p.relative_to(tmp_path / "line") for p in (tmp_path / "line").rglob("*")}
    assert not [p for p in user_files if p.suffix in (".cache", ".npy")], user_files
    assert "map50" in result.metrics


def test_yolo_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        dataset.load(tmp_path / "nope.yaml")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(UserError, match="no `val:` entry"):
        dataset.load(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(UserError, match="is not a folder or image list"):
        dataset.load(tmp_path / "data.yaml")


def _voc(root: Path, name: str, objects: list[tuple[str, int, int, int, int]]) -> None:
    from PIL import Image

    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    Image.new("RGB", (200, 100)).save(root / "JPEGImages" / f"{name}.jpg")
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    (root / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.jpg</filename><size><width>200</width>"
        f"<height>100</height></size>{body}</annotation>"
    )


def test_voc_boxes_become_yolo_labels(tmp_path: Path) -> None:
    for i in range(10):
        _voc(tmp_path / "voc", f"img{i}", [("scratch", 11, 21, 110, 60), ("pit", 1, 1, 200, 100)])
    path = voc.convert(tmp_path / "voc", tmp_path / "cache", 0, 0.2, 0.1)
    parts = dataset.load(path)
    assert parts["train"].names == ["pit", "scratch"]
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (7, 2, 1)
    checks.check(parts, progress=False)
    boxes = dataset.read_boxes(dataset.label_path(parts["train"].images[0]))
    assert boxes[0] == pytest.approx((1, 0.3, 0.4, 0.5, 0.4))
    assert boxes[1] == pytest.approx((0, 0.5, 0.5, 1.0, 1.0))
    (tmp_path / "voc" / "Annotations" / "img0_copy.xml").write_text(
        (tmp_path / "voc" / "Annotations" / "img0.xml").read_text()
    )
    with pytest.raises(UserError, match="both annotate img0.jpg"):
        voc.convert(tmp_path / "voc", tmp_path / "cache2", 0, 0.2, 0.1)
    _voc(tmp_path / "bad", "x", [("scratch", 50, 20, 40, 60)])
    with pytest.raises(UserError, match=r"x.xml object 1 \(scratch\): box .* has no area"):
        voc.convert(tmp_path / "bad", tmp_path / "cache", 0, 0.2, 0.1)


def test_settings_errors_are_one_line(tmp_path: Path) -> None:
    from verticals.manufacturing.training import build

    with pytest.raises(UserError, match="model.download=true"):
        build(cfg(tmp_path, "model.weights=yolov8n.pt").model)
    with pytest.raises(UserError, match="has no yolov99n.yaml"):
        build(cfg(tmp_path, "model.arch=yolov99").model)
    with pytest.raises(UserError, match="multiple of 32"):
        pipeline.train(cfg(tmp_path, "debug=fast", "data.image_size=100"))
    with pytest.raises(UserError, match="not a class of the data"):
        pipeline.train(cfg(tmp_path, "debug=fast", "+inspection.thresholds.dent=0.3"))
    with pytest.raises(UserError, match="training: .*bogus"):
        pipeline.train(cfg(tmp_path, "debug=fast", "+training.extra.bogus=1"))


def test_local_weights_start_training(manufacturing_bundle, tmp_path: Path) -> None:
    weights = manufacturing_bundle.model.weights
    from verticals.manufacturing.training import build

    net = build(cfg(tmp_path, f"model.weights={weights}").model)
    assert net.model is not None


def _no_network_prefix() -> list[str]:
    """`unshare -n` (a network namespace with no interfaces) where this machine allows it."""
    if shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", "-n"]
    return []


def test_cli_train_package_predict_offline(tmp_path: Path) -> None:
    """The CLI end to end; inside a namespace without a network interface where allowed
    (root on Linux), so any download or DNS look-up would fail the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "PYTEST_"))}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "yolo")  # ultralytics changes course under pytest
    (tmp_path / "elsewhere").mkdir()  # its settings are created in another folder, as a
    subprocess.run(  # user's first `import ultralytics` in some other project would be
        [sys.executable, "-c", "import verticals.manufacturing.offline as o; o.ultralytics()"],
        cwd=tmp_path / "elsewhere", env=env, check=True, capture_output=True,
    )  # fmt: skip
    prefix = tuple(_no_network_prefix())

    def run(*commands: list[str]) -> list[str]:  # one process, the commands one by one
        done = cli_session(tmp_path, *commands, env=env, prefix=prefix)
        for proc in done:
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert len(done) == len(commands)
        return [proc.stdout + proc.stderr for proc in done]

    trained, _ = run(["train", "manufacturing", "debug=fast", "training.epochs=1"],
                     ["package", "manufacturing"])  # fmt: skip
    assert "map50=" in trained
    images = sorted((tmp_path / "cache" / "manufacturing").glob("surfaces-*/images/test/*.png"))
    (tmp_path / "line").mkdir()
    for image in images[:3]:
        shutil.copy2(image, tmp_path / "line" / image.name)
    run(["predict", "manufacturing", "input=line", "output=results.csv"])
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 3 and set(table["decision"]) <= {"pass", "fail"}
    runs = [p for p in (tmp_path / "runs" / "manufacturing").glob("2*") if (p / "model").is_dir()]
    assert len(runs) == 1 and (runs[0] / "train" / "results.csv").is_file()  # inside the run
    assert not (tmp_path / "elsewhere" / "runs").exists()


def test_offline_settings_hold_when_ultralytics_was_imported_first(tmp_path: Path) -> None:
    code = (
        "import socket\n"  # name look-ups 'succeed' (ultralytics thinks it is online), and
        "socket.getaddrinfo = lambda *a, **k: [(2, 1, 6, '', ('10.0.0.1', 443))]\n"
        "def refuse(*a, **k): raise OSError('no connections in this test')\n"
        "socket.socket.connect = refuse\n"  # nothing can connect anyway
        "import ultralytics\n"  # before the vertical: its environment settings come too late
        "from ultralytics.utils import events\n"
        "online_at_import = events.events.enabled\n"
        "from verticals.manufacturing.offline import ultralytics as offline\n"
        "offline()\n"
        "from ultralytics.utils import USER_CONFIG_DIR, checks\n"
        "assert (USER_CONFIG_DIR / 'Arial.ttf').is_file(), USER_CONFIG_DIR\n"
        "assert not checks.ONLINE and not checks.AUTOINSTALL and not events.events.enabled\n"
        "print('telemetry was on at import:', online_at_import)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "PYTEST_"))}
    env["YOLO_CONFIG_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(
    not (Path(os.environ.get("VERTICALS_DATA_DIR", "/nonexistent")) / "neu-det").is_dir(),
    reason="set VERTICALS_DATA_DIR to a folder holding neu-det/ (NEU surface defects, VOC)",
)
def test_neu_det_reads_as_six_classes(tmp_path: Path) -> None:
    root = Path(os.environ["VERTICALS_DATA_DIR"]) / "neu-det"
    splits = registry.get("manufacturing").load_data(
        cfg(tmp_path, "experiment=neu_det", f"data.root={root}")
    )
    assert splits.train.names == [
        "crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"
    ]  # fmt: skip
    total = sum(splits.info[f"n_{s}"] for s in ("train", "val", "test"))
    assert total == len(list((root / "ANNOTATIONS").glob("*.xml")))
    boxes = [dataset.read_boxes(dataset.label_path(p)) for p in splits.train.images[:50]]
    assert all(b for b in boxes)  # every NEU image has at least one defect box
