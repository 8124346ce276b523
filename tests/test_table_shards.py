"""A Parquet table in pieces (`shared/table_shards.py`): row groups from the footers, dealt
to workers by rows, and a split by hash that does not depend on how the files are cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verticals.core import table_shards
from verticals.core.errors import UserError


def _frame(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": np.arange(n),
        "income": rng.normal(50, 10, n).round(2),
        "home": rng.choice(["own", "rent"], n),
        "default": rng.integers(0, 2, n),
    })  # fmt: skip


def test_the_split_of_a_row_does_not_depend_on_its_types_or_column_order() -> None:
    frame = _frame()
    u = table_shards.uniform(frame, seed=7)
    # as another row group reads it: ints as floats (a null elsewhere in the group), the
    # columns in another order, a new index
    other = frame.astype({"id": "float64", "default": "float64"})[["home", "default", "id",
                                                                   "income"]]  # fmt: skip
    assert np.array_equal(table_shards.uniform(other.reset_index(drop=True), seed=7), u)
    assert not np.array_equal(table_shards.uniform(frame, seed=8), u)  # the seed matters
    codes = table_shards.hash_split(table_shards.uniform(_frame(100_000), 1), 0.2, 0.25)
    shares = np.bincount(codes, minlength=3) / len(codes)
    assert shares == pytest.approx([0.6, 0.2, 0.2], abs=0.01)  # train, val, test


def test_row_groups_are_listed_dealt_and_read(tmp_path: Path) -> None:
    frame = _frame()
    (tmp_path / "t").mkdir()
    frame.iloc[:1200].to_parquet(tmp_path / "t" / "a.parquet", row_group_size=400)
    frame.iloc[1200:].to_parquet(tmp_path / "t" / "b.parquet", row_group_size=800)
    (tmp_path / "t" / "_SUCCESS").write_text("")  # what Spark leaves beside its files
    assert table_shards.is_parquet_table(str(tmp_path / "t"))
    pieces = table_shards.fragments(str(tmp_path / "t"))
    assert [p.rows for p in pieces] == [400, 400, 400, 800]
    assert len(table_shards.fragments(str(tmp_path / "t" / "*"))) == 4  # a glob: Parquet only
    hands = table_shards.deal(pieces, 2)
    assert sorted(sum(p.rows for p in h) for h in hands) == [800, 1200]
    back = pd.concat(table_shards.read([p for h in hands for p in h]))
    assert sorted(back["id"]) == list(range(2000))  # every row once
    with pytest.raises(UserError, match=r"4 row groups, too few for 5 workers"):
        table_shards.deal(pieces, 5)


def test_an_unreadable_piece_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _frame().to_parquet(path, row_group_size=1000)
    pieces = table_shards.fragments(str(path))
    path.write_bytes(path.read_bytes()[:200])  # cut short after listing
    with pytest.raises(UserError, match=r"t\.parquet \(row group 0\) could not be read"):
        next(table_shards.read(pieces))
    with pytest.raises(UserError, match=r"nowhere does not exist"):
        table_shards.fragments(str(tmp_path / "nowhere"))
