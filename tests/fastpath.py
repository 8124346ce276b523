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
    vertical: RecordVertical,
    model: Any,
    requests: list[list[dict[str, Any]]],
    together_within: float = 0.0,
) -> list[list[dict[str, Any]]]:
    """Each request (a list of raw records) scored both ways: the answers must be equal,
    and the fast path must give each request its own answer when they come together.

    `together_within`: how far numbers may move when requests share one model call. A
    network's float32 kernels on a CPU sum in an order that depends on the batch size, so
    a forecast rounded to 0.01 may move by one step; alone, answers must be equal.
    """
    checked = [validated(vertical, model, records) for records in requests]
    table = [records_of(vertical.predict(model, pd.DataFrame(r))) for r in checked]
    together = vertical.predict_records(model, checked)
    alone = [vertical.predict_records(model, [r])[0] for r in checked]
    assert alone == table
    if together_within:
        assert [len(rows) for rows in together] == [len(rows) for rows in table]
        for rows, expected in zip(together, table, strict=True):
            for row, want in zip(rows, expected, strict=True):
                assert row.keys() == want.keys()
                for key, value in row.items():
                    if isinstance(value, float):
                        assert abs(value - want[key]) <= together_within, (key, row, want)
                    else:
                        assert value == want[key], (key, row, want)
    else:
        assert together == table
    return table
