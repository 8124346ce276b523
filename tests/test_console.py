"""The console at `/ui` in a real browser: Debian's chromium, driven headless by Playwright.

Each vertical's page is opened on a served tiny bundle with tokens and a prediction log,
the example is predicted through the page, and what it draws is checked and saved as a
screenshot (`VERTICALS_CONSOLE_SHOTS=docs` also writes them where the README shows them).
The browser may reach loopback only: any other request fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from verticals.core import auth
from verticals.core.bundle import load_bundle
from verticals.core.config import ServeConfig
from verticals.core.predlog import LogSettings, PredictionLog
from verticals.core.serving import create_app

from .servers import http, serving_in_thread

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SHOTS_ENV = "VERTICALS_CONSOLE_SHOTS"
# What each page must draw for its example: text in the large headline, and how many
# pictures (charts, the annotated part, the slice) and tables appear.
EXPECTED = {
    "finance": ("PD ", 1, 0),
    "medical": ("mL segmented", 1, 1),
    "retail": ("items for customer", 0, 1),
    "manufacturing": ("", 1, 1),
    "traffic": ("congestion alerts", 2, 0),
}


def expect(locator: Any) -> Any:
    """Playwright's assertions, which wait for the page to catch up."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield launched
        launched.close()


class Console:
    """One served vertical and a browser page on its `/ui`, with every outside request
    refused and recorded."""

    def __init__(self, browser: Any, base: str, tokens: dict[str, str]) -> None:
        self.base, self.tokens, self.outside = base, tokens, []
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.context.route("**/*", self._only_loopback)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)  # the first visit imports Gradio

    def _only_loopback(self, route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in LOOPBACK or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def open(self, token: str | None) -> Any:
        self.page.goto(f"{self.base}/ui/")
        if token is not None:
            self.page.get_by_label("Token").fill(token)
        return self.page

    def predict(self) -> str:
        self.page.get_by_role("button", name="Predict").click()
        headline = self.page.locator(".vt-headline")
        headline.wait_for()
        return headline.inner_text()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def served(tiny, tmp_path: Path, browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`served(vertical)`: its tiny bundle behind tokens and a log, and a browser page."""
    opened: list[Console] = []
    stack: list[Any] = []

    def serve(vertical: str, follow: Any = None) -> tuple[Console, PredictionLog]:
        _, bundle = tiny(vertical)
        file = tmp_path / f"{vertical}.tokens"
        tokens = {scope: auth.create(file, scope, scope)[0] for scope in auth.SCOPES}
        plog = PredictionLog(LogSettings.default(tmp_path / "predlog"))
        options = ServeConfig(tokens_file=str(file))
        app = create_app(bundle, options=options, prediction_log=plog, follow=follow)
        serving = serving_in_thread(app)
        base, _ = serving.__enter__()
        stack.append(serving)
        console = Console(browser, base, tokens)
        opened.append(console)
        return console, plog

    yield serve
    for console in opened:
        assert not console.outside, f"the page asked for outside hosts: {console.outside}"
        console.close()
    for serving in stack:
        serving.__exit__(None, None, None)


def _shot(page: Any, vertical: str, tmp_path: Path, name: str = "") -> Path:
    path = tmp_path / f"console-{vertical}{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, "the screenshot is blank"
    target = os.environ.get(SHOTS_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


@pytest.mark.parametrize("vertical", list(EXPECTED))
def test_each_vertical_page_predicts_its_example(served, vertical: str, tmp_path: Path) -> None:
    console, plog = served(vertical)
    page = console.open(console.tokens["predict"])
    headline = console.predict()
    words, pictures, tables = EXPECTED[vertical]
    if vertical == "manufacturing":
        assert headline.split(":")[0] in ("PASS", "FAIL"), headline
    assert words in headline, headline
    page.wait_for_timeout(300)  # the images arrive after the headline
    shown = page.locator("img[src*='gradio_api/file']")
    if pictures:
        shown.first.wait_for()
    assert shown.count() >= pictures, f"{shown.count()} pictures drawn, expected {pictures}"
    assert page.locator("table").count() >= tables
    _shot(page, vertical, tmp_path)
    if vertical == "medical":  # another plane: redrawn from the answer, no new prediction
        _choose(page, "plane", "coronal")
        page.get_by_text("coronal slice").wait_for()
    [logged] = plog.entries(vertical)  # the page's prediction, in the log
    if vertical in FEEDBACK:  # finance's: test_feedback_and_operations_from_the_page
        page.get_by_text("Feedback: what really happened").click()
        FEEDBACK[vertical](page, logged)
        page.get_by_label("Token").fill(console.tokens["feedback"])  # /feedback's scope
        page.get_by_role("button", name="Send feedback").click()
        _stored(page)
        [logged] = plog.entries(vertical)
        assert logged.outcome, f"{vertical}: the page's feedback is not in the log"


def _stored(page: Any) -> None:
    """Wait for the page to say the feedback was stored; else fail with what it says."""
    try:
        page.get_by_text("Feedback stored for request").wait_for(timeout=30_000)
    except Exception as exc:  # noqa: BLE001 - the page's own words are the useful message
        words = page.locator("body").inner_text()
        raise AssertionError(f"no feedback stored; the page says: {words[-1500:]}") from exc


def _choose(page: Any, label: str, option: str) -> None:
    page.get_by_label(label).click()
    page.get_by_role("option", name=option, exact=True).click()


def _observed(page: Any, entry: Any) -> None:
    """Traffic's outcome is JSON: one forecast's sensor and time, with a measured speed."""
    first = entry.outputs[0]
    observed = {"observed": [{"sensor": first["sensor"], "timestamp": first["timestamp"],
                              "speed": 52.5}]}  # fmt: skip
    outcome = page.locator(".cm-content").nth(1)  # the request's editor is the first
    outcome.wait_for()
    outcome.fill(json.dumps(observed))


def _corrected_mask(page: Any, entry: Any) -> None:
    """The predicted mask (the log keeps it), sent back as the reader's corrected one."""
    folder = Path(tempfile.mkdtemp(prefix="corrected-"))  # in the session's folder
    mask = folder / "corrected.nii.gz"
    shutil.copy(entry.files["output"], mask)
    page.locator("#feedback-file input[type=file]").set_input_files(str(mask))
    # uploaded once its name shows (drawn in two parts: "corrected.nii" and ".gz")
    page.get_by_text("corrected.nii").first.wait_for()
    page.get_by_label("note").fill("left lobe trimmed")


# How an inspector, a merchandiser, a reader and an operator say what really happened.
FEEDBACK = {
    "manufacturing": lambda page, entry: _choose(page, "verdict", "fail"),
    "retail": lambda page, entry: page.get_by_label("item ids, as in the interaction log").fill(
        entry.outputs[0]["recommendations"][0]["item_id"]
    ),
    "medical": lambda page, entry: _corrected_mask(page, entry),
    "traffic": _observed,
}


def test_a_page_without_a_token_is_refused_and_the_api_stays_closed(served) -> None:
    console, plog = served("finance")
    console.open(None)
    assert console.predict().startswith("401: ")
    assert http(f"{console.base}/metadata")[0] == 401  # the console opened no side door
    assert plog.entries("finance") == []


def _registered(tiny, vertical: str, folder: Path) -> Any:
    """The registry's champion of `vertical` in a new store: its tiny bundle, version 1."""
    from verticals.core.model_versions import Champion, register
    from verticals.core.tracking import Store

    store = Store(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())
    assert register(store, tiny(vertical)[1], vertical) == (1, True)
    return Champion.of(store, vertical)


def test_feedback_and_operations_from_the_page(served, tiny, tmp_path: Path) -> None:
    from verticals.core import monitor

    console, plog = served("finance", follow=_registered(tiny, "finance", tmp_path))
    page = console.open(console.tokens["admin"])
    assert console.predict().startswith("PD ")
    page.get_by_text("Feedback: what really happened").click()
    _choose(page, "defaulted", "1")
    page.get_by_role("button", name="Send feedback").click()
    _stored(page)
    [entry] = plog.entries("finance")
    assert entry.outcome == {"defaulted": 1}
    result = monitor.check(load_bundle(tiny("finance")[1]), plog, monitor.Thresholds(), None)
    monitor.save(result, plog, None)
    page.get_by_role("tab", name="Operations").click()
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("feedback 1 (1 in 24 h)").wait_for()
    assert page.get_by_text(entry.request_id).count() >= 1
    page.get_by_text("latest monitor: drift per column").wait_for()  # shown once there is one
    page.get_by_text("figures shown, not judged").wait_for()  # 1 request < min_rows
    page.get_by_text("★").first.wait_for()  # version 1, the champion
    _shot(page, "finance", tmp_path, "-operations")
    # a token of the predict scope may predict, not read the log
    page.get_by_label("Token").fill(console.tokens["predict"])
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("Refused").wait_for()


def test_the_served_page_references_no_outside_host(served) -> None:
    console, _ = served("retail")
    status, body = http(f"{console.base}/ui/")
    assert status == 200
    html = body.decode()
    for attribute in ("src=", "href="):
        for part in html.split(attribute)[1:]:
            url = part[1 : part.find(part[0], 1)] if part[:1] in "'\"" else ""
            host = urlsplit(url).hostname
            assert host is None or host in LOOPBACK, f"/ui/ references {url}"
    page = console.open(console.tokens["predict"])
    console.predict()
    config = json.loads(http(f"{console.base}/ui/config")[1])
    assert config.get("analytics_enabled") is False
    assert page.locator(".vt-headline").count() == 1


def test_retail_shows_similar_items_of_a_chosen_recommendation(served) -> None:
    console, plog = served("retail")
    page = console.open(console.tokens["predict"])
    assert "items for customer" in console.predict()
    [answered] = plog.entries("retail")
    item = answered.outputs[0]["recommendations"][0]["item_id"]
    page.get_by_label("items similar to").click()
    page.get_by_role("option", name=item, exact=True).click()
    page.get_by_text(f"items similar to {item}").last.wait_for()
    assert page.locator("table").count() >= 2
    asked = [e.inputs for e in plog.entries("retail")]
    assert len(asked) == 2 and asked[1][0]["item_id"] == item  # through /predict, logged
    # a customer of the log back into the form (reading the log takes an admin token)
    customer = page.get_by_label("the customer's id, as in the log")
    customer.fill("someone else")
    page.get_by_label("Token").fill(console.tokens["admin"])
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_label("or a request from the prediction log").click()
    page.get_by_role("option").filter(has_text=answered.request_id[:12]).click()
    expect(customer).to_have_value(answered.inputs[0]["user_id"])  # once the answer is in


def test_the_operations_summary_marks_the_champion(tiny, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    _, bundle = tiny("finance")
    follow = _registered(tiny, "finance", tmp_path)
    file = tmp_path / "tokens"
    admin, _ = auth.create(file, "admin", "ops")
    predict, _ = auth.create(file, "predict", "app")
    app = create_app(bundle, options=ServeConfig(tokens_file=str(file)), follow=follow)
    with TestClient(app) as client:
        assert client.get("/log/summary", headers={"Authorization": f"Bearer {predict}"}
                          ).status_code == 403  # fmt: skip
        summary = client.get("/log/summary", headers={"Authorization": f"Bearer {admin}"}).json()
    assert summary["model_version"] == bundle.name and summary["prediction_log"] is None
    [version] = summary["registry"]
    assert version["version"] == 1 and "champion" in version["aliases"]
    assert version["roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
