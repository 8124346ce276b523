"""The trained detector as the line uses it: image in, defects and a pass/fail decision out.

A saved model folder holds the PyTorch weights (`model.pt`), their ONNX export
(`model.onnx`) and `meta.json` (class names, image size, inspection thresholds, and which
runtime serves it: ONNX Runtime by default, the inference box's usual engine).
"""

from __future__ import annotations

import io
import json
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


@dataclass
class DefectModel:
    weights: Path  # PyTorch weights (.pt)
    names: list[str]
    imgsz: int
    inspection: dict[str, Any]  # conf, iou, max_det, fail_threshold, thresholds
    onnx: Path | None = None
    runtime: str = "torch"  # which file predicts: torch | onnxruntime
    device: str = "cpu"
    _nets: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    # An ultralytics predictor keeps per-call state (its batch, results, the letterbox), so
    # one instance must not run two images at once (ultralytics' thread-safety guide). The
    # server's thread pool shares the model: a lock, measured in benchmarks/manufacturing.py
    # against one model per thread, which is no faster on the cores the lock keeps busy.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

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

    def detect(self, image: np.ndarray, runtime: str | None = None) -> list[dict[str, Any]]:
        """Detections in `image` (H x W x 3 RGB, uint8), boxes in its pixels."""
        device = "cpu" if (runtime or self.runtime) == "onnxruntime" else self.device
        report_from = float(self.inspection["conf"])
        lowest = min([report_from, *(self.threshold(n) for n in self.names)])
        with self._lock:
            result = self.network(runtime).predict(
                np.ascontiguousarray(image[..., ::-1]),  # ultralytics takes arrays in BGR order
                imgsz=self.imgsz,
                rect=False,  # pad to a square as the static ONNX model must: same input
                conf=lowest,  # a class threshold under the reporting level still fails parts
                iou=float(self.inspection["iou"]),
                max_det=int(self.inspection.get("max_det", 100)),
                device=device,
                verbose=False,
            )[0]
            boxes = result.boxes
            columns = (boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy())
        found = []
        for xyxy, conf, cls in zip(*columns, strict=True):
            name = self.names[int(cls)]
            fails = bool(conf >= self.threshold(name))
            if conf < report_from and not fails:
                continue
            found.append(
                {
                    "defect_class": name,
                    "confidence": round(float(conf), 4),
                    "box": [round(float(v), 1) for v in xyxy],
                    "fails": fails,
                }
            )
        return found

    def warm_up(self) -> None:
        """Load the runtime and run it once, so the first real part is not the slow one."""
        self.detect(np.zeros((self.imgsz, self.imgsz, 3), np.uint8))

    def inspect(self, image: np.ndarray, runtime: str | None = None) -> dict[str, Any]:
        """The line's answer for one part: detections and pass/fail."""
        detections = self.detect(image, runtime)
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


def export_onnx(weights: Path, imgsz: int) -> Path:
    """`weights` exported to ONNX beside it (static 1 x 3 x imgsz x imgsz, simplified)."""
    net = ultralytics().YOLO(str(weights), task="detect")
    path = net.export(format="onnx", imgsz=imgsz, simplify=True, dynamic=False, device="cpu")
    return Path(path)


def save(model: DefectModel, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.pt"
    if Path(model.weights).resolve() != weights.resolve():
        shutil.copy2(model.weights, weights)
    onnx = export_onnx(weights, model.imgsz)
    meta = {
        "names": model.names,
        "imgsz": model.imgsz,
        "inspection": model.inspection,
        "runtime": model.inspection.get("runtime", "onnxruntime"),
        "files": {"torch": weights.name, "onnxruntime": onnx.name},
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
    )
    model.warm_up()
    return model
