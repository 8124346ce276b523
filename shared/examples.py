"""Example inputs saved with a run and its bundle: what a server predicts once before it
says it is ready.

A model's first call is its slowest (lazy kernels, thread pools, caches, ONNX sessions),
and a model that loads but cannot predict should never receive traffic. Training writes a
few test inputs, as a user would send them, into `examples/`; the bundle carries them, and
serving scores them once before `/ready` turns true.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from verticals.core.contract import FileVertical, Splits, Vertical
from verticals.core.logs import get_logger

log = get_logger("examples")
EXAMPLES = "examples"
_RECORDS = "inputs.parquet"


def write_examples(vertical: Vertical, splits: Splits, directory: Path, n: int = 2) -> None:
    """Write up to `n` test inputs into `directory` (records as Parquet, files as files)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        if isinstance(vertical, FileVertical):
            vertical.example_files(splits, 1, directory)
        else:
            vertical.example_inputs(splits, n).to_parquet(directory / _RECORDS, index=False)
    except Exception as exc:  # examples only warm servers up: never fail a finished training
        log.warning("%s: no example inputs saved (%s); no server warm-up", vertical.name, exc)


def warm_up(vertical: Vertical, model: Any, directory: Path) -> float | None:
    """Predict the saved examples once; the seconds it took, or None without examples.

    Errors propagate: a model that cannot score its own examples must not be served.
    """
    started = time.perf_counter()
    if isinstance(vertical, FileVertical):
        files = vertical.find_inputs(directory) if directory.is_dir() else []
        if not files:
            return None
        vertical.predict_path(model, files[0])
    else:
        path = directory / _RECORDS
        if not path.is_file():
            return None
        import pandas as pd

        vertical.predict(model, pd.read_parquet(path))
    return time.perf_counter() - started


def example_body(directory: Path) -> bytes | None:
    """The saved example records as a client sends them: a JSON list (None without any)."""
    path = directory / _RECORDS
    if not path.is_file():
        return None
    import pandas as pd

    return pd.read_parquet(path).to_json(orient="records", date_format="iso").encode()
