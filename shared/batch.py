"""Batch prediction: a bundle over a CSV/Parquet file, in batches, with a progress bar."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from shared.bundle import Bundle
from shared.errors import UserError
from shared.tables import TableWriter, check_readable, count_rows, iter_batches


def predict_file(
    bundle: Bundle,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 50_000,
    keep_columns: list[str] | None = None,
    progress: bool = True,
) -> int:
    """Score every row of `input_path` and write the predictions to `output_path`.

    Columns named in `keep_columns` (an id, say) are copied in front of the predictions.
    Returns the number of rows scored.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_readable(input_path, "input")
    writer = TableWriter(output_path)
    done = 0
    bar = tqdm(total=count_rows(input_path), unit="rows", desc="predict", disable=not progress)
    try:
        for frame in iter_batches(input_path, batch_size):
            try:
                result = bundle.vertical.predict_table(bundle.model, frame)
            except UserError as exc:  # say where in the file
                rows = f"rows {done + 1}-{done + len(frame)}"
                detail = exc.message.removeprefix("input: ")
                raise UserError(f"{input_path} ({rows}): {detail}") from None
            if keep_columns:
                kept = frame[[c for c in keep_columns if c in frame.columns]].reset_index(drop=True)
                result = kept.join(result.reset_index(drop=True), rsuffix="_pred")
            writer.write(result)
            done += len(frame)
            bar.update(len(frame))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close()
    return done
