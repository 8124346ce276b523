"""A monitor run as files a person or a job reads: `summary.md`, `report.html` (one file,
its plots inlined, nothing fetched from the network), `plots/*.png` and `figures.json`
(every figure, threshold and breach)."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verticals.core.monitor import Result
from verticals.core.runs import save_figure, write_atomic

PLOTTED = 8  # columns drawn: the most drifted


def write(result: Result, folder: Path) -> dict[str, Path]:
    """Write the report files into `folder`; their paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, folder / "plots")
    figures = folder / "figures.json"
    write_atomic(figures, json.dumps(_json_safe(result.figures), indent=2) + "\n")
    summary = folder / "summary.md"
    write_atomic(summary, markdown(result))
    page = folder / "report.html"
    write_atomic(page, _html(result, plots))
    return {"summary": summary, "html": page, "figures": figures, "plots": folder / "plots"}


def _ranked(result: Result) -> list[tuple[str, dict[str, Any]]]:
    """Columns by PSI, largest first (those without one last)."""
    items = list(result.figures["columns"].items())
    return sorted(items, key=lambda kv: -(kv[1].get("psi") if _finite(kv[1].get("psi")) else -1))


def markdown(result: Result) -> str:
    f = result.figures
    window = f["window"]["since"] or "the start of the log"
    verdict = "inside its thresholds" if result.ok else f"{len(f['breaches'])} breach(es)"
    lines = [
        f"# Monitor: {f['vertical']} {f['model_version']}",
        "",
        f"- window: {window} to {f['window']['until'] or 'now'} (UTC); {f['requests']} logged "
        f"requests, {f['rows']} rows against {f['reference_rows']} reference rows",
        f"- feedback: {f['feedback']} outcomes; inputs logged: {f['inputs_logged']}",
        f"- verdict: **{'OK' if result.ok else 'ALERT'}**, every figure {verdict}"
        if result.ok else f"- verdict: **ALERT**: {verdict}",
    ]  # fmt: skip
    if f["note"]:
        lines.append(f"- note: {f['note']}")
    if f["breaches"]:
        lines += ["", "## Breaches", ""] + [f"- {b['message']}" for b in f["breaches"]]
    if f.get("rates"):
        lines += ["", "## Rates", "", "| column | live | bounds |", "| --- | --- | --- |"]
        for name, value in f["rates"].items():
            bounds = f["thresholds"]["rates"].get(name, {})
            shown = " ".join(f"{k} {v:g}" for k, v in bounds.items() if v is not None) or "-"
            lines.append(f"| {name} | {value:.4g} | {shown} |")
    if f["live"]:
        lines += ["", "## Live metrics (on feedback)", "", "| metric | live | test | bounds |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for name, value in f["live"].items():
            bounds = f["thresholds"]["live"].get(name, {})
            shown = " ".join(f"{k} {v:g}" for k, v in bounds.items() if v is not None) or "-"
            test = f["test"].get(name)
            lines.append(
                f"| {name} | {value:.4g} | {'-' if test is None else f'{test:.4g}'} | {shown} |"
            )
    lines += ["", "## Drift by column (PSI against the training reference)", "",
              "| column | kind | PSI | band | threshold | test | reference | live |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, stats in _ranked(result):
        kind = stats["kind"]
        if kind == "numeric":
            test = f"KS p={_num(stats.get('ks_pvalue'))}"
            ref, live = _num(stats.get("mean_reference")), _num(stats.get("mean"))
        else:
            test = f"chi2 p={_num(stats.get('chi2_pvalue'))}"
            ref, live = _top_share(stats.get("shares_reference")), _top_share(stats.get("shares"))
        lines.append(
            f"| {name} | {kind} | {_num(stats.get('psi'))} | {stats['band']} | "
            f"{stats['threshold']:g} | {test} | {ref} | {live} |"
        )
    if f["new_columns"]:
        lines += ["", f"Columns in the live data only: {', '.join(f['new_columns'])}"]
    lines += ["", "PSI bands: < 0.10 stable, 0.10 to the threshold watch, above it shifted. "
              "Numeric columns: means; categorical: the largest share.", ""]  # fmt: skip
    return "\n".join(lines)


def _plots(result: Result, folder: Path) -> list[Path]:
    """A PSI bar chart, and reference-vs-live distributions of the most drifted columns."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ranked = [(n, s) for n, s in _ranked(result) if _finite(s.get("psi"))]
    if ranked:
        shown = ranked[:30][::-1]
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.5))
        colours = ["#c0392b" if s["psi"] > s["threshold"] else
                   "#e67e22" if s["band"] == "watch" else "#27ae60" for _, s in shown]  # fmt: skip
        ax.barh([n for n, _ in shown], [s["psi"] for _, s in shown], color=colours)
        thresholds = result.figures["thresholds"]
        ax.axvline(thresholds["psi_watch"], color="#e67e22", ls="--", lw=1, label="watch")
        ax.axvline(thresholds["psi_alert"], color="#c0392b", ls="--", lw=1, label="shifted")
        ax.legend(loc="lower right")
        ax.set_xlabel("PSI against the training reference")
        ax.set_title(f"{result.figures['vertical']}: drift by column")
        paths.append(save_figure(fig, folder / "psi.png"))
    for number, (name, stats) in enumerate(ranked[:PLOTTED]):
        if name not in result.live_frame.columns or stats["n"] == 0:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ref, live = result.reference_frame[name], result.live_frame[name]
        if stats["kind"] == "numeric":
            both = pd.to_numeric(pd.concat([ref, live]), errors="coerce").dropna()
            bins = np.histogram_bin_edges(both, bins=30) if len(both) else 10
            ax.hist(pd.to_numeric(ref, errors="coerce").dropna(), bins=bins, density=True,
                    alpha=0.5, label="reference")  # fmt: skip
            ax.hist(pd.to_numeric(live, errors="coerce").dropna(), bins=bins, density=True,
                    alpha=0.5, label="live")  # fmt: skip
        else:
            shares = pd.DataFrame(
                {"reference": pd.Series(stats.get("shares_reference", {})),
                 "live": pd.Series(stats.get("shares", {}))}
            ).fillna(0)  # fmt: skip
            shares.plot.bar(ax=ax, rot=30)
        ax.set_title(f"{name}: PSI {stats['psi']:.3f} ({stats['band']})")
        ax.legend()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
        paths.append(save_figure(fig, folder / f"{number + 1:02d}_{safe}.png"))
    return paths


def _html(result: Result, plots: list[Path]) -> str:
    """The summary as one self-contained page: inline styles, plots as data URIs."""
    body = _markdown_table_html(markdown(result))
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in plots
    )
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left}img{max-width:100%}figure{margin:1em 0}"
    )
    title = html.escape(f"Monitor: {result.figures['vertical']} {result.figures['model_version']}")
    head = f"<head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{body}<h2>Plots</h2>{images}</body></html>\n"


def _markdown_table_html(text: str) -> str:
    """The few Markdown forms the summary uses (headings, bullets, tables) as HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        safe = html.escape(line).replace("**", "")
        if line.startswith("|"):
            cells = [c.strip() for c in safe.strip("|").split("|")]
            if not all(set(c) <= {"-", " "} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{safe[3:]}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{safe[2:]}</h1>")
        elif line.startswith("- "):
            out.append(f"<p>&bull; {safe[2:]}</p>")
        elif line.strip():
            out.append(f"<p>{safe}</p>")
    flush()
    return "\n".join(out)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _num(value: Any) -> str:
    return f"{value:.3g}" if _finite(value) else "-"


def _top_share(shares: dict[str, float] | None) -> str:
    if not shares:
        return "-"
    name, share = next(iter(shares.items()))
    return f"{str(name).replace('|', '/')[:24]} {share:.0%}"


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: figures.json is read by other tools' JSON parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
