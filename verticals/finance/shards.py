"""Applicants from a Parquet table that never sits whole in one process (`cluster=` runs).

With `cluster=ray_local|ray` and `data=table data.path=<Parquet file, folder or glob>`,
`load_splits` hands back `ShardPart`s instead of tables:

- the driver reads the files' footers and one row group (to type the columns), and Ray
  tasks profile the rest in one pass, each over its own row groups: the target's classes
  per split, every categorical column's levels, the numeric ranges of the training rows;
- rows go to train/validation/test by a hash of their values and `seed` (not stratified:
  on a table this size the classes split evenly), or, with `data.date_column`, by date
  cut-offs worked out from the per-day row counts;
- each LightGBM worker reads only its own row groups' training rows (`share`, `load`; the
  row groups are dealt by their training rows); all validate on the same sample of at
  most `data.max_val_rows` validation rows (the ones with the smallest hashes), so their
  early stopping agrees, and the PSI baseline is a like sample of the training rows;
- the test split is scored by Ray tasks over its row groups (`score`): the driver only
  holds the labels and PDs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from verticals.core import table_shards
from verticals.core.contract import Splits, Workers
from verticals.core.errors import UserError
from verticals.core.table_shards import TEST, TRAIN, VAL, Fragment
from verticals.finance.data import (
    ORACLE_COLUMNS,
    FeatureSchema,
    Part,
    binary_target,
    infer_schema,
    level_strings,
    plausible_bounds,
    to_features,
)

HEAD_ROWS = 10_000  # rows the driver reads to type the columns
PSI_SAMPLE = 100_000  # training rows kept (by hash) for the PSI baseline, as model.fit scores
MAX_LEVELS = 1000  # as `infer_schema`: more distinct texts is an id, not a category


@dataclass(frozen=True)
class Rule:
    """Which split a row belongs to: by hash (`seed`, sizes) or by date cut-offs."""

    seed: int
    test_size: float
    val_size: float
    date_column: str | None = None
    val_from: Any = None  # dates >= val_from: validation; >= test_from: test
    test_from: Any = None

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        if self.date_column:
            dates = _days(frame[self.date_column], self.date_column)
            return np.where(
                dates >= self.test_from, TEST, np.where(dates >= self.val_from, VAL, TRAIN)
            ).astype(np.int8)
        return self.assign(frame)[0]

    def assign(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each row's split and its place in a sample (smallest first), from one hash."""
        u = table_shards.uniform(frame, self.seed)
        if self.date_column:
            return self.codes(frame), u
        return table_shards.hash_split(u, self.test_size, self.val_size), u


@dataclass(frozen=True)
class ShardPart:
    """One split of a sharded table: the row groups to read and which rows to keep."""

    pieces: tuple[Fragment, ...]
    split: int
    rule: Rule
    schema: FeatureSchema
    target: str
    sample: pd.DataFrame | None = None  # typed rows of the split, by hash (the PSI baseline)

    def __len__(self) -> int:  # upper bound: the rows of its row groups
        return sum(p.rows for p in self.pieces)


def wanted(cfg: DictConfig) -> bool:
    """Whether this run reads its table in shards: on a cluster, from Parquet (then the
    command holds a Ray session while it reads, trains and evaluates)."""
    mode = str(OmegaConf.select(cfg, "cluster.mode", default="none") or "none")
    data = cfg.data
    return (
        mode != "none" and str(data.source) == "table" and table_shards.is_parquet_table(data.path)
    )


def _days(col: pd.Series, name: str) -> np.ndarray:
    dates = pd.to_datetime(col, errors="coerce")
    if dates.isna().any():
        raise UserError(f"column {name!r} has values that are not dates")
    return dates.dt.normalize().to_numpy()


def _rows(piece_frames: Any, rule: Rule, split: int) -> Any:
    for frame in piece_frames:
        keep = rule.codes(frame) == split
        if keep.any():
            yield frame[keep]


