"""What one request may cost, on real apps: body size (Content-Length and chunked), records,
requests in flight, JSON nesting and media type, upload names, how much of a client's input
an error quotes, and hostile files (huge images, voxel and gzip bombs, truncated gzip)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient  # noqa: E402

from verticals.core.bundle import write_bundle  # noqa: E402
from verticals.core.config import ServeConfig  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402

from .conftest import needs_ultralytics  # noqa: E402
from .hostile import BAD_NAMES, gzip_bomb, multipart, nifti_header, png  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def finance_bundle(finance_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(finance_run.run_dir, tmp_path_factory.mktemp("limits") / "finance")


@pytest.fixture(scope="module")
def small(finance_bundle: Path) -> TestClient:
    """A finance server with tiny limits: 10 KB bodies, 5 records, 1 request at once."""
    options = ServeConfig(max_body_mb=0.01, max_records=5, max_inflight=1)
    return TestClient(create_app(finance_bundle, options=options))


def _chunks(total: int, pause: float = 0.0) -> Iterator[bytes]:
    """A JSON list streamed without a Content-Length (chunked), `total` bytes or so."""
    yield b"["
    if pause:
        time.sleep(pause)
    for _ in range(total // 1000):
        yield b'{"age": 30},' * 90 + b" " * 10
    yield b"{}]"


def test_body_over_the_limit_is_413_by_length_and_while_streaming(small: TestClient) -> None:
    declared = small.post("/predict", content=b" " * 20_000, headers=JSON)
    assert declared.status_code == 413 and "serve.max_body_mb" in declared.json()["message"]
    assert declared.headers["x-request-id"]  # answered inside the observing middleware
    streamed = small.post("/predict", content=_chunks(50_000), headers=JSON)
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert streamed.status_code == 413 and "serve.max_body_mb" in streamed.json()["message"]
    assert small.get("/health").status_code == 200


def test_records_nesting_and_media_type(small: TestClient) -> None:
    many = small.post("/predict", content=json.dumps([{}] * 6), headers=JSON)
    assert many.status_code == 413 and "serve.max_records" in many.json()["message"]
    deep = small.post("/predict", content=b"[" * 40 + b"]" * 40, headers=JSON)
    assert deep.status_code == 422 and "32 levels" in deep.json()["message"]
    tricky = json.dumps([{"purpose": "[" * 40}]).encode()  # brackets in a string: not nesting
    assert small.post("/predict", content=tricky, headers=JSON).status_code == 422
    assert "32 levels" not in small.post("/predict", content=tricky, headers=JSON).text
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        refused = small.post("/predict", content=b"{}", headers={"content-type": kind})
        assert refused.status_code == 415, kind
        assert "application/json" in refused.json()["message"]
    vendor = small.post("/predict", content=b"{}", headers={"content-type": "application/x+json"})
    assert vendor.status_code == 200  # JSON: scored (every applicant field may be missing)


def test_a_huge_value_or_key_is_not_echoed(finance_bundle: Path) -> None:
    client = TestClient(create_app(finance_bundle))
    huge = "x" * 200_000
    for body in ({"age": huge}, {huge: 1}, [{"age": huge}] * 3):
        answer = client.post("/predict", json=body)
        assert answer.status_code == 422
        assert len(answer.content) < 4000 and "x" * 81 not in answer.text


def test_requests_beyond_max_inflight_are_503_with_retry_after(small: TestClient) -> None:
    slow: dict[str, int] = {}

    def post_slowly() -> None:  # in flight while its body trickles in
        slow["status"] = small.post(
            "/predict", content=_chunks(0, pause=2.0), headers=JSON
        ).status_code

    worker = threading.Thread(target=post_slowly)
    worker.start()
    time.sleep(0.5)
    busy = small.post("/predict", json={})
    health = small.get("/health")
    worker.join()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "serve.max_inflight" in busy.json()["message"]
    assert health.status_code == 200  # never bounded
    assert slow["status"] == 200  # the slow one was answered
    assert small.post("/predict", json={}).status_code == 200  # the slot is free again


# -- file verticals -------------------------------------------------------------------------


def _bad_names(client: TestClient, ending: bytes) -> None:
    for name, why in BAD_NAMES:
        body, headers = multipart(name + ending, b"not read")
        answer = client.post("/predict", content=body, headers=headers)
        assert answer.status_code == 422, (name, answer.text)
        assert why in answer.json()["message"] and len(answer.content) < 1000


@pytest.fixture(scope="module")
def manufacturing(tiny) -> TestClient:
    needs_ultralytics()
    return TestClient(create_app(tiny("manufacturing")[1]))


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="no ultralytics")
def test_images_over_the_pixel_limit_are_refused_before_decoding(manufacturing: TestClient) -> None:
    for width, height in ((20_000, 20_000), (8_000, 8_000)):
        started = time.perf_counter()
        answer = manufacturing.post("/predict", files={"file": ("part.png", png(width, height))})
        assert answer.status_code == 422, answer.text
        assert "megapixels" in answer.json()["message"] and "VERTICALS_MAX_PIXELS" in answer.text
        assert time.perf_counter() - started < 5
    text = manufacturing.post("/predict", files={"file": ("part.png", b'{"not": "an image"}')})
    assert text.status_code == 422 and "not a .png image" in text.json()["message"]
    assert "/tmp" not in text.text and "verticals-upload" not in text.text
    _bad_names(manufacturing, b".png")


@pytest.fixture(scope="module")
def medical(tiny) -> TestClient:
    pytest.importorskip("monai")
    return TestClient(create_app(tiny("medical")[1]))


@pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="monai is not installed")
def test_volumes_over_the_limits_are_refused_before_loading(medical: TestClient) -> None:
    def post(name: str, data: bytes) -> dict:
        started = time.perf_counter()
        answer = medical.post("/predict", files={"file": (name, data)})
        assert answer.status_code == 422, answer.text
        assert time.perf_counter() - started < 10
        assert "/tmp" not in answer.text
        return answer.json()

    huge = gzip.compress(nifti_header((1024, 1024, 1024)) + b"\0" * 100_000)
    assert "VERTICALS_MAX_VOXELS" in post("huge.nii.gz", huge)["message"]
    raw = nifti_header((1024, 1024, 1024)) + b"\0" * 1000
    assert "voxels" in post("huge.nii", raw)["message"]
    bomb = gzip_bomb()
    assert len(bomb) < 2 << 20
    assert "inflates past" in post("bomb.nii.gz", bomb)["message"]
    whole = gzip.compress(nifti_header((16, 16, 16)) + b"\1" * 16**3)
    assert "not a whole gzip" in post("cut.nii.gz", whole[: len(whole) // 2])["message"]
    assert "not a whole gzip" in post("text.nii.gz", b"hello")["message"]
    assert "not a NIfTI" in post("zeros.nii.gz", gzip.compress(b"\0" * 10_000))["message"]
    for offset in (float("nan"), 1e30):  # an offset that would lift the bomb limit, or crash
        header = bytearray(nifti_header((16, 16, 16)))
        struct.pack_into("<f", header, 108, offset)
        tricked = gzip.compress(bytes(header) + b"\0" * 16**3)
        assert "voxel data at" in post("offset.nii.gz", tricked)["message"]
    _bad_names(medical, b".nii.gz")
