"""Load applicants from the configured source, type the features, and split them.

Every check names the file and the column: a bank's analyst should never have to read a
traceback to learn that `default` has three values.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split

from verticals.core import table_shards
from verticals.core.contract import Splits
from verticals.core.errors import UserError
from verticals.core.tables import read_table
from verticals.finance import german
from verticals.finance.config import FinanceSource
from verticals.finance.synthetic import generate_applicants

ORACLE_COLUMNS = ("true_pd",)  # planted truth: never a feature


@dataclass
class FeatureSchema:
    """The model's inputs: numeric columns, and categorical columns with their levels.

    `ranges` holds each numeric column's [min, max] in the training rows (a value outside is
    scored and flagged), `bounds` its plausible [low, high] (either may be None: open), past
    which a request is refused. Models saved before either existed have neither.
    """

    numeric: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    bounds: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, object]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "ranges": self.ranges,
            "bounds": self.bounds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSchema:
        return cls(
            list(data["numeric"]),
            {k: list(v) for k, v in data["categorical"].items()},
            {k: list(v) for k, v in data.get("ranges", {}).items()},
            {k: list(v) for k, v in data.get("bounds", {}).items()},
        )

    @cached_property
    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the training range per numeric column, NaN where unknown (a NaN
        compares false, so nothing is flagged there). Built once per model."""
        nan = float("nan")
        low = [self.ranges.get(name, [nan, nan])[0] for name in self.numeric]
        high = [self.ranges.get(name, [nan, nan])[1] for name in self.numeric]
        return np.array(low, dtype=np.float64), np.array(high, dtype=np.float64)

    def out_of_range(self, X: np.ndarray) -> list[list[str]]:
        """Per row of a feature matrix, the numeric columns outside the training range:
        two vector comparisons, and a name lookup only for the rows that have any."""
        low, high = self.limits
        n = len(self.numeric)
        with np.errstate(invalid="ignore"):
            outside = (X[:, :n] < low) | (X[:, :n] > high)
        if not outside.any():
            return [[] for _ in range(len(X))]
        names = self.numeric
        return [[names[j] for j in np.flatnonzero(row)] if row.any() else [] for row in outside]

    @cached_property
    def codes(self) -> dict[str, dict[str, int]]:
        """Each categorical column's level -> code, built once per model for `record_matrix`."""
        return {name: {lv: i for i, lv in enumerate(lvs)} for name, lvs in self.categorical.items()}

    def record_matrix(self, records: list[dict[str, Any]]) -> np.ndarray:
        """`to_matrix` for a few validated records, without pandas: the serving fast path.

        Numbers go straight into the float array, levels to codes through `codes`; a
        missing key or value, or an unseen level, is NaN, as in `to_matrix`.
        """
        nan, codes, numeric = float("nan"), self.codes, self.numeric
        rows = []
        for record in records:
            row = [nan if (v := record.get(name)) is None else v for name in numeric]
            for name, levels in codes.items():
                value = record.get(name)
                code = None if value is None else levels.get(level_string(value))
                row.append(nan if code is None else code)
            rows.append(row)
        return np.array(rows, dtype=np.float64).reshape(len(records), len(self.features))


@dataclass
class Part:
    """One split: features typed by the schema, the 0/1 target, and any oracle columns."""

    X: pd.DataFrame
    y: np.ndarray
    extra: pd.DataFrame


def read_source(cfg: DictConfig, seed: int) -> tuple[pd.DataFrame, str]:
    """The raw table and a short description of where it came from."""
    source, target = FinanceSource(cfg.source), cfg.target  # member or saved config's word
    if source is FinanceSource.german:
        if cfg.path:
            return german.load_uci(cfg.path, target), f"UCI german.data at {cfg.path}"
        return german.load_shipped(target), "German Credit (UCI Statlog, shipped)"
    if source is FinanceSource.synthetic:
        return generate_applicants(int(cfg.n_rows), seed), f"synthetic applicants (seed {seed})"
    if not cfg.path:
        raise UserError("data=table needs data.path=<your .csv or .parquet file, or a folder>")
    if Path(cfg.path).is_dir() or glob.has_magic(str(cfg.path)):  # Parquet files, in memory
        return table_shards.read_all(str(cfg.path)), f"Parquet table {cfg.path}"
    return read_table(cfg.path, "data.path"), f"table {cfg.path}"


