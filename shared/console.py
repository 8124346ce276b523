"""The web console of a served vertical (`/ui`), built with Gradio.

Two tabs. The vertical's page: an input (a form generated from the request schema with
the bundle's example filled in, JSON for a request of many records, an upload or an
example file for a file vertical), the answer drawn as the vertical's `view` says
(`views.py`), controls to look around in it, and the feedback form generated from the
outcome schema. The operations tab: the version serving and its metrics, feedback
counts, recent predictions, the latest monitor figures with their thresholds, and the
registry's versions, from `GET /log/summary`.

Every action goes through the app's own routes with the token typed into the page
(`console_mount.Caller`): no second path to the model, the same authentication, and every
prediction in the prediction log. Gradio serves its scripts, styles and fonts itself:
the page loads nothing from outside the machine.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import functools
import html
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verticals.core.console_forms import (
    FormField,
    form_fields,
    record_of,
    skeleton,
    values_of,
)
from verticals.core.console_mount import CONSOLE_PATH, Caller, message_of
from verticals.core.contract import FileVertical, RecordVertical
from verticals.core.examples import EXAMPLES
from verticals.core.logs import get_logger
from verticals.core.ops_route import SUMMARY_PATH
from verticals.core.views import (
    Answer,
    Choice,
    Download,
    Figure,
    Headline,
    Note,
    Picture,
    Slider,
    Table,
    View,
    png_of,
)

log = get_logger("console")
PICTURES, TABLES = 2, 2  # places for a view's images and tables, filled in order
FORM_COLUMNS = 3
MIN_PICTURE_PX = 384
CACHE_SWEEP = (3600, 3600)  # (every s, older than s): Gradio's `delete_cache`
LOGGED_CHOICES = 50  # requests of the log offered to fill a form with
_CSS = """
.vt-headline {font-size: 2.2rem; font-weight: 700; padding: .4rem .8rem; border-radius: 8px}
.vt-good {color: #0a6b2d; background: #e3f6e8} .vt-bad {color: #9b1111; background: #fde6e6}
.vt-neutral {color: #1f2937; background: #eef1f5}
"""


@dataclass
class Served:
    """What the console needs of the server: its routes, and the version serving now."""

    caller: Caller
    versions: Any  # hotswap.Versions of the routes' ModelVersion objects
    max_file_bytes: int


def build(served: Served) -> Any:
    """The console as a FastAPI app with Gradio mounted at `/ui` (imports Gradio)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI

    current = served.versions.current
    vertical = current.vertical
    title = f"Verticals: {vertical.title or vertical.name}"
    # uploads and drawn pictures land in Gradio's cache: cleared hourly of those over an hour
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=CACHE_SWEEP) as blocks:
        gr.Markdown(f"# {html.escape(title)}")
        token = gr.Textbox(
            label="Token", type="password", placeholder="vt_... (verticals token create)",
            info="kept in this page only; sent with each action, as the API's bearer token",
        )  # fmt: skip
        with gr.Tab(vertical.title or vertical.name):
            _prediction_page(gr, served, token)
        with gr.Tab("Operations"):
            _operations_page(gr, served, token)
    inner = FastAPI()
    return gr.mount_gradio_app(
        inner, blocks, path=CONSOLE_PATH, footer_links=[], run_history=False, css=_CSS,
        max_file_size=served.max_file_bytes, ssr_mode=False, root_path=CONSOLE_PATH,
    )  # fmt: skip


# -- the vertical's page ---------------------------------------------------------------------


def _prediction_page(gr: Any, served: Served, token: Any) -> None:
    current = served.versions.current
    vertical, bundle_dir = current.vertical, current.bundle.path
    state = gr.State(None)  # the shown Answer (server side, per page)
    if isinstance(vertical, FileVertical):
        ask, inputs = _file_input(gr, served, vertical, bundle_dir / EXAMPLES)
    else:
        ask, inputs = _record_input(gr, served, token, current.schema.get("request"), bundle_dir)
    go = gr.Button("Predict", variant="primary")
    headline = gr.HTML()
    note = gr.Markdown(visible=False)
    controls = [_control(gr, c) for c in vertical.view_controls]
    pictures = [gr.Image(visible=False, interactive=False, type="pil") for _ in range(PICTURES)]
    tables = [gr.Dataframe(visible=False, interactive=False, wrap=True) for _ in range(TABLES)]
    download = gr.File(visible=False, label="download", interactive=False)
    with gr.Accordion("The answer as JSON", open=False):
        raw = gr.JSON()
    outputs = [state, headline, note, *pictures, *tables, download, raw, *controls]
    names = [c.name for c in vertical.view_controls]

    async def predict(token_value: str, *values: Any) -> list[Any]:
        given, control_values = values[: len(inputs)], values[len(inputs) :]
        answer = await ask(token_value, *given)
        if isinstance(answer, str):  # refused: say why, keep nothing
            return [None, _headline(answer, "bad"), *_hidden(gr, outputs[2:], controls)]
        # a new answer: sliders start where the view puts them (the fullest slice)
        starting = {n: None if isinstance(c, Slider) else v for n, c, v in
                    zip(names, vertical.view_controls, control_values, strict=True)}  # fmt: skip
        return [answer, *await _render(gr, served, token_value, answer, starting)]

    async def redraw(token_value: str, answer: Answer | None, *control_values: Any) -> list[Any]:
        if answer is None:  # nothing predicted in this page yet (or on another worker)
            return [gr.update() for _ in outputs[1:]]
        controls_given = dict(zip(names, control_values, strict=True))
        return await _render(gr, served, token_value, answer, controls_given)

    go.click(predict, [token, *inputs, *controls], outputs, queue=False)
    for control in controls:  # a user's choice (not the view's own updates) redraws, once
        event = control.release if hasattr(control, "release") else control.select
        event(redraw, [token, state, *controls], outputs[1:], queue=False,
              trigger_mode="always_last")  # fmt: skip
    _feedback_form(gr, served, token, state)


def _record_input(
    gr: Any, served: Served, token: Any, schema: Any, bundle_dir: Path
) -> tuple[Any, list[Any]]:
    """A form for one record (or JSON for a request of many), the example filled in, and
    any request of the log to fill it with instead."""
    vertical = served.versions.current.vertical
    examples = _example_records(bundle_dir / EXAMPLES)
    fields = None
    if isinstance(vertical, RecordVertical) and vertical.group_column is None and schema:
        fields = form_fields(schema)
    if fields is None:
        group = getattr(vertical, "group_column", None)
        if group and examples and group in examples[0]:  # one window of readings, not all
            examples = [r for r in examples if r.get(group) == examples[0][group]]
        body = gr.Code(
            value=json.dumps(examples, indent=1, default=str), language="json",
            label="request (JSON: a list of records)", max_lines=16,
        )  # fmt: skip

        async def ask_json(token_value: str, text: str) -> Answer | str:
            try:
                records = json.loads(text)
            except ValueError as exc:
                return f"the request is not JSON: {exc}"
            return await _ask_records(served, token_value, records)

        return ask_json, [body]
    first = examples[0] if examples else {}
    components = []
    paired = list(zip(fields, values_of(fields, first), strict=True))
    with gr.Group():
        for start in range(0, len(paired), FORM_COLUMNS):
            with gr.Row():
                components += [_field(gr, f, v) for f, v in paired[start : start + FORM_COLUMNS]]
    _from_the_log(gr, served, token, fields, components)

    async def ask_form(token_value: str, *values: Any) -> Answer | str:
        try:
            record = record_of(fields, list(values))
        except ValueError as exc:
            return str(exc)
        return await _ask_records(served, token_value, [record])

    return ask_form, components


def _from_the_log(
    gr: Any, served: Served, token: Any, fields: list[FormField], components: list[Any]
) -> None:
    """A request of the prediction log (a customer who asked before) into the form: the
    log is read with the page's token, so it takes an admin one."""
    with gr.Row():
        logged = gr.Dropdown(choices=[], label="or a request from the prediction log",
                             info="Load needs an admin token", scale=4)  # fmt: skip
        load = gr.Button("Load", scale=1)
    found = gr.State({})  # request id -> its first record

    async def listed(token_value: str) -> list[Any]:
        response = await served.caller.call("GET", SUMMARY_PATH, token_value,
                                            params={"recent": LOGGED_CHOICES})  # fmt: skip
        if response.status_code != 200:
            return [gr.update(choices=[], value=None, info=message_of(response)), {}]
        records = {row["request_id"]: row["request"] for row in response.json().get("recent", [])
                   if isinstance(row.get("request"), dict)}  # fmt: skip
        choices = [(f"{rid[:12]}…  " + json.dumps(rec, default=str)[:90], rid)
                   for rid, rec in records.items()]  # fmt: skip
        info = f"{len(choices)} logged requests" if choices else "no request with its inputs"
        return [gr.update(choices=choices, value=None, info=info), records]

    def fill(request_id: str | None, records: dict[str, Any]) -> list[Any]:
        record = records.get(request_id or "")
        if record is None:
            return [gr.update() for _ in components]
        return values_of(fields, record)

    load.click(listed, [token], [logged, found], queue=False)
    logged.select(fill, [logged, found], components, queue=False)


async def _ask_records(served: Served, token: str, records: Any) -> Answer | str:
    response = await served.caller.call("POST", "/predict", token, json=records)
    if response.status_code != 200:
        return message_of(response)
    body = response.json()
    records = records if isinstance(records, list) else [records]
    return Answer(body, body.get("request_id") or "", body.get("model_version") or "", records)


def _file_input(
    gr: Any, served: Served, vertical: FileVertical, examples: Path
) -> tuple[Any, list[Any]]:
    """An upload, or one of the bundle's example files."""
    found = vertical.find_inputs(examples) if examples.is_dir() else []
    endings = ", ".join(vertical.input_suffixes)
    with gr.Row():
        upload = gr.File(label=f"input file ({endings})", type="filepath")
        example = gr.Dropdown(
            choices=[p.name for p in found], value=found[0].name if found else None,
            label="or an example of the bundle", info="used when no file is uploaded",
        )  # fmt: skip
    by_name = {p.name: p for p in found}

    async def ask_file(token_value: str, uploaded: str | None, chosen: str | None) -> Answer | str:
        path = Path(uploaded) if uploaded else by_name.get(chosen or "")
        if path is None:
            return "upload a file, or pick an example"
        data = await asyncio.to_thread(path.read_bytes)
        files = {"file": (path.name, data)}
        response = await served.caller.call("POST", "/predict", token_value, files=files)
        if response.status_code != 200:
            return message_of(response)
        body = response.json()
        out = body.get("output_file") or {}
        content = base64.b64decode(out["base64"]) if out.get("base64") else None
        return Answer(body, body.get("request_id") or "", body.get("model_version") or "",
                      upload=path, output=content, output_name=out.get("name", ""))  # fmt: skip

    return ask_file, [upload, example]


def _example_records(directory: Path) -> list[dict[str, Any]]:
    from verticals.core.examples import example_body

    body = example_body(directory)
    return json.loads(body) if body else []


def _field(gr: Any, field: FormField, value: Any) -> Any:
    info = field.description[:200] or None
    if field.kind == "choice":
        return gr.Dropdown(choices=["", *field.options], value=value or "", label=field.name,
                           info=info)  # fmt: skip
    if field.kind in ("number", "integer"):  # a text box: empty stays a missing value
        return gr.Textbox(value=value, label=field.name, info=info, max_lines=1,
                          placeholder="empty: missing")  # fmt: skip
    if field.kind == "boolean":
        return gr.Checkbox(value=bool(value), label=field.name, info=info)
    return gr.Textbox(value=value, label=field.name, info=info, max_lines=1)


def _control(gr: Any, control: Slider | Choice) -> Any:
    if isinstance(control, Slider):
        return gr.Slider(control.minimum, control.maximum, value=control.value, step=1,
                         label=control.label)  # fmt: skip
    return gr.Dropdown(choices=control.options, value=control.value, label=control.label)


async def _render(
    gr: Any, served: Served, token: str, answer: Answer, controls: dict[str, Any]
) -> list[Any]:
    """The view of `answer` as updates of the page's places (drawn in a thread); records
    the view asks for go to `/predict` first, as the page's own request would."""
    current = served.versions.current
    view = await asyncio.to_thread(current.vertical.view, current.model, answer, controls)
    if view.ask is not None:
        answer.related = await _ask_records(served, token, view.ask)
        view = await asyncio.to_thread(current.vertical.view, current.model, answer, controls)
    return await asyncio.to_thread(_updates, gr, view, answer, current.vertical.view_controls)


def _updates(gr: Any, view: View, answer: Answer, declared: tuple[Any, ...]) -> list[Any]:
    headlines = [p for p in view.panels if isinstance(p, Headline)]
    notes = [p.text for p in view.panels if isinstance(p, Note)]
    images = [p for p in view.panels if isinstance(p, Picture | Figure)][:PICTURES]
    tables = [p for p in view.panels if isinstance(p, Table)][:TABLES]
    files = [p for p in view.panels if isinstance(p, Download)][:1]
    head = headlines[0] if headlines else Headline(f"answered by {answer.model_version}")
    updates: list[Any] = [_headline(head.text, head.tone)]
    updates.append(gr.update(value="\n\n".join(notes), visible=bool(notes)))
    for i in range(PICTURES):
        if i < len(images):
            updates.append(gr.update(value=_image(images[i]), label=images[i].title or None,
                                     visible=True))  # fmt: skip
        else:
            updates.append(gr.update(value=None, visible=False))
    for i in range(TABLES):
        if i < len(tables):
            updates.append(gr.update(value=_frame(tables[i].rows), label=tables[i].title or None,
                                     visible=True))  # fmt: skip
        else:
            updates.append(gr.update(value=None, visible=False))
    if files:
        updates.append(gr.update(value=str(_stage(files[0])), visible=True))
    else:
        updates.append(gr.update(value=None, visible=False))
    body = dict(answer.body)
    if isinstance(body.get("output_file"), dict):  # not megabytes of base64 in the page
        body["output_file"] = {**body["output_file"], "base64": "(the file to download)"}
    updates.append(body)
    updates.extend(gr.update(**view.controls.get(c.name, {})) for c in declared)
    return updates


@functools.cache
def _staging() -> Path:
    """This process's folder of staged downloads, removed when it exits."""
    root = Path(tempfile.mkdtemp(prefix="verticals-console-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def _stage(download: Download) -> Path:
    """A file to offer for download, written where Gradio takes it from (it copies it into
    its own cache); this process's earlier ones over `CACHE_SWEEP` old are removed."""
    root = _staging()
    for old in root.glob("*/*"):
        with contextlib.suppress(OSError):  # another thread may have removed it first
            if time.time() - old.stat().st_mtime > CACHE_SWEEP[1]:
                old.unlink()
                old.parent.rmdir()
    path = Path(tempfile.mkdtemp(dir=root)) / Path(download.name).name
    path.write_bytes(download.content)
    return path


def _hidden(gr: Any, places: list[Any], controls: list[Any]) -> list[Any]:
    """Updates that clear the answer's places (after a refusal); controls stay."""
    cleared = [gr.update(visible=False)] * (len(places) - len(controls) - 1)
    return [*cleared, None, *[gr.update() for _ in controls]]


def _headline(text: str, tone: str) -> str:
    return f'<div class="vt-headline vt-{tone}">{html.escape(text)}</div>'


def _image(panel: Picture | Figure) -> Any:
    """A panel as a PIL image; a small picture (a 96-px part) enlarged, pixels kept sharp."""
    from PIL import Image

    if isinstance(panel, Figure):
        return Image.open(io.BytesIO(png_of(panel.figure)))
    image = (Image.open(io.BytesIO(panel.image)) if isinstance(panel.image, bytes)
             else Image.fromarray(panel.image))  # fmt: skip
    factor = MIN_PICTURE_PX // max(image.size)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def _frame(rows: Any) -> Any:
    import pandas as pd

    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


# -- feedback --------------------------------------------------------------------------------


def _feedback_form(gr: Any, served: Served, token: Any, state: Any) -> None:
    """The outcome of the shown prediction, posted to `/feedback` (needs the log)."""
    current = served.versions.current
    schema_model = current.vertical.outcome_schema(current.model)
    if schema_model is None:
        return
    file_field = getattr(current.vertical, "outcome_file", None)
    skip = ("request_id", "observed_at", *([file_field] if file_field else []))
    schema = schema_model.model_json_schema()
    fields = form_fields(schema, skip=skip)
    with gr.Accordion("Feedback: what really happened", open=False):
        if fields is None:  # nested (traffic's observed speeds): JSON to fill in
            template = json.dumps(skeleton(schema, skip), indent=1)
            components = [gr.Code(value=template, language="json", label="outcome (JSON)")]
        else:
            components = [_field(gr, f, f.default) for f in fields]
        upload = (
            gr.File(label=file_field, type="filepath", elem_id="feedback-file")
            if file_field
            else None
        )
        send = gr.Button("Send feedback")
        reply = gr.Markdown()

    async def post(token_value: str, answer: Answer | None, *values: Any) -> str:
        if answer is None:
            return "Predict first: feedback is about the prediction shown."
        given, file_path = (values[:-1], values[-1]) if upload is not None else (values, None)
        try:
            outcome = json.loads(given[0]) if fields is None else record_of(fields, list(given))
        except ValueError as exc:
            return f"The outcome is not valid: {exc}"
        if not isinstance(outcome, dict):
            return "The outcome must be one JSON object."
        outcome["request_id"] = answer.request_id
        outcome["observed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if upload is not None:
            if not file_path:
                return f"Upload the {file_field} file."
            data = await asyncio.to_thread(Path(file_path).read_bytes)
            files = {file_field: (Path(file_path).name, data)}
            form = {k: str(v) for k, v in outcome.items()}
            response = await served.caller.call("POST", "/feedback", token_value, data=form,
                                                files=files)  # fmt: skip
        else:
            response = await served.caller.call("POST", "/feedback", token_value, json=outcome)
        if response.status_code != 200:
            return f"**Refused** {html.escape(message_of(response))}"
        return f"Feedback stored for request `{answer.request_id}`."

    inputs = [token, state, *components, *([upload] if upload is not None else [])]
    send.click(post, inputs, reply, queue=False)


# -- the operations tab ----------------------------------------------------------------------


def _operations_page(gr: Any, served: Served, token: Any) -> None:
    gr.Markdown("Needs an admin token. Read-only: promotion stays a command (`verticals promote`).")
    refresh = gr.Button("Refresh", variant="primary")
    overview = gr.Markdown()
    recent = gr.Dataframe(label="recent predictions", interactive=False, wrap=True)
    monitor_note = gr.Markdown()
    monitor = gr.Dataframe(label="latest monitor: drift per column", interactive=False,
                           visible=False)  # fmt: skip
    registry = gr.Dataframe(label="registry (★ champion)", interactive=False)

    async def load(token_value: str) -> list[Any]:
        response = await served.caller.call("GET", SUMMARY_PATH, token_value)
        if response.status_code != 200:
            return [f"**Refused** {html.escape(message_of(response))}", None, "", None, None]
        shown = await asyncio.to_thread(_operations, response.json())
        shown[3] = gr.update(value=shown[3], visible=not shown[3].empty)
        return shown

    refresh.click(load, [token], [overview, recent, monitor_note, monitor, registry], queue=False)


def _operations(summary: dict[str, Any]) -> list[Any]:
    import pandas as pd

    metrics = summary.get("metrics") or {}
    shown = ", ".join(
        f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float)
    )  # fmt: skip
    lines = [
        f"**Serving** `{summary['model_version']}` ({summary['vertical']})",
        f"**Test metrics** {shown or 'none'}",
    ]
    if summary.get("prediction_log") is None:
        lines.append("**Prediction log** off: no recent predictions, feedback or monitor figures")
    else:
        total, day = summary["counts"], summary["counts_24h"]
        lines.append(
            f"**Predictions** {total['predictions']} ({day['predictions']} in 24 h); "
            f"**feedback** {total['outcomes']} ({day['outcomes']} in 24 h)"
        )
    recent = pd.DataFrame(summary.get("recent") or []).drop(columns="request", errors="ignore")
    monitor = summary.get("monitor")
    if monitor is None:
        note, columns = "No monitor run yet (`verticals monitor`).", pd.DataFrame()
    else:
        figures = monitor["figures"]
        verdict = "**ok**" if monitor["ok"] else "**breached**"
        note_lines = [f"Monitor of {monitor['created']} on {monitor['rows']} rows: {verdict}"]
        note_lines += [f"- {b.get('message', b)}" for b in figures.get("breaches", [])]
        bounds = figures.get("thresholds", {}).get("live", {})
        for name, value in (figures.get("live") or {}).items():
            limits = bounds.get(name)
            note_lines.append(
                f"- live {name} {value:.4g}" + (f" (bounds {limits})" if limits else "")
            )
        if figures.get("note"):
            note_lines.append(f"- {figures['note']}")
        note = "\n".join(note_lines)
        columns = pd.DataFrame(
            [{"column": name, **{k: stats.get(k) for k in ("psi", "threshold", "band", "n")}}
             for name, stats in (figures.get("columns") or {}).items()]
        ).round(3)  # fmt: skip
    versions = summary.get("registry")
    if versions is None:
        reason = summary.get("registry_error") or "this server serves a bundle, not the champion"
        registry = pd.DataFrame([{"registry": reason}])
    else:
        registry = pd.DataFrame(versions).round(4)
        if not registry.empty:
            champion = registry["aliases"].str.contains("champion")
            registry.insert(0, "★", champion.map({True: "★", False: ""}))
    return ["\n\n".join(lines), recent, note, columns, registry]
