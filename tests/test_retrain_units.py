"""The champion-challenger decision and the holdout's integrity, without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verticals.core import holdout
from verticals.core.comparison import Guard, Rules, bootstrap, decide
from verticals.core.contract import CaseScores
from verticals.core.errors import UserError
from verticals.core.registry import get
from verticals.finance.data import Part

AUC = Rules("roc_auc", "max", margin=0.01, guards={"brier": Guard(0.005, "min")})


def test_a_challenger_wins_only_by_the_margin_and_within_the_guards() -> None:
    champion = {"roc_auc": 0.70, "brier": 0.150}
    won = decide(champion, {"roc_auc": 0.72, "brier": 0.152}, AUC)
    assert won.promote and won.gain == pytest.approx(0.02) and "guards held" in won.reason
    small = decide(champion, {"roc_auc": 0.705, "brier": 0.15}, AUC)
    assert not small.promote and "below the margin 0.01" in small.reason
    guarded = decide(champion, {"roc_auc": 0.75, "brier": 0.160}, AUC)
    assert not guarded.promote and "brier 0.1500 -> 0.1600 is worse by 0.0100" in guarded.reason
    missing = decide(champion, {"brier": 0.1}, AUC)
    assert not missing.promote and "challenger has no roc_auc" in missing.reason


def test_an_error_metric_wins_by_going_down() -> None:
    mae = Rules("mae_60min", "min", margin=0.02)
    assert decide({"mae_60min": 3.0}, {"mae_60min": 2.9}, mae).promote
    worse = decide({"mae_60min": 3.0}, {"mae_60min": 3.1}, mae)
    assert not worse.promote and worse.gain == pytest.approx(-0.1)


def test_the_bootstrap_refuses_a_gain_that_luck_could_explain() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(400)
    rules = Rules("ndcg@10", "max", margin=0.001, resamples=500)
    steady = bootstrap(CaseScores.of_means({"ndcg@10": base}),
                       CaseScores.of_means({"ndcg@10": base + 0.05}), rules)  # fmt: skip
    assert steady is not None and steady.low > 0.04 and steady.cases == 400
    noisy_b = base + rng.normal(0.005, 0.3, 400)  # a small gain drowned in noise
    noisy = bootstrap(CaseScores.of_means({"ndcg@10": base}),
                      CaseScores.of_means({"ndcg@10": noisy_b}), rules)  # fmt: skip
    assert noisy is not None and noisy.low < 0 < noisy.high
    gain = float(noisy_b.mean() - base.mean())
    refused = decide({"ndcg@10": base.mean()}, {"ndcg@10": base.mean() + gain}, rules, noisy)
    assert not refused.promote and "includes no gain" in refused.reason


def _part(n: int = 50) -> Part:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"age": rng.integers(20, 70, n).astype(float),
                      "home": pd.Categorical(rng.choice(["own", "rent"], n),
                                             categories=["own", "rent"])})  # fmt: skip
    return Part(X, rng.integers(0, 2, n).astype("int8"), pd.DataFrame(index=X.index))


def test_a_holdout_reads_back_as_saved_and_refuses_edits(tmp_path: Path) -> None:
    finance = get("finance")
    saved = holdout.write(finance, _part(), tmp_path, {"from": "a test"}, {"r1", "r2"})
    back = holdout.read(finance, saved.folder, saved.digest)
    assert back.feedback_ids == {"r1", "r2"}
    pd.testing.assert_frame_equal(back.data.X.reset_index(drop=True),
                                  saved.data.X.reset_index(drop=True))  # fmt: skip
    assert list(back.data.X["home"].cat.categories) == ["own", "rent"]
    assert not list(tmp_path.glob(".*partial*"))  # written whole, then moved into place
    with pytest.raises(UserError, match="changed since it was registered"):
        holdout.read(finance, saved.folder, "0" * 64)
    table = next(saved.folder.rglob("*.parquet"))
    table.write_bytes(table.read_bytes() + b"x")
    with pytest.raises(UserError, match=f"holdout file {table} is missing or changed"):
        holdout.read(finance, saved.folder)


def test_feedback_sharing_a_case_with_the_holdout_never_trains(tmp_path: Path) -> None:
    """The same customer's purchase of the same item in the holdout and in a training
    request: the training request stays out; so does one that repeats a base holdout case."""
    from datetime import datetime, timedelta

    from omegaconf import OmegaConf

    from verticals.core.contract import Logged
    from verticals.core.retrain import divide
    from verticals.retail.data import HeldOut

    retail = get("retail")
    base = HeldOut(["u0"], [np.array(["i0"], dtype=object)])
    fixed = holdout.write(retail, base, tmp_path, {"from": "a test"})
    t0 = datetime(2026, 1, 1)

    def entry(n: int, user: str, items: list[str]) -> Logged:
        return Logged(f"r{n}", [{"user_id": user}], [], {"items": items},
                      created=t0 + timedelta(minutes=n))  # fmt: skip

    entries = [entry(0, "u0", ["i0"]), entry(1, "u1", ["i1"]), entry(2, "u2", ["i2"]),
               entry(3, "u1", ["i1", "i3"])]  # fmt: skip

    class Log:
        def entries(self, *args, **kwargs):
            return entries

    cfg = OmegaConf.create({"retrain": {"since": None, "holdout_share": 0.34}})
    fed = divide(cfg, Log(), retail, fixed, None)
    assert fed.in_holdout == 1  # r0 repeats the base holdout's case
    assert [e.request_id for e in fed.to_holdout] == ["r3"]  # the newest third of the rest
    assert [e.request_id for e in fed.train] == ["r2"] and fed.overlap == 1  # r1: u1 bought i1
    assert {"u1\x00i1", "u1\x00i3", "u0\x00i0"} <= fed.held_keys