def binary_target(frame: pd.DataFrame, target: str, where: str, both: bool = True) -> np.ndarray:
    """The target as 0/1; anything else is an error that names the column. `both`: it
    must hold both values (a piece of a table need not)."""
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:12]))
        raise UserError(f"{where}: target column {target!r} not found; columns are {shown}")
    col = frame[target]
    if col.isna().any():
        raise UserError(
            f"{where}: target column {target!r} has {int(col.isna().sum())} missing values"
        )
    if col.dtype == bool:
        return col.to_numpy(dtype="int8")
    values = set(pd.unique(col))
    if not values <= {0, 1}:
        shown = sorted(map(str, values))[:5]
        raise UserError(
            f"{where}: target column {target!r} must be binary 0/1 (1 = default); found {shown}"
        )
    if both and len(values) < 2:
        raise UserError(f"{where}: target column {target!r} has only the value {values.pop()}")
    return col.to_numpy(dtype="int8")


def infer_schema(frame: pd.DataFrame, cfg: DictConfig, where: str) -> FeatureSchema:
    """Numeric and categorical features: declared in config, else detected from dtypes."""
    skip = {cfg.target, *(cfg.drop or []), *ORACLE_COLUMNS}
    if cfg.date_column:
        skip.add(cfg.date_column)
    for name in [*(cfg.categorical or []), *(cfg.numeric or []), *(cfg.drop or [])]:
        if name not in frame.columns:
            raise UserError(f"{where}: column {name!r} named in the data config is not in the file")
    declared_cat = set(cfg.categorical or [])
    declared_num = set(cfg.numeric or [])
    numeric, categorical = [], {}
    for name in frame.columns:
        if name in skip:
            continue
        col = frame[name]
        is_number = pd.api.types.is_numeric_dtype(col)
        if name in declared_num or (name not in declared_cat and is_number):
            bad = None if is_number else _first_non_numeric(col)
            if bad is not None:  # numbers stored as text are fine; words are not
                raise UserError(
                    f"{where}: column {name!r} is declared numeric but holds {bad!r}; "
                    "expected numbers (or declare it in data.categorical)"
                )
            numeric.append(name)
        elif pd.api.types.is_datetime64_any_dtype(col) or _looks_like_dates(col):
            raise UserError(
                f"{where}: column {name!r} holds dates; set data.date_column={name} for an "
                f"out-of-time split, or add it to data.drop"
            )
        else:
            levels = sorted(level_strings(col).dropna().unique())
            if len(levels) > 1000:
                raise UserError(
                    f"{where}: column {name!r} has {len(levels)} distinct text values; an id? "
                    "add it to data.drop"
                )
            categorical[name] = levels
    if not numeric and not categorical:
        raise UserError(f"{where}: no feature columns left besides the target")
    return FeatureSchema(numeric, categorical)


def _looks_like_dates(col: pd.Series) -> bool:
    """Text that is ISO dates (2024-01-31, 2024-01-31T09:00): a CSV's date column."""
    sample = col.dropna().astype("string").head(200)
    if sample.empty or not sample.str.match(r"^\d{4}-\d{2}-\d{2}").all():
        return False
    return bool(pd.to_datetime(sample, errors="coerce", format="ISO8601").notna().all())


def _first_non_numeric(col: pd.Series) -> object:
    converted = pd.to_numeric(col, errors="coerce")
    bad = col[converted.isna() & col.notna()]
    return bad.iloc[0] if len(bad) else None


