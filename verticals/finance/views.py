"""What a credit officer sees of a score on the console: PD, score and grade in large
type, and why, as the reasons' contributions to the log-odds of default."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure as MplFigure

from verticals.core.views import Answer, Figure, Headline, Note, Table, View
from verticals.finance.model import FinanceModel

RAISES, LOWERS = "#c0392b", "#1e8449"  # red: raises the risk; green: lowers it


def view(model: FinanceModel, answer: Answer, controls: dict[str, Any]) -> View:
    rows = answer.body.get("predictions") or []
    if not rows:
        return View([Note("The answer holds no applicant.")])
    first = rows[0]
    panels: list[Any] = [
        Headline(
            f"PD {first['pd']:.1%} · score {first['score']} · grade {first['grade']}",
            _tone(model, str(first["grade"])),
        ),  # fmt: skip
    ]
    if first.get("reasons"):
        panels.append(Figure(_reasons_chart(first["reasons"]), "principal reasons"))
    if first.get("out_of_range"):
        outside = ", ".join(first["out_of_range"])
        panels.append(Note(f"Outside the training range (scored, but less reliable): {outside}"))
    if len(rows) > 1:
        shown = [{k: row[k] for k in ("pd", "score", "grade")} for row in rows]
        panels.append(Table(shown, f"all {len(rows)} applicants"))
    return View(panels)


def _tone(model: FinanceModel, grade: str) -> str:
    """Good in the best third of the grade scale, bad in the worst third."""
    names = [str(name) for name, _ in sorted(model.card.grades, key=lambda g: -float(g[1]))]
    if grade not in names or len(names) < 2:
        return "neutral"
    position = names.index(grade) / (len(names) - 1)
    return "good" if position < 1 / 3 else "bad" if position > 2 / 3 else "neutral"


def _reasons_chart(reasons: list[dict[str, Any]]) -> MplFigure:
    """Horizontal bars of log-odds contributions, the largest effect on top."""
    labels = [f"{r['feature']} = {_value(r['value'])}" for r in reasons][::-1]
    values = [float(r["log_odds"]) for r in reasons][::-1]
    figure = MplFigure(figsize=(7.5, 0.45 * len(values) + 1.2))
    axes = figure.subplots()
    axes.barh(labels, values, color=[RAISES if v > 0 else LOWERS for v in values])
    axes.axvline(0, color="#444", linewidth=0.8)
    axes.set_xlabel("contribution to the log-odds of default (right: riskier)")
    figure.tight_layout()
    return figure


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
