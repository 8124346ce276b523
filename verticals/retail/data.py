"""Interaction logs -> a user x item training matrix and a held-out test set, in raw ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from verticals.core.contract import Splits
from verticals.core.errors import UserError
from verticals.core.tables import read_table

DAY = 86_400


@dataclass
class Log:
    """A cleaned interaction log: string ids, a float weight, time in seconds (or NaN)."""

    frame: pd.DataFrame  # user, item, weight, time
    catalog: pd.DataFrame | None = None  # indexed by item id (str)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeldOut:
    """Per test user (raw id): the items they went on to interact with."""

    users: list[str]
    items: list[np.ndarray]


def read_movielens(path: str | Path, min_rating: float) -> pd.DataFrame:
    """`u.data` (tab-separated, no header) or `ratings.csv` (userId,movieId,rating,timestamp);
    ratings at or above `min_rating` become positive interactions."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.path={path} does not exist (MovieLens u.data or ratings.csv)")
    if path.suffix == ".csv":
        raw = pd.read_csv(path)
        need = {"userId", "movieId", "rating", "timestamp"}
        if not need <= set(raw.columns):
            raise UserError(f"{path}: expected columns {sorted(need)}, got {list(raw.columns)}")
        raw = raw.rename(columns={"userId": "user", "movieId": "item"})
    else:
        raw = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "timestamp"])
    rating = pd.to_numeric(raw["rating"], errors="coerce")
    if rating.isna().any():
        raise UserError(f"{path}: ratings must be numbers (is it tab-separated u.data?)")
    positive = raw[rating >= min_rating]
    return pd.DataFrame(
        {
            "user": positive["user"],
            "item": positive["item"],
            "weight": 1.0,
            "time": positive["timestamp"].astype("float64"),
        }
    )


def _column(frame: pd.DataFrame, name: str, key: str, path: Any) -> pd.Series:
    if name not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:12]))
        raise UserError(f"{path}: no column {name!r} ({key}); columns are: {shown}")
    return frame[name]


def from_table(frame: pd.DataFrame, data: DictConfig, path: Any) -> pd.DataFrame:
    """Map the user's column names onto user/item/weight/time and check their types."""
    out = pd.DataFrame(
        {
            "user": _column(frame, data.user_col, "data.user_col", path),
            "item": _column(frame, data.item_col, "data.item_col", path),
        }
    )
    if data.weight_col:
        weight = pd.to_numeric(
            _column(frame, data.weight_col, "data.weight_col", path), errors="coerce"
        )
        bad = weight.isna() & frame[data.weight_col].notna()
        if bad.any():
            example = frame.loc[bad, data.weight_col].iloc[0]
            raise UserError(
                f"{path}: column {data.weight_col!r} (data.weight_col) must be "
                f"numeric; row {int(np.flatnonzero(bad)[0]) + 1} holds {example!r}"
            )
        out["weight"] = weight.fillna(1.0).astype("float64")
    else:
        out["weight"] = 1.0
    if data.time_col:
        raw = _column(frame, data.time_col, "data.time_col", path)
        if pd.api.types.is_numeric_dtype(raw):
            out["time"] = raw.astype("float64")
        else:
            parsed = pd.to_datetime(raw, errors="coerce", utc=True)
            bad = parsed.isna() & raw.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise UserError(
                    f"{path}: column {data.time_col!r} (data.time_col) row {row + 1} holds "
                    f"{raw.iloc[row]!r}: neither a number nor a date"
                )
            # seconds since the epoch, whatever unit (ns, us, s) the file stored
            out["time"] = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    else:
        out["time"] = np.nan
    return out


