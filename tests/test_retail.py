"""Retail vertical: planted segments -> ALS beats popularity; filters, fallbacks, bundles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("implicit")

from fastapi.testclient import TestClient  # noqa: E402

from tests.fastpath import assert_same_answers, validated  # noqa: E402
from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.contract import records_of  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.core.records import RecordCodec  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402
from verticals.retail.data import load_splits  # noqa: E402
from verticals.retail.model import recommend_one, similar_items  # noqa: E402


def retail_cfg(root: Path, *overrides: str):
    return compose("train", "retail", [f"paths.root_dir={root}", "trainer.device=cpu", *overrides])


@pytest.fixture(scope="session")
def retail_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    return pipeline.train(retail_cfg(tmp_path_factory.mktemp("retail"), "experiment=demo"))


@pytest.fixture(scope="session")
def retail_bundle(retail_run: pipeline.TrainResult, tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(write_bundle(retail_run.run_dir, tmp_path_factory.mktemp("bundles")))


def test_model_beats_popularity_on_planted_segments(retail_run: pipeline.TrainResult) -> None:
    m = retail_run.metrics
    assert m["lift_ndcg@10"] > 2.0, m
    assert m["ndcg@10"] > 0.12 and m["coverage@10"] > m["popularity_coverage@10"]
    assert (retail_run.run_dir / "plots" / "metrics_at_k.png").is_file()


def test_filters_and_fallback(retail_run: pipeline.TrainResult) -> None:
    model = retail_run.model
    user = retail_run.splits.test.users[0]
    bought = {model.item_ids[i] for i in model.user_items[model.user_index[user]].indices}
    recs, fallback = recommend_one(model, user, 10)
    assert not fallback and len(recs) == 10 and not {i for i, _ in recs} & bought
    banned = recs[0][0]
    again, _ = recommend_one(model, user, 10, exclude_items=[banned])
    assert banned not in {i for i, _ in again}
    cat = "segment_3"
    only, _ = recommend_one(model, user, 5, category=cat)
    assert only and all(model.catalog.loc[i, "category"] == cat for i, _ in only)
    stranger, fallback = recommend_one(model, "never-seen", 5)
    assert fallback and len(stranger) == 5
    both, _ = recommend_one(model, user, 5, exclude_items=[only[0][0], only[1][0]], category=cat)
    assert both and not {only[0][0], only[1][0]} & {i for i, _ in both}
    assert all(model.catalog.loc[i, "category"] == cat for i, _ in both)
    with pytest.raises(UserError, match="category='nope' has no items"):
        recommend_one(model, user, 5, category="nope")


def test_batch_rows_parse_like_requests(retail_run: pipeline.TrainResult) -> None:
    vertical, model = retail_run.vertical, retail_run.model
    user = retail_run.splits.test.users[0]
    first = vertical.predict(model, pd.DataFrame({"user_id": [user]}))
    top = [r["item_id"] for r in first["recommendations"][0]][:2]
    rows = pd.DataFrame(
        {
            "user_id": [float(user)],
            "exclude_items": [";".join(top)],
            "exclude_bought": ["false"],
            "k": [4.0],
        }
    )
    out = vertical.predict(model, rows)  # float ids from a CSV with blanks, text lists
    assert out["user_id"][0] == user and not out["fallback"][0]
    got = [r["item_id"] for r in out["recommendations"][0]]
    assert len(got) == 4 and not set(top) & set(got)
    with pytest.raises(UserError, match="k=0 must be between"):
        vertical.predict(model, pd.DataFrame({"user_id": [user], "k": [0]}))
    with pytest.raises(UserError, match="exclude_bought='maybe'"):
        vertical.predict(model, pd.DataFrame({"user_id": [user], "exclude_bought": ["maybe"]}))


def test_similar_items_share_the_planted_segment(retail_run: pipeline.TrainResult) -> None:
    model = retail_run.model
    item = str(model.item_ids[model.popularity[0]])
    similar, fallback = similar_items(model, item, 10)
    assert not fallback and len(similar) == 10 and item not in {i for i, _ in similar}
    segment = model.catalog.loc[item, "category"]
    same = sum(model.catalog.loc[i, "category"] == segment for i, _ in similar)
    assert same >= 7, same  # 80% of purchases stay in a segment; chance would give ~1
    unknown, fallback = similar_items(model, "no-such-sku", 4)
    assert fallback and len(unknown) == 4


def test_bundle_round_trip_and_api(retail_run: pipeline.TrainResult, retail_bundle) -> None:
    users = retail_run.vertical.example_inputs(retail_run.splits, 20)
    before = retail_run.vertical.predict(retail_run.model, users)
    after = retail_bundle.vertical.predict(retail_bundle.model, users)
    pd.testing.assert_frame_equal(before, after)
    client = TestClient(create_app(retail_bundle))
    one = client.post("/predict", json={"user_id": users["user_id"][0], "k": 3}).json()
    assert len(one["predictions"][0]["recommendations"]) == 3
    unknown = client.post("/predict", json={"user_id": "ghost"}).json()["predictions"][0]
    assert unknown["fallback"] is True and len(unknown["recommendations"]) == 10
    assert client.post("/predict", json={"user_id": "1", "k": 0}).status_code == 422
    mixed = client.post("/predict", json=[{"user_id": "ghost", "k": 2}, {"item_id": "x", "k": 2}])
    assert mixed.status_code == 200, mixed.text  # missing ids come back as null, never NaN
    assert [p["item_id"] for p in mixed.json()["predictions"]] == [None, "x"]
    both = client.post("/predict", json={"user_id": "1", "item_id": "2"})
    assert both.status_code == 422 and "exactly one of user_id" in both.json()["message"]
    like = client.post(
        "/predict", json={"item_id": one["predictions"][0]["recommendations"][0]["item_id"]}
    ).json()["predictions"][0]
    assert like["item_id"] and not like["fallback"] and len(like["recommendations"]) == 10
    flat = retail_run.vertical.predict_table(retail_run.model, users.head(3))
    assert {"user_id", "fallback", "item_1", "score_10"} <= set(flat.columns)


def _plain(value: object) -> bool:
    """Whether an answer is plain Python all the way down (no numpy scalars)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, float, int, bool)


