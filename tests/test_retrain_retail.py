"""Retrain on feedback, retail end to end on demo data: a champion served with a prediction
log and following the registry; customers go on to buy from a product line the model has
never seen; the monitor flags the missed purchases; `verticals retrain` learns the new items
from the feedback, wins on the held-out customers and is promoted; the running server then
recommends the new items."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from verticals.configs import compose
from verticals.core import model_versions, pipeline
from verticals.core.bundle import write_bundle
from verticals.core.config import ServeConfig
from verticals.core.model_versions import Champion
from verticals.core.predlog import LogSettings
from verticals.core.serving import create_app
from verticals.core.tracking import Store

from .servers import http, run_cli, serving_in_thread

NEW_ITEMS = [f"new-{i}" for i in range(8)]
TASTE = {"segment_0"}  # who takes to the new line


WORLD = ["data.n_users=1200", "data.n_items=300", "data.n_interactions=24000",
         "data.n_segments=4", "model.factors=4", "model.iterations=10"]  # fmt: skip


def _cfg(root: Path, *overrides: str):
    return compose("train", "retail", [f"paths.root_dir={root}", "trainer.device=cpu",
                                       "debug=fast", *overrides])  # fmt: skip


def _taste_users(model) -> list[str]:
    """Customers who mostly bought from the TASTE segments, by their training purchases."""
    category = model.catalog["category"].astype(str)
    found = []
    for index, user in enumerate(model.user_ids):
        items = model.item_ids[model.user_items[index].indices]
        counts = category.reindex(items).value_counts()
        if len(counts) and counts.index[0] in TASTE:
            found.append(str(user))
    return found


def _post(base: str, path: str, body: object) -> dict:
    status, answer = http(f"{base}{path}", json.dumps(body).encode())
    assert status == 200, answer[:300]
    return json.loads(answer)


def test_a_new_product_line_is_flagged_learnt_and_recommended(tmp_path: Path, capsys) -> None:
    pytest.importorskip("implicit")
    result = pipeline.train(_cfg(tmp_path, *WORLD))
    store = Store.of(_cfg(tmp_path))
    bundle = write_bundle(result.run_dir, tmp_path / "bundles")
    assert model_versions.register(store, bundle, "retail") == (1, True)
    users = _taste_users(result.model)
    assert len(users) > 200, len(users)
    # the newest 30% of the requests (the holdout's share) come from customers who bought
    # none of the new line before: the challenger must generalise from the others
    cut = len(users) // 2
    asked = [u for u in users[:cut] for _ in range(2)] + users[cut:]
    assert len(users) - cut >= int(len(asked) * 0.3)
    rng = np.random.default_rng(3)
    appeal = rng.dirichlet(np.full(len(NEW_ITEMS), 1.0))
    app = create_app(
        bundle,
        options=ServeConfig(reload_seconds=0.2),
        follow=Champion.of(store, "retail"),
        prediction_log=LogSettings.default(tmp_path / "predlog"),
    )
    with serving_in_thread(app) as (base, _):
        outcomes = []
        for user in asked:
            answer = _post(base, "/predict", {"user_id": user})
            assert answer["model_version"] == bundle.name
            bought = rng.choice(NEW_ITEMS, 4, replace=False, p=appeal).tolist()
            outcomes.append({"request_id": answer["request_id"], "items": bought})
        assert _post(base, "/feedback", outcomes)["stored"] == len(asked)

        code = run_cli("monitor", "retail", f"paths.root_dir={tmp_path}", "since=1h")
        out = capsys.readouterr().out
        assert code == 1 and "hit_rate@10" in out, out  # the model cannot recommend them

        code = run_cli("retrain", "retail", f"paths.root_dir={tmp_path}", "trainer.device=cpu",
                       "retrain.min_feedback=200")  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0 and "PROMOTED" in out, out
        champion = model_versions.champion(store, "retail")
        assert champion is not None and champion.version == 2
        figures = json.loads(
            (Path(out.split("report: ")[-1].split()[0]).parent / "retrain.json").read_text()
        )
        held = int(len(asked) * 0.3)
        assert figures["feedback"] == {
            "learnt": len(asked) - held, "to_holdout": held, "in_holdout": 0, "overlap": 0,
            "total": len(asked),
        }  # fmt: skip
        assert figures["challenger"]["ndcg@10"] > figures["champion"]["ndcg@10"] + 0.05, figures

        deadline = time.monotonic() + 20
        while True:  # the running server follows the champion by itself
            answer = _post(base, "/predict", {"user_id": users[0]})
            if answer["model_version"] == champion.model_version:
                break
            assert time.monotonic() < deadline, "the server still answers with version 1"
            time.sleep(0.1)
        shown = [
            r["item_id"]
            for user in users[cut:]
            for r in _post(base, "/predict", {"user_id": user})["predictions"][0]["recommendations"]
        ]
        assert sum(item in NEW_ITEMS for item in shown) > len(users[cut:]), shown[:40]