def load_log(cfg: DictConfig) -> Log:
    data = cfg.data
    catalog = None
    if data.source == "synthetic":
        from verticals.retail.synthetic import generate

        frame, catalog = generate(
            int(data.n_users),
            int(data.n_items),
            int(data.n_interactions),
            int(data.n_segments),
            int(cfg.seed),
        )
        log = frame.rename(columns={"quantity": "weight", "timestamp": "time"})
        log["weight"] = log["weight"].astype("float64")
        log["time"] = log["time"].astype("float64")
        catalog = catalog.assign(item=catalog["item"].astype(str)).set_index("item")
    elif data.source == "movielens":
        log = read_movielens(data.path or "", float(data.min_rating))
    elif data.source == "interactions":
        if not data.path:
            raise UserError("data.path is not set: give the interactions file (CSV/Parquet)")
        log = from_table(read_table(data.path, "data.path"), data, data.path)
    else:
        raise UserError(
            f"data.source={data.source!r} is not one of synthetic, movielens, interactions"
        )
    if data.catalog_path:
        table = read_table(data.catalog_path, "data.catalog_path")
        ids = _column(table, data.catalog_item_col, "data.catalog_item_col", data.catalog_path)
        catalog = table.assign(**{data.catalog_item_col: as_ids(ids)}).set_index(
            data.catalog_item_col
        )
    log = log.dropna(subset=["user", "item"])
    if log.empty:
        raise UserError(f"{data.path or data.source}: the interaction log is empty")
    log["user"], log["item"] = as_ids(log["user"]), as_ids(log["item"])
    if data.time_col and log["time"].isna().any():
        row = int(np.flatnonzero(log["time"].isna().to_numpy())[0]) + 1
        raise UserError(
            f"{data.path}: column {data.time_col!r} (data.time_col) is empty in "
            f"row {row}; every interaction needs a time"
        )
    return Log(log.reset_index(drop=True), catalog)


def as_ids(values: pd.Series) -> pd.Series:
    """Ids as text, the same however a file stored them: a numeric column with a blank cell
    is read as floats, and 123.0 must stay the customer 123."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            return values.astype("Int64").astype(str)
    return values.astype(str)


def as_id(value: object) -> str:
    """One id from a request or a batch row, as `as_ids` writes it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def split(log: pd.DataFrame, data: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) rows, by the configured protocol."""
    how = data.split
    has_time = log["time"].notna().all()
    if how == "time":
        if not has_time:
            raise UserError("data.split=time needs timestamps: set data.time_col")
        cut = log["time"].max() - float(data.holdout_days) * DAY
        return log[log["time"] <= cut], log[log["time"] > cut]
    ordered = log.sort_values(["user", "time"], kind="stable") if has_time else log
    rank = ordered.groupby("user").cumcount(ascending=False)  # 0 = the user's last
    size = ordered.groupby("user")["item"].transform("size")
    if how == "leave_last":
        test = rank < int(data.leave_last)
    elif how == "user_fraction":  # test_fraction in (0, 1): RetailDataConfig checks
        test = rank < np.floor(size * float(data.test_fraction))
    else:
        raise UserError(f"data.split={how!r} is not one of user_fraction, leave_last, time")
    scored = size >= int(data.min_user_interactions)
    return ordered[~(test & scored)], ordered[test & scored]


def held_out(train: pd.DataFrame, test: pd.DataFrame) -> HeldOut:
    """Test items per user, leaving out what the user already had in training (a
    recommender filters those) and users or items the model cannot know."""
    known_items = set(train["item"])
    seen = set(zip(train["user"], train["item"], strict=True))
    test = test[test["user"].isin(set(train["user"])) & test["item"].isin(known_items)]
    fresh = [(u, i) not in seen for u, i in zip(test["user"], test["item"], strict=True)]
    test = test[np.array(fresh, dtype=bool)] if len(test) else test
    groups = test.groupby("user")["item"].unique()
    return HeldOut(list(groups.index), [np.asarray(v, dtype=object) for v in groups.values])


def load_splits(cfg: DictConfig) -> Splits:
    log = load_log(cfg)
    train, test = split(log.frame, cfg.data)
    if train.empty:
        raise UserError("the split leaves no training interactions")
    truth = held_out(train, test)
    if not truth.users:
        raise UserError(
            "the split leaves no test users with new items to score; "
            "check data.split and data.min_user_interactions"
        )
    info = {
        "source": str(cfg.data.source),
        "interactions": int(len(log.frame)),
        "users": int(log.frame["user"].nunique()),
        "items": int(log.frame["item"].nunique()),
        "split": str(cfg.data.split),
        "test_users": len(truth.users),
    }
    return Splits(Log(train, log.catalog), None, truth, info)


def example_inputs(splits: Splits, n: int) -> pd.DataFrame:
    """`n` held-out customers, each asking for their recommendations."""
    return pd.DataFrame({"user_id": splits.test.users[:n]})
