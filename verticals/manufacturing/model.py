"""The trained detector as the line uses it: image in, defects and a pass/fail decision out.

A saved model folder holds the PyTorch weights (`model.pt`), their ONNX export
(`model.onnx`, dynamic batch since this suite batches images; older bundles' fixed batch of
1 still serves, an image at a time) and `meta.json` (class names, image size, inspection
thresholds, and which runtime serves it: ONNX Runtime by default, the inference box's usual
engine).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verticals.core.errors import UserError
from verticals.manufacturing.dataset import open_image
from verticals.manufacturing.offline import ultralytics

RUNTIMES = ("onnxruntime", "torch")
#: ONNX and PyTorch detections agree to this, in pixels and in confidence (tested).
BOX_TOLERANCE_PX = 1.0
CONF_TOLERANCE = 0.02
#: Most images one detector call takes: bounds the memory a long list of images holds at once.
MAX_BATCH = 16
#: Most pixels an image to inspect may have (decoded: 3 bytes each); env overrides it.
MAX_PIXELS = 40_000_000
PIXELS_ENV = "VERTICALS_MAX_PIXELS"


@dataclass
class DefectModel:
    weights: Path  # PyTorch weights (.pt)
    names: list[str]
    imgsz: int
    inspection: dict[str, Any]  # conf, iou, max_det, fail_threshold, thresholds
    onnx: Path | None = None
    runtime: str = "torch"  # which file predicts: torch | onnxruntime
    device: str = "cpu"
    onnx_simplify: bool = True  # when packaged: onnxslim on the export (`model.onnx_simplify`)
    _nets: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    # An ultralytics predictor keeps per-call state (its batch, results, the letterbox), so
    # one instance must not run two images at once (ultralytics' thread-safety guide). The
    # server's thread pool shares the model: a lock, measured in benchmarks/manufacturing.py
    # against one model per thread, which is no faster on the cores the lock keeps busy.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _onnx_batch: int | None = field(default=None, init=False, repr=False)  # 0: dynamic

    def threshold(self, name: str) -> float:
        """The confidence at which a `name` defect fails a part."""
        return float(
            self.inspection.get("thresholds", {}).get(name, self.inspection["fail_threshold"])
        )

    def network(self, runtime: str | None = None) -> Any:
        """The ultralytics predictor for `runtime` (default: the model's), loaded once."""
        runtime = runtime or self.runtime
        if runtime not in self._nets:
            if runtime == "onnxruntime" and self.onnx is None:
                raise UserError("this model has no ONNX export; package it again")
            path = self.onnx if runtime == "onnxruntime" else self.weights
            self._nets[runtime] = ultralytics().YOLO(str(path), task="detect")
        return self._nets[runtime]

    def batch_limit(self, runtime: str | None = None) -> int:
        """How many images one detector call may take: an ONNX graph exported with a fixed
        batch (bundles from before the dynamic export: 1) cannot take more, so those go
        through it that many at a time; PyTorch and dynamic ONNX take `MAX_BATCH`."""
        if (runtime or self.runtime) != "onnxruntime" or self.onnx is None:
            return MAX_BATCH
        if self._onnx_batch is None:
            self._onnx_batch = onnx_batch(self.onnx) or 0
        return self._onnx_batch or MAX_BATCH

    def batches_well(self) -> bool:
        """Whether a call on several images is much cheaper per image than one each, so a
        server should micro-batch: on a GPU, and on a CPU with a graph that takes batches.
        Measured on 2 shared CPU cores, `predict_paths` of 8 images vs `predict_path` x8,
        per image: dynamic ONNX 3.2-3.7 vs 7.7-8.0 ms (2.0-2.5x), PyTorch 3.6-5.2 vs
        8.2-14.2 ms (2.3-2.8x); a fixed batch-1 graph goes an image at a time: no gain."""
        if self.runtime == "torch":
            return True  # PyTorch takes batches, on a GPU and on a CPU
        return self.batch_limit() > 1

    def detect(self, image: np.ndarray, runtime: str | None = None) -> list[dict[str, Any]]:
        """Detections in `image` (H x W x 3 RGB, uint8), boxes in its pixels."""
        return self.detect_many([image], runtime)[0]

    def detect_many(
        self, images: list[np.ndarray], runtime: str | None = None
    ) -> list[list[dict[str, Any]]]:
        """Detections in each of `images`, `batch_limit` images per detector call (a
        server's micro-batch). ultralytics letterboxes each image on its own to the square
        `imgsz`, so an image's detections do not depend on the others in its batch: equal
        in ONNX Runtime, equal up to float rounding (~1e-7) in PyTorch's batched kernels."""
        runtime = runtime or self.runtime
        device = "cpu" if runtime == "onnxruntime" else self.device
        report_from = float(self.inspection["conf"])
        lowest = min([report_from, *(self.threshold(n) for n in self.names)])
        step = self.batch_limit(runtime)
        columns = []
        with self._lock:
            for start in range(0, len(images), step):
                results = self.network(runtime).predict(
                    # ultralytics takes arrays in BGR order
                    [np.ascontiguousarray(im[..., ::-1]) for im in images[start : start + step]],
                    imgsz=self.imgsz,
                    rect=False,  # each image padded alone to the square: same input in a batch
                    conf=lowest,  # a class threshold under the reporting level still fails
                    iou=float(self.inspection["iou"]),
                    max_det=int(self.inspection.get("max_det", 100)),
                    device=device,
                    verbose=False,
                )
                for boxes in (result.boxes for result in results):
                    xyxy, conf, cls = (t.cpu().numpy() for t in (boxes.xyxy, boxes.conf, boxes.cls))
                    columns.append((xyxy, conf, cls))
        return [self._report(*column, report_from) for column in columns]

    def _report(
        self, xyxy: np.ndarray, confs: np.ndarray, classes: np.ndarray, report_from: float
    ) -> list[dict[str, Any]]:
        """One image's detections as the line reads them: reported, or failing the part."""
        found = []
        for box, conf, cls in zip(xyxy, confs, classes, strict=True):
            name = self.names[int(cls)]
            fails = bool(conf >= self.threshold(name))
            if conf < report_from and not fails:
                continue
            found.append(
                {
                    "defect_class": name,
                    "confidence": round(float(conf), 4),
                    "box": [round(float(v), 1) for v in box],
                    "fails": fails,
                }
            )
        return found

    def warm_up(self) -> None:
        """Load the runtime and run it once, so the first real part is not the slow one."""
        self.detect(np.zeros((self.imgsz, self.imgsz, 3), np.uint8))

    def inspect(self, image: np.ndarray, runtime: str | None = None) -> dict[str, Any]:
        """The line's answer for one part: detections and pass/fail."""
        return self.inspect_many([image], runtime)[0]

    def inspect_many(
        self, images: list[np.ndarray], runtime: str | None = None
    ) -> list[dict[str, Any]]:
        """`inspect` for each of `images`, detected in batches (see `detect_many`)."""
        found = self.detect_many(images, runtime)
        return [_decide(image, detections) for image, detections in zip(images, found, strict=True)]


def _decide(image: np.ndarray, detections: list[dict[str, Any]]) -> dict[str, Any]:
    """The pass/fail report of one part from its detections."""
    failing = sorted({d["defect_class"] for d in detections if d["fails"]})
    return {
        "decision": "fail" if failing else "pass",
        "failed_classes": failing,
        "n_detections": len(detections),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "detections": detections,
    }


def read_image(path: Path) -> np.ndarray:
    """An image file as H x W x 3 RGB uint8, decoded as ultralytics decodes training images
    (OpenCV: EXIF orientation applied, grey made colour, alpha dropped, 16-bit images kept
    to their high byte), so served parts look like the parts the model learned from."""
    import cv2

    check_pixels(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise UserError(f"{path} cannot be read: {exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        open_image(path).close()  # Pillow names what is wrong, when it can
        raise UserError(f"{path} cannot be read as an image: OpenCV cannot decode it")
    if min(image.shape[:2]) < 8:
        raise UserError(f"{path} is {image.shape[1]}x{image.shape[0]} pixels; too small to inspect")
    return np.ascontiguousarray(image[..., ::-1])


def max_pixels() -> int:
    """The pixel limit: `VERTICALS_MAX_PIXELS` when set, else `MAX_PIXELS`."""
    given = os.environ.get(PIXELS_ENV, "").strip()
    try:
        return int(float(given)) if given else MAX_PIXELS
    except ValueError:
        raise UserError(f"{PIXELS_ENV}={given!r} is not a number of pixels") from None


def check_pixels(path: Path) -> None:
    """Refuse an image whose header declares more than `max_pixels()`, before OpenCV
    decodes it: a 389 KB PNG can declare 20000 x 20000 pixels (1.2 GB decoded). Pillow
    opens lazily, so only the header is read here."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels()
    too_many = f"at most {limit / 1e6:g} megapixels ({PIXELS_ENV})"
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise UserError(
            f"{path} declares more pixels than Pillow reads safely; {too_many}"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, ImportError):
        # (ImportError: ultralytics' wrapper tries to install a plugin for unknown formats)
        raise UserError(
            f"{path} cannot be read as an image: its content is not a {path.suffix} image"
        ) from None
    if width * height > limit:
        raise UserError(f"{path} is {width}x{height} pixels; {too_many}")


def annotate(image: np.ndarray, report: dict[str, Any]) -> bytes:
    """A JPEG of `image` with failing defects boxed red, reported ones amber, and a banner."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(1, round(min(picture.size) / 150))
    for det in report["detections"]:
        colour = (230, 30, 30) if det["fails"] else (255, 170, 0)
        x0, y0, x1, y1 = det["box"]
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{det['defect_class']} {det['confidence']:.2f}"
        draw.text((x0 + 2, max(0, y0 - 11)), text, fill=colour)
    banner = report["decision"].upper()
    colour = (230, 30, 30) if banner == "FAIL" else (30, 170, 60)
    draw.rectangle([0, 0, 8 + 7 * len(banner), 14], fill=colour)
    draw.text((4, 1), banner, fill=(255, 255, 255))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def export_onnx(weights: Path, imgsz: int, simplify: bool = True) -> Path:
    """`weights` exported to ONNX beside it, simplified (onnxslim) unless told not to.
    Dynamic axes, so one call takes a batch of images (ultralytics makes height and width
    dynamic with the batch; prediction still feeds imgsz x imgsz squares)."""
    net = ultralytics().YOLO(str(weights), task="detect")
    path = net.export(format="onnx", imgsz=imgsz, simplify=simplify, dynamic=True, device="cpu")
    return Path(path)


def onnx_batch(path: Path) -> int | None:
    """The fixed batch size of the ONNX graph at `path`'s image input; None if dynamic."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {t.name for t in graph.initializer}
    image = next(i for i in graph.input if i.name not in initialisers)
    dim = image.type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def save(model: DefectModel, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.pt"
    if Path(model.weights).resolve() != weights.resolve():
        shutil.copy2(model.weights, weights)
    onnx = export_onnx(weights, model.imgsz, model.onnx_simplify)
    meta = {
        "names": model.names,
        "imgsz": model.imgsz,
        "inspection": model.inspection,
        "runtime": model.inspection.get("runtime", "onnxruntime"),
        "files": {"torch": weights.name, "onnxruntime": onnx.name},
        "onnx_simplified": model.onnx_simplify,
        "agreement": {"box_px": BOX_TOLERANCE_PX, "confidence": CONF_TOLERANCE},
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load(directory: Path, runtime: str | None = None) -> DefectModel:
    meta = json.loads((directory / "meta.json").read_text())
    runtime = runtime or meta["runtime"]
    if runtime not in RUNTIMES:
        raise UserError(f"runtime={runtime!r} is not one of {', '.join(RUNTIMES)}")
    model = DefectModel(
        weights=directory / meta["files"]["torch"],
        names=list(meta["names"]),
        imgsz=int(meta["imgsz"]),
        inspection=dict(meta["inspection"]),
        onnx=directory / meta["files"]["onnxruntime"],
        runtime=runtime,
        onnx_simplify=bool(meta.get("onnx_simplified", True)),
    )
    model.warm_up()
    return model
