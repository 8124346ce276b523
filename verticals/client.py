"""A Python client for served verticals: `Client(url, token=...)`, with a typed method per
vertical, feedback, batching, retries and timeouts.

It needs only httpx and jsonschema, not the verticals' libraries: a laptop or a batch job
calls a server without LightGBM or MONAI. Records are checked against the request schema
the server publishes in `/metadata` before they are sent, so a model trained with extra
features validates its own extra fields, and a typo is caught at the caller with the
record's index and field. Retries (with exponential backoff) happen only where a request
was not answered: a refused connection, or a 503 whose `Retry-After` says to come back
(overloaded, warming up, the prediction log briefly unavailable); any other failure is
raised.

    from verticals.client import Client

    client = Client("http://127.0.0.1:8000", token=os.environ["VERTICALS_TOKEN"])
    answer = client.finance.score({"age": 35, "income": 52000, ...})
    answer.pd, answer.grade, answer.reasons
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

RETRY_STATUS = 503


class ClientError(Exception):
    """A request the server refused or could not answer: its status, message and id."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        self.status, self.message, self.request_id = status, message, request_id
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{status}: {message}{where}")


@dataclass
class Answer:
    """One record's answer: the prediction row and where it came from."""

    row: dict[str, Any]
    request_id: str | None
    model_version: str

    def __getattr__(self, name: str) -> Any:  # answer.pd, answer.grade ...
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class FileAnswer:
    """A file vertical's answer: the summary and, when asked for, the output file."""

    summary: dict[str, Any]
    request_id: str | None
    model_version: str
    output: Path | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.summary[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Forecasts:
    """A traffic answer: forecast rows for every sensor and horizon of one window."""

    rows: list[dict[str, Any]]
    request_id: str | None
    model_version: str


@dataclass
class Client:
    """One served vertical at `url`."""

    url: str
    token: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5  # seconds before the first retry; doubled each time
    batch: int = 500  # records per request when a long list is sent
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout,
                                  headers=headers, transport=self.transport)  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire -----------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying refused connections and 503s with backoff; other failures raise
        `ClientError` with the server's message."""
        wait = self.backoff
        for attempt in range(self.retries + 1):
            try:
                reply = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == self.retries:
                    raise
            else:
                retry = reply.status_code == RETRY_STATUS and "retry-after" in reply.headers
                if not retry or attempt == self.retries:
                    return _checked(reply)
                wait = max(wait, _retry_after(reply))
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")

    @cached_property
    def metadata(self) -> dict[str, Any]:
        return self.request("GET", "/metadata").json()

    @property
    def vertical(self) -> str:
        return str(self.metadata["vertical"])

    # -- generic calls ------------------------------------------------------------------

    def validate(self, records: list[dict[str, Any]]) -> None:
        """Check records against the served request schema; `ValueError` names the first
        bad record and field."""
        import jsonschema

        schema = self.metadata["schema"]["request"]
        if schema.get("type") == "file":
            raise ValueError(f"{self.vertical} takes files: use upload()")
        checker = jsonschema.Draft202012Validator(schema)
        for i, record in enumerate(records):
            error = jsonschema.exceptions.best_match(checker.iter_errors(record))
            if error is not None:
                where = ".".join(str(p) for p in error.absolute_path) or "record"
                raise ValueError(f"record[{i}].{where}: {error.message[:200]}")

    def predict(self, records: dict[str, Any] | list[dict[str, Any]]) -> list[Answer]:
        """One answer row per record, in order; a long list goes in `batch`-sized requests."""
        many = [records] if isinstance(records, dict) else list(records)
        self.validate(many)
        answers: list[Answer] = []
        for start in range(0, len(many), self.batch):
            body = self.request("POST", "/predict", json=many[start : start + self.batch]).json()
            answers += [Answer(row, body.get("request_id"), body["model_version"])
                        for row in body["predictions"]]  # fmt: skip
        return answers

    def upload(self, path: str | Path, output_dir: str | Path | None = None) -> FileAnswer:
        """A file vertical's answer for one file; its output file is written to
        `output_dir` when given."""
        path = Path(path)
        fmt = "json" if output_dir is not None else "summary"
        with path.open("rb") as handle:
            reply = self.request("POST", "/predict", params={"format": fmt},
                                 files={"file": (path.name, handle)})  # fmt: skip
        body = reply.json()
        out = None
        if output_dir is not None and body.get("output_file"):
            import base64

            produced = body["output_file"]
            out = Path(output_dir) / Path(produced["name"]).name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(produced["base64"]))
        return FileAnswer(body["prediction"], body.get("request_id"), body["model_version"], out)

    def feedback(self, items: dict[str, Any] | list[dict[str, Any]]) -> dict[str, int]:
        """Outcomes of logged predictions: `{"request_id": ..., <outcome fields>}` each."""
        many = [items] if isinstance(items, dict) else list(items)
        stored = {"stored": 0, "replaced": 0}
        for start in range(0, len(many), self.batch):
            reply = self.request("POST", "/feedback", json=many[start : start + self.batch])
            for key, value in reply.json().items():
                stored[key] = stored.get(key, 0) + int(value)
        return stored

    def feedback_file(self, request_id: str, field_name: str, path: str | Path) -> dict[str, int]:
        """An outcome given as a file (medical: the corrected mask)."""
        path = Path(path)
        with path.open("rb") as handle:
            reply = self.request("POST", "/feedback", data={"request_id": request_id},
                                 files={field_name: (path.name, handle)})  # fmt: skip
        return reply.json()

    # -- one facade per vertical ----------------------------------------------------------

    @property
    def finance(self) -> Finance:
        return Finance(self)

    @property
    def retail(self) -> Retail:
        return Retail(self)

    @property
    def traffic(self) -> Traffic:
        return Traffic(self)

    @property
    def medical(self) -> Medical:
        return Medical(self)

    @property
    def manufacturing(self) -> Manufacturing:
        return Manufacturing(self)


