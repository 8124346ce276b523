"""Edge cases found in review: each one a way a real user got a wrong answer or a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from verticals.cli import split_args
from verticals.commands import evaluation_config
from verticals.configs import compose
from verticals.core import pipeline
from verticals.core.batch import predict_file
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.errors import UserError
from verticals.core.serving import create_app
from verticals.finance.data import infer_schema, level_strings, load_splits, to_matrix
from verticals.finance.schema import applicant_model

from .conftest import finance_cfg


def test_evaluate_reuses_the_runs_seed_and_split(tmp_path: Path) -> None:
    result = pipeline.train(finance_cfg(tmp_path, "seed=7", "debug=fast"))
    cfg = compose("evaluate", "finance", [f"paths.root_dir={tmp_path}", "trainer.device=cpu"])
    merged = evaluation_config(cfg, pipeline.load_run_config(result.run_dir))
    assert merged.seed == 7
    again = pipeline.evaluate(merged, result.run_dir)
    assert again["roc_auc"] == pytest.approx(result.metrics["roc_auc"])


def test_category_levels_ignore_the_input_dtype(tmp_path: Path) -> None:
    frame = pd.DataFrame({"term": [12.0, 24.0, None, 36.0] * 10, "default": [0, 1] * 20})
    cfg = finance_cfg(tmp_path, "data=table", "data.path=x.csv", "data.categorical=[term]").data
    schema = infer_schema(frame, cfg, "test")
    assert schema.categorical["term"] == ["12", "24", "36"]
    as_int = to_matrix(pd.DataFrame({"term": [36, 12]}), schema)
    as_text = to_matrix(pd.DataFrame({"term": ["36", "12"]}), schema)
    np.testing.assert_array_equal(as_int, as_text)
    assert as_int[:, 0].tolist() == [2.0, 0.0]
    assert level_strings(pd.Series([36.5])).tolist() == ["36.5"]


def test_iso_dates_in_a_csv_are_caught(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"applied": pd.date_range("2024-01-01", periods=60).strftime("%Y-%m-%d"),
         "x": range(60), "default": [0, 1, 0] * 20}
    )  # fmt: skip
    frame.to_csv(tmp_path / "loans.csv", index=False)
    cfg = finance_cfg(tmp_path, "data=table", f"data.path={tmp_path / 'loans.csv'}")
    with pytest.raises(UserError, match="column 'applied' holds dates"):
        load_splits(cfg)


def test_too_few_defaults_to_split(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": range(50), "default": [1, 1] + [0] * 48})
    frame.to_csv(tmp_path / "loans.csv", index=False)
    cfg = finance_cfg(tmp_path, "data=table", f"data.path={tmp_path / 'loans.csv'}")
    with pytest.raises(UserError, match="at least 3 of each class"):
        load_splits(cfg)


def test_request_schema_takes_any_column_name() -> None:
    from verticals.finance.data import FeatureSchema

    model = applicant_model(FeatureSchema(["_income", "model_config"], {"empty": []}))
    record = model.model_validate({"_income": 1.5, "model_config": 2, "empty": "anything"})
    assert record.model_dump(by_alias=True) == {
        "_income": 1.5,
        "model_config": 2.0,
        "empty": "anything",
    }
    with pytest.raises(ValueError, match="finite"):
        model.model_validate({"_income": float("nan")})


def test_serving_rejects_nan_and_absurd_nesting(finance_run, tmp_path: Path) -> None:
    client = TestClient(create_app(write_bundle(finance_run.run_dir, tmp_path / "b")))
    nan = client.post(
        "/predict", content=b'{"age": NaN}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422 and "age" in nan.json()["message"]
    deep = client.post(
        "/predict", content=b"[" * 50_000, headers={"content-type": "application/json"}
    )
    assert deep.status_code == 422
    fb = client.post("/feedback", json=[{"id": 1, "model_version": "fake"}])
    assert fb.status_code == 503 and "no prediction log" in fb.json()["message"]


def test_bundle_files_are_readable_by_others(finance_run, tmp_path: Path) -> None:
    bundle = write_bundle(finance_run.run_dir, tmp_path / "b")
    for name in ("manifest.json", "config.yaml", "metrics.json"):
        assert (bundle / name).stat().st_mode & stat.S_IROTH, name


def test_run_argument_refuses_a_bundle(finance_run, tmp_path: Path) -> None:
    from verticals.core.runs import resolve_run

    bundle = write_bundle(finance_run.run_dir, tmp_path / "b")
    with pytest.raises(UserError, match="is a bundle, not a run"):
        resolve_run(str(bundle), tmp_path, "finance")


def test_batch_input_problems(finance_run, tmp_path: Path, caplog) -> None:
    bundle = load_bundle(write_bundle(finance_run.run_dir, tmp_path / "b"))
    pd.DataFrame({"age": [30, 50]}).to_csv(tmp_path / "part.csv", index=False)
    predict_file(bundle, tmp_path / "part.csv", tmp_path / "p.csv", progress=False)
    assert "lacks 10 model input(s), scored as missing: income" in caplog.text
    pd.DataFrame({"foo": [1, 2]}).to_csv(tmp_path / "wrong.csv", index=False)
    with pytest.raises(UserError, match="none of the model's"):
        predict_file(bundle, tmp_path / "wrong.csv", tmp_path / "o.csv", progress=False)
    pd.DataFrame({"age": [30]}).to_csv(tmp_path / "ok.csv", index=False)
    with pytest.raises(UserError, match=r"keep_columns \['id'\]"):
        predict_file(bundle, tmp_path / "ok.csv", tmp_path / "o.csv", 10, ["id"], False)
    with pytest.raises(UserError, match="is the input file"):
        predict_file(bundle, tmp_path / "ok.csv", tmp_path / "ok.csv", progress=False)
    (tmp_path / "head.csv").write_text("age\n")
    with pytest.raises(UserError, match="no rows"):
        predict_file(bundle, tmp_path / "head.csv", tmp_path / "o.csv", progress=False)


def test_scorecard_scale_is_replaceable_and_checked(tmp_path: Path) -> None:
    cfg = finance_cfg(tmp_path, "scorecard.grades=[[X,700],[Y,0]]", "debug=fast")
    result = pipeline.train(cfg)
    out = result.vertical.predict(result.model, result.vertical.example_inputs(result.splits, 50))
    assert set(out["grade"]) <= {"X", "Y"}
    with pytest.raises(UserError, match="scorecard.base_odds"):
        pipeline.train(finance_cfg(tmp_path, "scorecard.base_odds=0", "debug=fast"))
    with pytest.raises(UserError, match="model.num_leaves=1; expected a whole number >= 2"):
        pipeline.train(finance_cfg(tmp_path, "model.num_leaves=1", "debug=fast"))
    with pytest.raises(UserError, match="LightGBM refused"):  # what no schema checks
        pipeline.train(finance_cfg(tmp_path, "+model.extra.min_data_in_bin=0", "debug=fast"))


def test_cli_keeps_overrides_together() -> None:
    args = ["--cfg", "job", "model.num_leaves=4", "~data.drop", "-m", "--info", "defaults", "x=1"]
    overrides, flags = split_args(args)
    assert overrides == ["model.num_leaves=4", "~data.drop", "x=1"]
    assert flags == ["--cfg", "job", "-m", "--info", "defaults"]