def _target(frame: pd.DataFrame, target: str, where: str) -> np.ndarray:
    """0/1 labels of some rows of the table (one class alone is fine in a piece)."""
    if not len(frame):
        return np.zeros(0, dtype="int8")
    return binary_target(frame, target, where, both=False)


def _where(piece: Fragment) -> str:
    return f"{piece.path} (row group {piece.row_group})"


def load(part: ShardPart, where: str = "data") -> Part:
    """The rows of `part` in this process, typed: a worker's share of the training rows."""
    frames = list(_rows(table_shards.read(part.pieces), part.rule, part.split))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        raise UserError(f"{where}: this worker's row groups hold no rows of its split")
    extra = frame[[c for c in ORACLE_COLUMNS if c in frame.columns]]
    return Part(to_features(frame, part.schema, where), _target(frame, part.target, where), extra)


def head(part: ShardPart, n: int) -> Part:
    """The first `n` rows of `part`, reading row groups until there are enough."""
    frames, have = [], 0
    for frame in _rows(table_shards.read(part.pieces), part.rule, part.split):
        frames.append(frame.head(n - have))
        have += len(frames[-1])
        if have >= n:
            break
    frame = pd.concat(frames, ignore_index=True)
    extra = frame[[c for c in ORACLE_COLUMNS if c in frame.columns]]
    return Part(to_features(frame, part.schema), _target(frame, part.target, "data"), extra)


def share(splits: Splits, workers: Workers) -> Splits:
    """A worker's row groups of the training split, dealt by their training rows (a row
    group of validation or test rows only, as a date-ordered table has, goes to none);
    validation is the shared sample."""
    train: ShardPart = splits.train
    where = f"data.path ({len(train.pieces)} row groups with training rows)"
    hands = table_shards.deal(train.pieces, workers.size, where)
    return replace(splits, train=replace(train, pieces=tuple(hands[workers.rank])))


# --- the profile pass: one Ray task per hand of row groups -------------------------------


def _smallest(frames: list[pd.DataFrame], cap: int) -> pd.DataFrame | None:
    """The `cap` rows of `frames` with the smallest `_order`: an even sample, by hash."""
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True).nsmallest(cap, "_order") if frames else None


def _profile(pieces: list[Fragment], data: dict[str, Any], rule: Rule, kinds: dict) -> dict:
    """What one task learns from its row groups; `_fold` adds the tasks' answers up."""
    target, numeric, categorical = data["target"], kinds["numeric"], kinds["categorical"]
    caps = {VAL: int(data.get("max_val_rows") or 200_000), TRAIN: PSI_SAMPLE}
    counts = np.zeros((3, 2), dtype=np.int64)  # [split][class]
    levels: dict[str, set[str]] = {name: set() for name in categorical}
    low = {name: np.inf for name in numeric}
    high = {name: -np.inf for name in numeric}
    samples: dict[int, pd.DataFrame | None] = {VAL: None, TRAIN: None}
    train_rows: dict[str, int] = {}
    for piece, frame in zip(pieces, table_shards.read(pieces), strict=True):
        y = _target(frame, target, _where(piece))
        codes, order = rule.assign(frame)
        np.add.at(counts, (codes, y), 1)
        for name in categorical:
            if len(levels[name]) <= MAX_LEVELS:
                levels[name].update(level_strings(frame[name]).dropna().unique())
        train = frame[codes == TRAIN]
        train_rows[piece.source] = len(train)
        for name in numeric:
            values = pd.to_numeric(train[name], errors="coerce").to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if len(values):
                low[name] = min(low[name], float(values.min()))
                high[name] = max(high[name], float(values.max()))
        for split, cap in caps.items():  # kept small as it goes: `cap` rows at most
            rows = frame[codes == split]
            if len(rows):
                rows = rows.assign(_order=order[codes == split])
                samples[split] = _smallest([samples[split], rows.nsmallest(cap, "_order")], cap)
    return {"counts": counts, "levels": levels, "low": low, "high": high,
            "samples": samples, "train_rows": train_rows}  # fmt: skip