def level_string(value: object) -> str:
    """One category value as `level_strings` writes it: a whole float loses its `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def level_strings(col: pd.Series) -> pd.Series:
    """Category values as text, the same whatever the dtype: 36, 36.0 and "36" are "36"."""
    if pd.api.types.is_float_dtype(col):
        whole = col.notna() & (col == col.round())
        col = col.astype(object).where(~whole, col.round().astype("Int64").astype(object))
    return col.astype("string")


def to_matrix(frame: pd.DataFrame, schema: FeatureSchema, where: str = "input") -> np.ndarray:
    """Features as LightGBM sees them: one float column per feature in model order, with
    categories as their codes. Missing columns, missing values and unseen categories are NaN.

    Scoring from this matrix gives the same numbers as from the typed frame, and skips
    LightGBM's per-call pandas handling (milliseconds per request).
    """
    out = np.full((len(frame), len(schema.features)), np.nan)
    for j, name in enumerate(schema.numeric):
        if name not in frame.columns:
            continue
        col = frame[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            converted = pd.to_numeric(col, errors="coerce")
            if (converted.isna() & col.notna()).any():
                bad = _first_non_numeric(col)
                raise UserError(f"{where}: column {name!r} must be numeric; found {bad!r}")
            col = converted
        out[:, j] = col.to_numpy(dtype="float64", na_value=np.nan)
    for j, (name, levels) in enumerate(schema.categorical.items(), start=len(schema.numeric)):
        if name in frame.columns and len(frame):
            codes = pd.Index(levels).get_indexer(level_strings(frame[name]))
            out[:, j] = np.where(codes < 0, np.nan, codes)
    return out


def to_features(frame: pd.DataFrame, schema: FeatureSchema, where: str = "input") -> pd.DataFrame:
    """The typed frame LightGBM trains on: floats, and pandas categoricals with fixed levels."""
    matrix = to_matrix(frame, schema, where)
    n_numeric = len(schema.numeric)
    columns: dict[str, object] = {name: matrix[:, j] for j, name in enumerate(schema.numeric)}
    for j, (name, levels) in enumerate(schema.categorical.items(), start=n_numeric):
        codes = np.nan_to_num(matrix[:, j], nan=-1).astype("int32")
        columns[name] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(levels))
    return pd.DataFrame(columns, index=frame.index)


def training_ranges(X: pd.DataFrame, numeric: list[str]) -> dict[str, list[float]]:
    """[min, max] of each numeric column's finite training values (none: left out)."""
    ranges = {}
    for name in numeric:
        values = X[name].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            ranges[name] = [float(values.min()), float(values.max())]
    return ranges


#: How far past the training range a value stays plausible, in widths of that range: a
#: value 10 ranges beyond anything seen is a typo or an attack, not an applicant.
PLAUSIBLE_SPANS = 10.0


def default_bounds(low: float, high: float) -> list[float | None]:
    """The plausible [low, high] of a column seen in [low, high]: never negative when no
    training value was (ages, amounts, counts), and at most `PLAUSIBLE_SPANS` widths out."""
    width = max(high - low, abs(low), abs(high), 1.0)
    floor = 0.0 if low >= 0 else -_round_up(PLAUSIBLE_SPANS * width - low)
    return [floor, _round_up(high + PLAUSIBLE_SPANS * width)]


def _round_up(value: float) -> float:
    """`value` (> 0) rounded up to two significant digits: a bound a person can read."""
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    return float(f"{math.ceil(value / step) * step:.3g}")  # no 0.12000000000000001


