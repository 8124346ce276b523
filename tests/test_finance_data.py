"""Finance data sources and the errors a user sees for bad tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verticals.core.errors import UserError
from verticals.finance import german
from verticals.finance.data import load_splits
from verticals.finance.synthetic import MONOTONE, generate_applicants

from .conftest import finance_cfg


def test_shipped_german_credit() -> None:
    frame = german.load_shipped()
    assert frame.shape == (1000, 21)
    assert frame["default"].mean() == pytest.approx(0.3)
    assert list(frame.columns[:-1]) == german.COLUMNS


def test_uci_coded_file_decodes_to_the_shipped_table(tmp_path: Path) -> None:
    lines = [
        "A11 6 A34 A43 1169 A65 A75 4 A93 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 1",
        "A12 48 A32 A43 5951 A61 A73 2 A92 A101 2 A121 22 A143 A152 1 A173 1 A191 A201 2 ",
    ]
    (tmp_path / "german.data").write_text("\n".join(lines) + "\n")
    coded = german.load_uci(tmp_path / "german.data")
    shipped = german.load_shipped().head(2)
    pd.testing.assert_frame_equal(coded, shipped, check_dtype=False)
    (tmp_path / "bad.data").write_text(lines[0].replace("A11", "A19") + "\n")
    with pytest.raises(UserError, match="status_of_existing_checking_account has codes"):
        german.load_uci(tmp_path / "bad.data")


@pytest.mark.skipif(
    not os.environ.get("VERTICALS_DATA_DIR"), reason="set VERTICALS_DATA_DIR for real-data checks"
)
def test_real_uci_file_matches_shipped_copy() -> None:
    path = Path(os.environ["VERTICALS_DATA_DIR"]) / "credit" / "german.data"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    coded = german.load_uci(path)
    pd.testing.assert_frame_equal(coded, german.load_shipped(), check_dtype=False)


def test_synthetic_generator_plants_known_effects() -> None:
    frame = generate_applicants(40_000, seed=1)
    assert 0.1 < frame["default"].mean() < 0.3
    # The observed default rate tracks the planted PD.
    assert abs(frame["default"].mean() - frame["true_pd"].mean()) < 0.01
    for feature, sign in MONOTONE.items():
        corr = np.corrcoef(frame[feature].fillna(frame[feature].median()), frame["true_pd"])[0, 1]
        assert np.sign(corr) == sign, feature
    assert frame["months_employed"].isna().mean() == pytest.approx(0.03, abs=0.01)
    assert generate_applicants(10, seed=5).equals(generate_applicants(10, seed=5))


def test_out_of_time_split_puts_latest_in_test(tmp_path: Path) -> None:
    frame = generate_applicants(2_000, seed=2).drop(columns=["true_pd"])
    frame.to_parquet(tmp_path / "loans.parquet")
    cfg = finance_cfg(
        tmp_path,
        "data=table",
        f"data.path={tmp_path / 'loans.parquet'}",
        "data.date_column=application_date",
    )
    splits = load_splits(cfg)
    dates = frame["application_date"]
    assert dates.iloc[splits.test.X.index].min() >= dates.iloc[splits.train.X.index].max()
    assert "out-of-time" in splits.info["split"]


def _table(tmp_path: Path, frame: pd.DataFrame, *overrides: str):
    path = tmp_path / "loans.csv"
    frame.to_csv(path, index=False)
    return finance_cfg(tmp_path, "data=table", f"data.path={path}", *overrides)


@pytest.mark.parametrize(
    ("frame", "overrides", "message"),
    [
        (pd.DataFrame({"x": [1, 2], "y": [0, 1]}), [], "target column 'default' not found"),
        (pd.DataFrame({"x": [1, 2, 3], "default": [0, 1, 2]}), [], "must be binary 0/1"),
        (pd.DataFrame({"x": [1, 2], "default": [1, 1]}), [], "has only the value 1"),
        (pd.DataFrame({"x": [1, None], "default": [0, None]}), [], "1 missing values"),
        (
            pd.DataFrame({"income": ["10", "abc"], "default": [0, 1]}),
            ["data.numeric=[income]"],
            "column 'income' is declared numeric but holds 'abc'",
        ),
        (
            pd.DataFrame({"x": [1, 2], "default": [0, 1]}),
            ["data.categorical=[nope]"],
            "column 'nope' named in the data config is not in the file",
        ),
    ],
)
def test_bad_tables_name_the_column(tmp_path: Path, frame, overrides, message) -> None:
    with pytest.raises(UserError, match=message):
        load_splits(_table(tmp_path, frame, *overrides))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "loans.csv").write_text("")
    cfg = finance_cfg(tmp_path, "data=table", f"data.path={tmp_path / 'loans.csv'}")
    with pytest.raises(UserError, match="is empty"):
        load_splits(cfg)
    cfg = finance_cfg(tmp_path, "data=table", f"data.path={tmp_path / 'none.parquet'}")
    with pytest.raises(UserError, match="none.parquet does not exist"):
        load_splits(cfg)


def test_text_and_numeric_columns_are_detected(tmp_path: Path) -> None:
    frame = generate_applicants(500, seed=3).drop(columns=["true_pd", "application_date"])
    splits = load_splits(_table(tmp_path, frame))
    schema = splits.info["schema"]
    assert set(schema.categorical) == {"home_ownership", "purpose", "region"}
    assert "income" in schema.numeric and "default" not in schema.features
    assert str(splits.train.X["purpose"].dtype) == "category"


def test_matrix_and_frame_score_the_same(finance_run) -> None:
    """The fast matrix path gives LightGBM exactly what the typed frame gives it."""
    from verticals.finance.data import to_features, to_matrix

    model = finance_run.model
    raw = finance_run.vertical.example_inputs(finance_run.splits, 300)
    raw.loc[raw.index[0], "purpose"] = "a purpose never seen"  # unseen level: missing
    raw = raw.drop(columns=["income"])  # a missing optional column: missing
    frame, matrix = to_features(raw, model.schema), to_matrix(raw, model.schema)
    np.testing.assert_array_equal(model.contributions(frame), model.contributions(matrix))
    assert np.isnan(matrix[0, model.schema.features.index("purpose")])
