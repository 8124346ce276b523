"""Checks that a record vertical's fast path (`predict_records`) answers exactly as its
table path (`predict` on a DataFrame) does, record for record."""

from __future__ import annotations

from typing import Any

import pandas as pd

from verticals.core.contract import RecordVertical, records_of
from verticals.core.records import RecordCodec


def validated(vertical: RecordVertical, model: Any, records: list[dict[str, Any]]) -> list[dict]:
    """`records` as a server hands them to the model: validated, dumped by column name."""
    return RecordCodec.of(vertical, model).validate(records)


def assert_same_answers(
    vertical: RecordVertical, model: Any, requests: list[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """Each request (a list of raw records) scored both ways: the answers must be equal,
    and the fast path must give each request its own answer when they come together."""
    checked = [validated(vertical, model, records) for records in requests]
    table = [records_of(vertical.predict(model, pd.DataFrame(r))) for r in checked]
    together = vertical.predict_records(model, checked)
    alone = [vertical.predict_records(model, [r])[0] for r in checked]
    assert alone == table
    assert together == table
    return table
