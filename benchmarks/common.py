"""What every benchmark script shares: output, the standard flags, where real data lives."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def say(text: str = "") -> None:
    print(text, flush=True)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark takes: --device and --out."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return parser


def write_figures(path: Path | None, results: dict[str, Any]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        say(f"figures written to {path}")


def real_data(name: str, marker: str = "") -> Path | None:
    """`$VERTICALS_DATA_DIR/<name>` when it holds `marker` (a file or folder), else None."""
    root = os.environ.get("VERTICALS_DATA_DIR")
    path = Path(root) / name if root else None
    return path if path and (path / marker).exists() else None