def test_fast_path_answers_as_the_table_path(retail_run: pipeline.TrainResult) -> None:
    vertical, model, splits = retail_run.vertical, retail_run.model, retail_run.splits
    demo = pd.read_parquet(retail_run.run_dir / "examples" / "inputs.parquet")
    examples = vertical.example_inputs(splits, 5).to_dict("records")
    answers = assert_same_answers(
        vertical,
        model,
        [[r] for r in demo.to_dict("records") + examples]  # one request each, as a demo sends
        + [vertical.example_inputs(splits, len(splits.test.users)).to_dict("records")],
    )
    assert sum(len(a) for a in answers) == len(demo) + 5 + len(splits.test.users)
    assert all(_plain(row) for rows in answers for row in rows)
    codec = RecordCodec.of(vertical, model)
    codec.encode("v", [row for rows in answers for row in rows])  # the response schema holds


def test_fast_path_edge_cases(retail_run: pipeline.TrainResult) -> None:
    vertical, model = retail_run.vertical, retail_run.model
    user = retail_run.splits.test.users[0]
    item = str(model.item_ids[model.popularity[0]])
    top = [i for i, _ in recommend_one(model, user, 3)[0]]
    requests = [
        [{"user_id": "ghost"}],  # unknown: popularity, flagged
        [{"user_id": "ghost", "category": "segment_2", "k": 3}],
        [{"item_id": item}],
        [{"item_id": "no-such-sku", "k": 4}],
        [{"item_id": item, "category": "segment_1", "exclude_items": top}],
        [{"user_id": user, "category": "segment_3"}],
        [{"user_id": user, "exclude_items": [top[0], int(top[1])]}],
        [{"user_id": user, "exclude_bought": False}],
        [{"user_id": user, "k": 1}],
        [{"user_id": user, "k": 1000}, {"user_id": user, "k": 1000, "exclude_bought": False}],
        [{"user_id": int(user)}, {"user_id": user}, {"item_id": int(item), "k": 2}],
        [{"user_id": int(user), "k": 3}, {"item_id": "x", "k": 2}, {"user_id": "ghost"}],
        [{"item_id": item, "k": 1000}],
        [{"item_id": item, "k": 1000, "category": "segment_1", "exclude_items": top}],
    ]
    answers = assert_same_answers(vertical, model, requests)
    assert [a[0]["fallback"] for a in answers[:4]] == [True, True, False, True]
    assert len(answers[8][0]["recommendations"]) == 1
    bought = {model.item_ids[i] for i in model.user_items[model.user_index[user]].indices}
    filtered, everything = ([r["item_id"] for r in a["recommendations"]] for a in answers[9])
    # a k past the catalog: each item once, the bought ones only when asked for
    assert len(set(filtered)) == len(filtered) == min(1000, len(model.item_ids) - len(bought))
    assert len(set(everything)) == len(everything) == min(1000, len(model.item_ids))
    assert not bought & set(filtered)
    assert bought <= set(everything) or len(model.item_ids) > 1000
    for rows in answers[-2:]:  # similar items past the pool: each once, never the item asked
        got = [r["item_id"] for r in rows[0]["recommendations"]]
        assert got and len(set(got)) == len(got) and item not in got
    assert answers[10][0] == answers[10][1] and answers[10][2]["item_id"] == item
    assert all(_plain(row) for rows in answers for row in rows)


