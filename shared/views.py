"""What a vertical shows of one prediction on the console (`/ui`), as plain data.

A vertical turns an answer of `/predict` into a `View`: a list of panels (a headline in
large type, figures, pictures, tables, notes, a file to download) and, for answers one
looks around in (the slices of a volume, the horizons of a forecast), `Control`s whose
values it is given again. The console (`console.py`) draws them; neither side knows the
other's library: a vertical needs no Gradio, and the console knows no vertical.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

Tone = Literal["good", "bad", "neutral"]


@dataclass
class Headline:
    """The answer in one line, in large type (`tone` colours it: a pass, a fail)."""

    text: str
    tone: Tone = "neutral"


@dataclass
class Note:
    """A remark in Markdown (why an answer fell back, what a colour means)."""

    text: str


@dataclass
class Picture:
    """An image: an RGB(A) or grey array, or the bytes of a PNG/JPEG file."""

    image: np.ndarray | bytes
    title: str = ""


@dataclass
class Figure:
    """A matplotlib figure (a chart); drawn to a picture and closed by the console."""

    figure: Any
    title: str = ""


@dataclass
class Table:
    """Rows of a table: a list of dicts or a pandas DataFrame."""

    rows: Any
    title: str = ""


@dataclass
class Download:
    """A file the user can save (a predicted mask)."""

    name: str
    content: bytes


Panel = Headline | Note | Picture | Figure | Table | Download


@dataclass
class Slider:
    """A whole number the user picks (a slice, a horizon); a view may move its bounds."""

    name: str
    label: str
    minimum: int = 0
    maximum: int = 1
    value: int = 0


@dataclass
class Choice:
    """One of some words (an axis, a sensor); a view may change the options."""

    name: str
    label: str
    options: list[str] = field(default_factory=list)
    value: str | None = None


Control = Slider | Choice


@dataclass
class Answer:
    """One answered `/predict`, as a view gets it.

    `records`: the records sent (a record vertical); `upload`: the file sent (a file
    vertical); `body`: the JSON answer; `output`: the output file (a mask, an annotated
    image) of a file vertical, decoded.
    """

    body: dict[str, Any]
    request_id: str = ""
    model_version: str = ""
    records: list[dict[str, Any]] | None = None
    upload: Path | None = None
    output: bytes | None = None
    output_name: str = ""
    #: the answer to the records the view asked for (`View.ask`), or the refusal's message
    related: Answer | str | None = None


@dataclass
class View:
    """Panels, top to bottom, and changes to the vertical's controls (`{name: {"maximum":
    9, "value": 4}}`, `{name: {"choices": [...]}}`) that fit this answer."""

    panels: list[Panel]
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: records to send to `/predict` as well (similar items of a chosen one): the console
    #: sends them with the page's token and calls `view` again with `answer.related` set
    ask: list[dict[str, Any]] | None = None


def png_of(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes; one made by pyplot is closed (pyplot keeps them)."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        if getattr(figure.canvas, "manager", None) is not None:
            import matplotlib.pyplot as plt

            plt.close(figure)
    return buffer.getvalue()
