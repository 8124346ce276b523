"""Traffic retraining: feedback readings extend the sensor series, holdouts round-trip,
per-window scores pool to `evaluate`'s errors."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from verticals.configs import compose  # noqa: E402
from verticals.core.contract import Logged, RunContext, Splits  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.traffic import retraining  # noqa: E402
from verticals.traffic.data import load_splits  # noqa: E402
from verticals.traffic.evaluation import evaluate  # noqa: E402
from verticals.traffic.predict import forecast_records  # noqa: E402
from verticals.traffic.training import fit  # noqa: E402

WEEK = pd.Timedelta(days=7)  # feedback a week after the test period: after the series


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("traffic-retrain")
    cfg = compose(
        "train",
        "traffic",
        [f"paths.root_dir={root}", "trainer.device=cpu", "debug=fast", "training.cpu_minutes=null"],
    )
    splits = load_splits(cfg)
    ctx = RunContext(root / "run", resolve_device("cpu"), int(cfg.seed), logging.getLogger("t"))
    return SimpleNamespace(cfg=cfg, splits=splits, model=fit(cfg, splits, ctx), ctx=ctx)


def _stamp(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def logged(model: Any, windows: Any, starts: np.ndarray, shift: pd.Timedelta) -> list[Logged]:
    """Entries as the log hands them back: a client's window of readings (JSON: timestamps
    as text, missing as null), the answer rows and the speeds observed at the forecasts'
    sensors and times, all `shift` later than the series has them."""
    net, out = windows.net, []
    for k, start in enumerate(starts):
        records = [
            {
                "sensor": sensor,
                "timestamp": _stamp(net.times[t] + shift),
                "value": float(net.speeds[t, s]) or None,
            }
            for t in range(start, start + windows.input_steps)
            for s, sensor in enumerate(net.sensors)
        ]
        answer = forecast_records(model, [records])[0]
        rows = [{**row, "timestamp": _stamp(row["timestamp"])} for row in answer]
        observed = []
        for row in answer:
            t = int(start + windows.input_steps + row["horizon_min"] // net.step_min - 1)
            speed = float(net.speeds[t, net.sensors.index(row["sensor"])])
            when = _stamp(row["timestamp"])
            observed.append({"sensor": row["sensor"], "timestamp": when, "speed": speed})
        out.append(Logged(f"r{k}", records, rows, {"observed": observed}))
    return out


def readings_of(entries: list[Logged]) -> dict[tuple[str, pd.Timestamp], float]:
    """Every non-missing reading the entries carry, by sensor and time."""
    found = {}
    for e in entries:
        for r in e.inputs:
            if r["value"]:
                found[(r["sensor"], pd.Timestamp(r["timestamp"]))] = r["value"]
        for o in e.outcome["observed"]:
            if o["speed"] > 0:
                found[(o["sensor"], pd.Timestamp(o["timestamp"]))] = o["speed"]
    return found


def value_at(net: Any, sensor: str, when: pd.Timestamp) -> float:
    (row,) = np.flatnonzero(net.times == when)
    return float(net.speeds[row, net.sensors.index(sensor)])


def test_holdout_round_trip_gives_the_same_metrics(trained, tmp_path: Path) -> None:
    test = trained.splits.test
    retraining.save_holdout(test, tmp_path / "holdout")
    assert {p.name for p in (tmp_path / "holdout").iterdir()} == {"holdout.npz", "holdout.json"}
    back = retraining.load_holdout(tmp_path / "holdout")
    assert len(back) == len(test)
    assert evaluate(trained.model, back) == evaluate(trained.model, test)
    with pytest.raises(UserError, match="not a traffic holdout"):
        retraining.load_holdout(tmp_path)


def test_learn_from_adds_feedback_windows_with_its_readings(trained) -> None:
    splits: Splits = trained.splits
    test = splits.test
    entries = logged(trained.model, test, test.starts[:40], WEEK)
    grown = retraining.learn_from(trained.cfg, splits, entries)
    info = grown.info["feedback"]
    assert info["entries"] == 40 and info["windows"] > 0
    assert len(grown.train) == len(splits.train) + info["windows"]
    net = grown.train.net
    for (sensor, when), speed in readings_of(entries).items():
        assert value_at(net, sensor, when) == pytest.approx(speed)
    # the feedback rows follow the training period; validation and test read what they did
    span = splits.train.input_steps + splits.train.output_steps
    assert grown.train.starts.max() + span <= grown.val.starts.min()
    assert evaluate(trained.model, grown.test) == evaluate(trained.model, test)
    assert np.array_equal(grown.val.targets(), splits.val.targets())
    # normalisation: the training rows only, feedback included
    rows = net.speeds[: grown.val.starts.min()]
    assert net.mean == pytest.approx(float(rows[rows > 0].mean()))
    assert splits.train.net.speeds.shape[0] < net.speeds.shape[0]  # the input kept as it was
    model = fit(trained.cfg, grown, trained.ctx)
    assert np.isfinite(evaluate(model, grown.test)["mae_60min"])


def test_learn_from_fills_training_gaps_and_keeps_out_of_test(trained) -> None:
    splits: Splits = trained.splits
    train = splits.train
    start = int(np.flatnonzero((train.inputs()[:, :, :, 2] > 0).any(axis=(1, 2)))[0])
    entries = logged(trained.model, train, train.starts[start : start + 1], pd.Timedelta(0))
    gaps = [r for r in entries[0].inputs if r["value"] is None]
    for r in gaps:
        r["value"] = 42.0
    grown = retraining.learn_from(trained.cfg, splits, entries)
    assert grown.info["feedback"]["filled"] == len(gaps) > 0
    assert grown.info["feedback"]["windows"] == 0
    for r in gaps:
        assert value_at(grown.train.net, r["sensor"], pd.Timestamp(r["timestamp"])) == 42.0
    in_test = logged(trained.model, splits.test, splits.test.starts[:3], pd.Timedelta(0))
    with pytest.raises(UserError, match="validation or test period"):
        retraining.learn_from(trained.cfg, splits, in_test)


def test_unfit_readings_are_skipped_and_counted(trained) -> None:
    test = trained.splits.test
    entries = logged(trained.model, test, test.starts[:20], WEEK)
    entries[0].inputs[0]["sensor"] = "nowhere"
    first = entries[1].inputs[0]
    first["timestamp"] = _stamp(pd.Timestamp(first["timestamp"]) + pd.Timedelta(minutes=2))
    entries.append(Logged("none", None, entries[0].outputs, entries[0].outcome))
    grown = retraining.learn_from(trained.cfg, trained.splits, entries)
    skipped = grown.info["feedback"]["skipped"]
    assert skipped["unknown sensor"] == 1
    assert skipped["time not on the grid"] == 1
    assert skipped["entries without logged readings"] == 1


@pytest.mark.parametrize("inputs", [None, [{"sensor": "s", "timestamp": "x", "value": "ab12"}]])
def test_feedback_without_readings_is_refused_in_one_line(trained, inputs) -> None:
    entry = Logged("r0", inputs, [], {"observed": [{"sensor": "s", "timestamp": "x", "speed": 1}]})
    with pytest.raises(UserError, match="log.inputs") as err:
        retraining.learn_from(trained.cfg, trained.splits, [entry])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="log.inputs"):
        retraining.extend_holdout(trained.model, trained.splits.test, [entry])


def test_extend_holdout_adds_windows_over_the_feedback(trained, tmp_path: Path) -> None:
    test = trained.splits.test
    retraining.save_holdout(test, tmp_path)
    holdout = retraining.load_holdout(tmp_path)
    entries = logged(trained.model, test, test.starts[-30:], WEEK)
    grown = retraining.extend_holdout(trained.model, holdout, entries)
    assert len(grown) > len(holdout) == len(test)
    for (sensor, when), speed in readings_of(entries).items():
        assert value_at(grown.net, sensor, when) == pytest.approx(speed)
    before = evaluate(trained.model, holdout)
    assert evaluate(trained.model, holdout) == before  # the holdout given is not changed
    retraining.save_holdout(grown, tmp_path / "grown")
    again = retraining.load_holdout(tmp_path / "grown")
    assert evaluate(trained.model, again) == evaluate(trained.model, grown)
    # readings at times the holdout holds already add nothing
    same = logged(trained.model, test, test.starts[:5], pd.Timedelta(0))
    assert len(retraining.extend_holdout(trained.model, holdout, same)) == len(holdout)


def test_case_scores_on_every_window_are_evaluates_metrics(trained) -> None:
    test = trained.splits.test
    entries = logged(trained.model, test, test.starts[-30:], WEEK)
    for data in (test, retraining.extend_holdout(trained.model, test, entries)):
        scores = retraining.score_cases(trained.model, data)
        assert scores.n == len(data)
        mine = scores.metrics(np.arange(scores.n))
        theirs = evaluate(trained.model, data)
        assert "mae_60min" in mine
        for name, value in mine.items():
            assert value == pytest.approx(theirs[name], rel=1e-9), name
    resample = np.random.default_rng(0).integers(0, scores.n, scores.n)
    assert np.isfinite(scores.metrics(resample)["mae_60min"])