@dataclass
class Finance:
    client: Client

    def score(self, applicant: dict[str, Any]) -> Answer:
        """PD, score, grade and reasons (`answer.pd`, `.score`, `.grade`, `.reasons`)."""
        return self.client.predict(applicant)[0]

    def score_many(self, applicants: list[dict[str, Any]]) -> list[Answer]:
        return self.client.predict(applicants)

    def report(self, request_id: str, defaulted: int) -> dict[str, int]:
        return self.client.feedback({"request_id": request_id, "defaulted": defaulted})


@dataclass
class Retail:
    client: Client

    def recommend(self, user_id: str | int, k: int | None = None,
                  exclude_items: list[str] | None = None, category: str | None = None,
                  exclude_bought: bool = True) -> Answer:  # fmt: skip
        """`answer.recommendations` (item_id, score, rank), `.fallback`, `.short`."""
        record: dict[str, Any] = {"user_id": user_id, "exclude_bought": exclude_bought}
        record.update({k_: v for k_, v in (("k", k), ("exclude_items", exclude_items),
                                           ("category", category)) if v is not None})  # fmt: skip
        return self.client.predict(record)[0]

    def similar(self, item_id: str | int, k: int | None = None) -> Answer:
        record: dict[str, Any] = {"item_id": item_id}
        if k is not None:
            record["k"] = k
        return self.client.predict(record)[0]

    def report(self, request_id: str, items: list[str], event: str = "purchase") -> dict:
        return self.client.feedback({"request_id": request_id, "items": items, "event": event})


@dataclass
class Traffic:
    client: Client

    def forecast(self, window: list[dict[str, Any]] | Any) -> Forecasts:
        """Forecast rows (sensor, timestamp, horizon, speed, alert) for one window of
        readings (records, or a data frame with sensor, timestamp, value)."""
        records = window.to_dict("records") if hasattr(window, "to_dict") else list(window)
        records = [{**r, "timestamp": str(r["timestamp"])} for r in records]
        self.client.validate(records)
        body = self.client.request("POST", "/predict", json=records).json()
        return Forecasts(list(body["predictions"]), body.get("request_id"), body["model_version"])

    def report(self, request_id: str, observed: list[dict[str, Any]]) -> dict[str, int]:
        return self.client.feedback({"request_id": request_id, "observed": observed})


@dataclass
class Medical:
    client: Client

    def segment(self, path: str | Path, output_dir: str | Path = ".") -> tuple[FileAnswer, Path]:
        """(the summary: volumes per label ..., the mask file written into `output_dir`)."""
        answer = self.client.upload(path, output_dir)
        assert answer.output is not None
        return answer, answer.output

    def correct(self, request_id: str, mask: str | Path) -> dict[str, int]:
        return self.client.feedback_file(request_id, "mask", mask)


@dataclass
class Manufacturing:
    client: Client

    def inspect(self, image: str | Path, output_dir: str | Path | None = None) -> FileAnswer:
        """The verdict and detections; the annotated image too, into `output_dir`."""
        return self.client.upload(image, output_dir)

    def report(self, request_id: str, verdict: str, boxes: list[str] | None = None) -> dict:
        item: dict[str, Any] = {"request_id": request_id, "verdict": verdict}
        if boxes is not None:
            item["boxes"] = boxes
        return self.client.feedback(item)


def _checked(reply: httpx.Response) -> httpx.Response:
    if reply.status_code < 400:
        return reply
    try:
        body = reply.json()
        message = str(body.get("message") or body.get("detail") or body)
    except (ValueError, json.JSONDecodeError):
        body, message = {}, reply.text[:300]
    request_id = body.get("request_id") if isinstance(body, dict) else None
    raise ClientError(reply.status_code, message, request_id or reply.headers.get("x-request-id"))


def _retry_after(reply: httpx.Response) -> float:
    try:
        return float(reply.headers.get("retry-after", 0))
    except ValueError:
        return 0.0