def test_fast_path_raises_the_table_paths_user_error(retail_run: pipeline.TrainResult) -> None:
    vertical, model = retail_run.vertical, retail_run.model
    good = validated(vertical, model, [{"user_id": "ghost"}])
    bad = validated(vertical, model, [{"user_id": "ghost", "category": "nope"}])
    with pytest.raises(UserError) as table:
        vertical.predict(model, pd.DataFrame(bad))
    for requests in ([bad], [good, bad]):  # a bad record fails the whole micro-batch
        with pytest.raises(UserError) as fast:
            vertical.predict_records(model, requests)
        assert str(fast.value) == str(table.value)
    assert "category='nope' has no items" in str(table.value)
    assert vertical.predict_records(model, [good]) == [
        records_of(vertical.predict(model, pd.DataFrame(good)))
    ]


def test_interaction_logs_name_bad_columns(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    pd.DataFrame({"customer": ["a", "b"], "sku": ["x", "y"], "qty": ["1", "lots"]}).to_csv(
        log, index=False
    )
    base = ["data=interactions", f"data.path={log}", "data.user_col=customer"]
    with pytest.raises(UserError, match="no column 'item' \\(data.item_col\\)"):
        load_splits(retail_cfg(tmp_path, *base))
    with pytest.raises(UserError, match="'qty' \\(data.weight_col\\) must be numeric; row 2"):
        load_splits(retail_cfg(tmp_path, *base, "data.item_col=sku", "data.weight_col=qty"))
    (tmp_path / "empty.csv").write_text("user,item\n")
    with pytest.raises(UserError, match="empty"):
        load_splits(retail_cfg(tmp_path, "data=interactions", f"data.path={tmp_path}/empty.csv"))


@pytest.mark.skipif(not os.environ.get("VERTICALS_DATA_DIR"), reason="VERTICALS_DATA_DIR not set")
def test_movielens_als_beats_popularity(tmp_path: Path) -> None:
    path = Path(os.environ["VERTICALS_DATA_DIR"]) / "movielens" / "ml-100k" / "u.data"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    result = pipeline.train(retail_cfg(tmp_path, "data=movielens", f"data.path={path}"))
    assert result.metrics["ndcg@10"] > 0.12
    assert result.metrics["lift_ndcg@10"] > 1.4


def test_split_protocols_hold_out_the_right_rows(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    rows = [
        (u, f"i{(u + j) % 12}", 1_700_000_000 + 86_400 * j) for u in range(6) for j in range(10)
    ]
    pd.DataFrame(rows, columns=["user", "item", "ts"]).to_csv(log, index=False)
    base = ["data=interactions", f"data.path={log}", "data.time_col=ts"]
    last = load_splits(retail_cfg(tmp_path, *base, "data.split=leave_last", "data.leave_last=2"))
    assert len(last.train.frame) == 6 * 8 and last.test.users
    for user, items in zip(last.test.users, last.test.items, strict=True):
        assert set(items) <= {f"i{(int(user) + j) % 12}" for j in (8, 9)}
    days = load_splits(retail_cfg(tmp_path, *base, "data.split=time", "data.holdout_days=3.5"))
    assert sorted(days.train.frame["time"].unique()) == [
        1_700_000_000 + 86_400 * j for j in range(6)
    ]  # days 0-5 kept
    with pytest.raises(UserError, match="data.split=time needs timestamps"):
        load_splits(
            retail_cfg(tmp_path, "data=interactions", f"data.path={log}", "data.split=time")
        )


def test_numeric_ids_with_blanks_stay_whole(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    users = [1.0] * 20 + [2.0] * 20 + [None]  # the blank makes pandas read floats
    items = list(range(20)) + list(range(19, -1, -1)) + [5]
    frame = pd.DataFrame({"user": users, "item": items, "when": [""] + ["2024-01-01"] * 40})
    frame.to_csv(log, index=False)
    splits = load_splits(
        retail_cfg(
            tmp_path,
            "data=interactions",
            f"data.path={log}",
            "data.split=leave_last",
            "data.min_user_interactions=1",
        )
    )
    assert set(splits.train.frame["user"]) <= {"1", "2"}
    with pytest.raises(UserError, match="'when' \\(data.time_col\\) is empty in row"):
        load_splits(
            retail_cfg(tmp_path, "data=interactions", f"data.path={log}", "data.time_col=when")
        )


def test_movielens_ratings_csv_layout(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    rng = np.random.default_rng(0)
    rows = [
        (u, m, 5.0 if (u + m) % 2 else 2.0, int(rng.integers(1e6)))
        for u in range(1, 31)
        for m in range(40)
    ]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        path, index=False
    )
    splits = load_splits(retail_cfg(tmp_path, "data=movielens", f"data.path={path}"))
    assert splits.info["interactions"] == 30 * 20  # ratings >= 4 only
    (tmp_path / "bad.csv").write_text("user,movie\n1,2\n")
    with pytest.raises(UserError, match="expected columns"):
        load_splits(retail_cfg(tmp_path, "data=movielens", f"data.path={tmp_path}/bad.csv"))