def _fold(answers: Any, cap: int) -> dict:
    """The tasks' answers added up as they arrive: the driver holds one answer and the
    samples so far, never all the tasks' samples at once."""
    total: dict[str, Any] = {"counts": np.zeros((3, 2), dtype=np.int64), "levels": {},
                             "low": {}, "high": {}, "train_rows": {},
                             "samples": {VAL: None, TRAIN: None}}  # fmt: skip
    caps = {VAL: cap, TRAIN: PSI_SAMPLE}
    for a in answers:
        total["counts"] += a["counts"]
        total["train_rows"].update(a["train_rows"])
        for name, found in a["levels"].items():
            total["levels"].setdefault(name, set()).update(found)
        for name, value in a["low"].items():
            total["low"][name] = min(total["low"].get(name, np.inf), value)
            total["high"][name] = max(total["high"].get(name, -np.inf), a["high"][name])
        for split, limit in caps.items():
            total["samples"][split] = _smallest([total["samples"][split], a["samples"][split]],
                                                limit)  # fmt: skip
    return total


def _day_counts(pieces: list[Fragment], column: str) -> pd.Series:
    """Rows per day of the date column in these row groups (the column alone is read)."""
    total = pd.Series(dtype=np.int64)
    for frame in table_shards.read(pieces, [column]):
        days = pd.Series(_days(frame[column], column)).value_counts()
        total = total.add(days, fill_value=0)
    return total


def _date_rule(pieces: list[Fragment], data: DictConfig, seed: int) -> tuple[Rule, str]:
    """Cut-offs that put the latest days' `test_size` of the rows in test, and the days
    before them (`val_size` of the rest) in validation: a day is never split."""
    column = str(data.date_column)
    per_day = pd.Series(dtype=np.int64)
    for counts in table_shards.map_pieces(_day_counts, pieces, column):
        per_day = per_day.add(counts, fill_value=0)
    per_day = per_day.sort_index()
    if len(per_day) < 3:
        raise UserError(f"data.date_column={column}: {len(per_day)} distinct days; need 3+")
    total = float(per_day.sum())
    n_test = max(total * data.test_size, 1.0)
    n_val = max((total - n_test) * data.val_size, 1.0)
    days = per_day.index
    after = per_day[::-1].cumsum()[::-1].to_numpy()  # rows on or after each day
    i_test = int(np.argmax(after <= n_test)) if (after <= n_test).any() else len(days) - 1
    i_test = min(max(i_test, 2), len(days) - 1)  # at least a day each for train, validation
    between = after[:i_test] - after[i_test]  # rows from each earlier day up to the test
    i_val = int(np.argmax(between <= n_val)) if (between <= n_val).any() else i_test - 1
    i_val = min(max(i_val, 1), i_test - 1)
    val_from, test_from = days[i_val], days[i_test]
    rule = Rule(seed, data.test_size, data.val_size, column, val_from, test_from)
    how = (
        f"out-of-time on {column} (validation from {val_from.date()}, test from {test_from.date()})"
    )
    return rule, how


