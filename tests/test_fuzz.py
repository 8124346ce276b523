"""Fuzzing: schemathesis against each server's own OpenAPI schema, and hand-made hostile
files against the upload endpoints. No input may get a 5xx, and every answer must match
the schema the server publishes (a client generated from it meets nothing undeclared).

Bounded for CI: a few dozen generated requests per operation, derandomized (the same
requests every run), no shrinking; `pytest -s` prints the counts.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

from verticals.core import auth  # noqa: E402
from verticals.core.config import ServeConfig  # noqa: E402
from verticals.core.predlog import LogSettings  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402

from .hostile import BAD_NAMES, gzip_bomb, multipart, nifti_header, png  # noqa: E402

#: Generated requests per operation and generation mode (valid, then invalid inputs).
EXAMPLES = 25
#: Longest one request may take: any longer is a finding, not a slow CI machine.
DEADLINE = timedelta(seconds=10)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@dataclass
class Tally:
    """What fuzzing one server sent and got back."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def count(self, what: str, status: int, body: bytes) -> None:
        self.sent += 1
        self.statuses[status] += 1
        if status >= 500 and status != 503:  # 503: declared (in flight, no log)
            self.server_errors.append(f"{what} -> {status}: {body[:300]!r}")

    def report(self, name: str) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"fuzz {name}: {self.sent} requests, {len(self.server_errors)} 5xx, "
                f"{len(self.mismatches)} off-schema ({statuses})")  # fmt: skip


def served(bundle: Path, root: Path) -> tuple[FastAPI, dict[str, str]]:
    """An app serving `bundle` with a prediction log (so `/feedback` is live) and an admin
    token (every path open to it); the Authorization header to send."""
    tokens = root / "fuzz.tokens"
    token, _ = auth.create(tokens, "admin", "fuzz")
    log = LogSettings(url=f"sqlite:///{root / 'log.db'}", files_dir=str(root / "files"))
    app = create_app(bundle, options=ServeConfig(tokens_file=str(tokens)), prediction_log=log)
    return app, {"Authorization": f"Bearer {token}"}


def fuzz(app: FastAPI, headers: dict[str, str], examples: int = EXAMPLES) -> Tally:
    """Every operation of the app's schema, with valid and invalid generated inputs."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, headers, tally, examples)
    return tally


def _fuzz_operation(
    operation: Any, mode: GenerationMode, headers: dict[str, str], tally: Tally, examples: int
) -> None:
    """Send `examples` generated requests; tally statuses and failed checks rather than
    stop at the first, so one run reports everything."""

    @settings(max_examples=examples, deadline=DEADLINE, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        tally.count(f"{operation.label} ({mode.value})", response.status_code, response.content)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every failed check is tallied, not raised
            tally.mismatches.append(f"{operation.label} -> {response.status_code}: {exc}")

    try:
        run()
    except Unsatisfiable:  # no invalid input exists (an operation without parameters)
        assert mode is GenerationMode.NEGATIVE, operation.label


def _assert_clean(name: str, tally: Tally) -> None:
    print(tally.report(name))
    assert tally.sent > 0
    assert not tally.server_errors, "\n".join(tally.server_errors[:10])
    assert not tally.mismatches, "\n".join(tally.mismatches[:10])


@pytest.mark.parametrize("vertical", ["finance", "retail", "traffic"])
def test_record_servers_never_5xx_and_answer_as_declared(
    vertical: str, tiny: Callable[[str], tuple[Any, Path]], tmp_path: Path
) -> None:
    app, headers = served(tiny(vertical)[1], tmp_path)
    _assert_clean(vertical, fuzz(app, headers))


# -- upload endpoints -----------------------------------------------------------------------


def _hostile_uploads(ending: bytes) -> list[tuple[bytes, bytes]]:
    """(file name, content) pairs no upload endpoint may answer with a 5xx."""
    whole = gzip.compress(nifti_header((16, 16, 16)) + b"\1" * 16**3)
    files = [
        (b"cut" + ending, whole[: len(whole) // 2]),  # truncated gzip
        (b"bomb" + ending, gzip_bomb()),
        (b"huge" + ending, gzip.compress(nifti_header((1024, 1024, 1024)) + b"\0" * 1000)),
        (b"raw" + ending, nifti_header((1024, 1024, 1024)) + b"\0" * 1000),
        (b"wide" + ending, png(20_000, 20_000)),
        (b"tall" + ending, png(1, 1_000_000)),
        (b"text" + ending, b'{"not": "an image"}'),
        (b"empty" + ending, b""),
        (b"zeros" + ending, b"\0" * 10_000),
        (b"name.png", b"hello"),  # text named .png
        (b"name" + ending + b"\x00.txt", b"hello"),
        (b"\xff\xfe" + ending, b"hello"),  # not UTF-8
        (b"x" * 10_000 + ending, b"hello"),
    ]
    return files + [(name + ending, b"not read") for name, _ in BAD_NAMES]


def _upload_hostile(client: TestClient, headers: dict[str, str], ending: bytes) -> Tally:
    tally = Tally()
    for name, data in _hostile_uploads(ending):
        for path in ("/predict", "/predict?format=file", "/predict?format=bogus"):
            body, form = multipart(name, data)
            answer = client.post(path, content=body, headers={**headers, **form})
            tally.count(f"{path} {name[:40]!r}", answer.status_code, answer.content)
    return tally


def _refusals_in_one_shape(client: TestClient, headers: dict[str, str]) -> None:
    """A broken multipart form and a bad query parameter (FastAPI's `{"detail"}`) are 422s
    with a message, as every other refusal; a form Starlette cannot parse (a name over its
    header limit: its 400) is among the hostile uploads, all 422."""
    form = {"content-type": "multipart/form-data; boundary=x"}
    broken = client.post("/predict", content=b"--x\r\nbroken", headers={**headers, **form})
    bogus = client.post("/predict?format=bogus", files={"file": ("a.png", b"x")}, headers=headers)
    for answer in (broken, bogus):
        assert answer.status_code == 422, answer.text
        assert answer.json()["message"] and answer.json()["request_id"]
    assert "query.format" in bogus.json()["message"]


@pytest.mark.parametrize(
    ("vertical", "ending", "needs"),
    [("medical", b".nii.gz", "monai"), ("manufacturing", b".png", "ultralytics")],
)
def test_upload_servers_never_5xx(
    vertical: str, ending: bytes, needs: str, tiny: Callable[[str], tuple[Any, Path]],
    tmp_path: Path,
) -> None:  # fmt: skip
    if importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    app, headers = served(tiny(vertical)[1], tmp_path)
    client = TestClient(app)
    hostile = _upload_hostile(client, headers, ending)
    print(hostile.report(f"{vertical} hostile files"))
    assert not hostile.server_errors, "\n".join(hostile.server_errors[:10])
    assert set(hostile.statuses) == {422}, hostile.statuses  # each a declared refusal
    _refusals_in_one_shape(client, headers)
    _assert_clean(vertical, fuzz(app, headers, examples=EXAMPLES // 2))