def plausible_bounds(
    ranges: dict[str, list[float]], numeric: list[str], given: Any
) -> dict[str, list[float | None]]:
    """Each numeric column's bounds: `data.bounds` where given (null: open on that side),
    else `default_bounds` of its training range."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(numeric))
    if unknown:
        raise UserError(
            f"data.bounds names {unknown}, which are not numeric features; "
            f"numeric features are {numeric}"
        )
    bounds = {name: default_bounds(*ranges[name]) for name in numeric if name in ranges}
    for name, pair in given.items():
        bounds[name] = [None if v is None else float(v) for v in pair]
    return bounds


def split(frame: pd.DataFrame, y: np.ndarray, cfg: DictConfig, seed: int) -> tuple[list, str]:
    """Row positions of train/val/test: out-of-time when a date column is set, else stratified."""
    idx = np.arange(len(frame))  # test_size and val_size in (0, 1): FinanceDataConfig checks
    if cfg.date_column:
        if cfg.date_column not in frame.columns:
            raise UserError(f"data.date_column={cfg.date_column!r} is not a column of the data")
        dates = pd.to_datetime(frame[cfg.date_column], errors="coerce")
        if dates.isna().any():
            raise UserError(f"column {cfg.date_column!r} has values that are not dates")
        order = np.argsort(dates.to_numpy(), kind="stable")
        n_test = max(int(round(len(idx) * cfg.test_size)), 1)
        n_val = max(int(round((len(idx) - n_test) * cfg.val_size)), 1)
        n_train = len(idx) - n_test - n_val
        train, val, test = order[:n_train], order[n_train:-n_test], order[-n_test:]
        cutoff = dates.iloc[test[0]].date()
        parts = [train, val, test]
        how = f"out-of-time on {cfg.date_column} (test from {cutoff})"
    else:
        if min(np.bincount(y, minlength=2)) < 3:
            raise UserError(
                f"the target has {int(y.sum())} defaults in {len(y)} rows; at least 3 of each "
                "class are needed to split into train, validation and test"
            )
        rest, test = train_test_split(idx, test_size=cfg.test_size, random_state=seed, stratify=y)
        train, val = train_test_split(
            rest, test_size=cfg.val_size, random_state=seed, stratify=y[rest]
        )
        parts, how = [np.sort(train), np.sort(val), np.sort(test)], "stratified random"
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if len(set(y[part].tolist())) < 2:
            raise UserError(
                f"the {name} split ({len(part)} rows, {how}) holds only one outcome; "
                "use more data or change data.test_size / data.val_size"
            )
    return parts, how


def load_splits(cfg: DictConfig) -> Splits:
    """The configured source as typed train/val/test parts plus a description for the card;
    `cfg.seed` draws the synthetic data and the random split."""
    from verticals.finance import shards  # it builds on this module

    if shards.wanted(cfg):  # on a cluster, from Parquet: never the whole table here
        return shards.load_splits(cfg)
    data, seed = cfg.data, int(cfg.seed)
    frame, description = read_source(data, seed)
    where = f"data ({description})"
    y = binary_target(frame, data.target, where)
    schema = infer_schema(frame, data, where)
    X = to_features(frame, schema, where)
    extra = frame[[c for c in ORACLE_COLUMNS if c in frame.columns]]
    parts, how = split(frame, y, data, seed)
    train, val, test = (Part(X.iloc[p], y[p], extra.iloc[p]) for p in parts)
    schema.ranges = training_ranges(train.X, schema.numeric)
    schema.bounds = plausible_bounds(schema.ranges, schema.numeric, data.get("bounds"))
    info = {
        "source": description,
        "rows": len(frame),
        "features": len(schema.features),
        "default_rate": round(float(y.mean()), 4),
        "split": f"{how}: {len(parts[0])}/{len(parts[1])}/{len(parts[2])}",
        "schema": schema,
    }
    return Splits(train, val, test, info)


def example_inputs(splits: Splits, n: int) -> pd.DataFrame:
    """`n` test applicants as a user sends them: missing values as None, as in JSON."""
    from verticals.finance import shards

    test = splits.test
    head = (shards.head(test, n) if isinstance(test, shards.ShardPart) else test).X.head(n)
    return head.astype(object).where(head.notna(), None)