def load_splits(cfg: DictConfig) -> Splits:
    """Train/val/test of a sharded Parquet table: `ShardPart`s, a shared validation sample,
    and the schema and counts of the whole table, from one pass of Ray tasks."""
    data, seed = cfg.data, int(cfg.seed)
    where = f"data.path={data.path}"
    pieces = table_shards.fragments(str(data.path))
    first = next(table_shards.read(pieces[:1])).head(HEAD_ROWS)  # to type the columns
    _target(first, data.target, where)
    schema = infer_schema(first, data, where)
    if data.date_column:
        if data.date_column not in first.columns:
            raise UserError(f"data.date_column={data.date_column!r} is not a column of the data")
        rule, how = _date_rule(pieces, data, seed)
    else:
        rule, how = Rule(seed, data.test_size, data.val_size), "hash of each row's values"
    plain = OmegaConf.to_container(data, resolve=True)
    kinds = {"numeric": schema.numeric, "categorical": list(schema.categorical)}
    found = _fold(table_shards.map_pieces(_profile, pieces, plain, rule, kinds),
                  int(data.get("max_val_rows") or 200_000))  # fmt: skip
    counts = found["counts"]
    for split, name in ((TRAIN, "train"), (VAL, "validation"), (TEST, "test")):
        if (counts[split] == 0).any():
            raise UserError(
                f"{where}: the {name} split ({int(counts[split].sum())} rows, {how}) holds "
                "only one outcome; use more data or change data.test_size / data.val_size"
            )
    for name, levels in found["levels"].items():
        if len(levels) > MAX_LEVELS:
            raise UserError(
                f"{where}: column {name!r} has more than {MAX_LEVELS} distinct text values; "
                "an id? add it to data.drop"
            )
        schema.categorical[name] = sorted(levels)
    schema.ranges = {n: [found["low"][n], found["high"][n]] for n in schema.numeric
                     if np.isfinite(found["low"].get(n, np.inf))}  # fmt: skip
    schema.bounds = plausible_bounds(schema.ranges, schema.numeric, data.get("bounds"))
    val = found["samples"][VAL].drop(columns="_order")
    extra = val[[c for c in ORACLE_COLUMNS if c in val.columns]]
    val_part = Part(to_features(val, schema, where), _target(val, data.target, where), extra)
    if len(set(val_part.y.tolist())) < 2:
        raise UserError(
            f"{where}: the validation sample ({len(val_part.y)} rows) holds only one outcome; "
            "raise data.max_val_rows"
        )
    psi_rows = found["samples"][TRAIN].drop(columns="_order")
    trained = found["train_rows"]  # row groups with training rows, weighed by them
    train_pieces = tuple(replace(p, rows=trained[p.source]) for p in pieces if trained[p.source])
    n = counts.sum(axis=1)
    info = {
        "source": f"Parquet table {data.path} ({len(pieces)} row groups, read by Ray tasks)",
        "rows": int(n.sum()),
        "features": len(schema.features),
        "default_rate": round(float(counts[:, 1].sum() / n.sum()), 4),
        "split": f"{how}: {n[TRAIN]}/{n[VAL]}/{n[TEST]} (validation sample {len(val_part.y)} rows)",
        "schema": schema,
        "train_y": counts[TRAIN].tolist(),
    }
    train = ShardPart(train_pieces, TRAIN, rule, schema, str(data.target),
                      to_features(psi_rows, schema, where))  # fmt: skip
    return Splits(train, val_part, ShardPart(tuple(pieces), TEST, rule, schema, train.target), info)


# --- scoring the test split where its rows are ---------------------------------------------


def _score(pieces: list[Fragment], part: ShardPart, model: Any) -> dict[str, np.ndarray]:
    from verticals.finance.data import to_matrix

    ys, pds, oracle = [], [], []
    planted = True  # every row group has the planted PD (demo data)
    for piece, frame in zip(pieces, table_shards.read(pieces), strict=True):
        frame = frame[part.rule.codes(frame) == part.split]
        if frame.empty:
            continue
        ys.append(_target(frame, part.target, _where(piece)))
        pds.append(model.pd(to_matrix(frame, model.schema, _where(piece))))
        planted = planted and "true_pd" in frame.columns
        if planted:
            oracle.append(frame["true_pd"].to_numpy(dtype=np.float64))
    return {
        "y": np.concatenate(ys) if ys else np.zeros(0, dtype=np.int8),
        "pd": np.concatenate(pds) if pds else np.zeros(0),
        "true_pd": np.concatenate(oracle) if planted and oracle else None,
        "rows": sum(len(y) for y in ys),
    }


def score(model: Any, part: ShardPart) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, PDs and (demo data) planted PDs of `part`, scored by Ray tasks."""
    answers = list(table_shards.map_pieces(_score, part.pieces, part, model))  # labels, PDs
    y = np.concatenate([a["y"] for a in answers])
    pd_ = np.concatenate([a["pd"] for a in answers])
    planted = [a["true_pd"] for a in answers if a["rows"]]
    oracle = np.concatenate(planted) if all(p is not None for p in planted) else None
    return y, pd_, oracle
