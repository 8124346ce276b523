"""`verticals.client.Client` against real servers (uvicorn on loopback, tokens on) for all
five verticals: typed calls, feedback, batching of long lists, client-side validation
against the served schema, errors with the server's message, retries on 503 only; and
`verticals call` from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from verticals.client import Client, ClientError  # noqa: E402
from verticals.core import auth  # noqa: E402
from verticals.core.bundle import write_bundle  # noqa: E402
from verticals.core.config import ServeConfig  # noqa: E402
from verticals.core.examples import EXAMPLES, example_body  # noqa: E402
from verticals.core.predlog import LogSettings  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402

from .conftest import needs_ultralytics  # noqa: E402
from .servers import run_cli, serving_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    file = tmp_path_factory.mktemp("client-tokens") / "any.tokens"
    admin, _ = auth.create(file, "admin", "ops")
    predict, _ = auth.create(file, "predict", "app")
    return file, admin, predict


def _serve(bundle: Path, file: Path, root: Path):
    app = create_app(bundle, options=ServeConfig(tokens_file=str(file)),
                     prediction_log=LogSettings.default(root / "predlog"))  # fmt: skip
    return serving_in_thread(app)


def test_finance_scores_batches_reports_and_validates(
    finance_run, tokens, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    file, admin, predict = tokens
    bundle = write_bundle(finance_run.run_dir, tmp_path / "bundles")
    applicant = json.loads(example_body(bundle / EXAMPLES))[0]
    with _serve(bundle, file, tmp_path) as (base, _):
        with Client(base, token=admin, batch=400) as client:
            answer = client.finance.score(applicant)
            assert 0 < answer.pd < 1 and answer.grade and answer.reasons
            assert answer.model_version == bundle.name and answer.request_id
            many = client.finance.score_many([applicant] * 1000)  # 3 requests of <= 400
            assert len(many) == 1000 and len({a.request_id for a in many}) == 3
            assert client.finance.report(answer.request_id, 1) == {"stored": 1, "replaced": 0}
            with pytest.raises(ValueError, match=r"record\[1\]\.age"):
                client.finance.score_many([applicant, {**applicant, "age": "old"}])
        with Client(base, token=predict) as client, pytest.raises(ClientError) as refused:
            client.finance.report(answer.request_id, 0)
        assert refused.value.status == 403 and "needs feedback" in refused.value.message
        with Client(base, token="wrong", retries=0) as client, pytest.raises(ClientError) as bad:
            client.finance.score(applicant)
        assert bad.value.status == 401

        record = tmp_path / "applicant.json"
        record.write_text(json.dumps(applicant))
        monkeypatch.setenv("VERTICALS_TOKEN", predict)
        assert run_cli("call", "finance", f"input={record}", f"url={base}") == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown[0]["grade"] == answer.grade
        monkeypatch.setenv("VERTICALS_TOKEN", "nope")
        assert run_cli("call", "finance", f"input={record}", f"url={base}") == 2
        assert "401: unknown or revoked token" in capsys.readouterr().err


def test_retail_and_traffic(tokens, tiny, tmp_path: Path) -> None:
    pytest.importorskip("implicit")
    pytest.importorskip("torch")
    file, admin, _ = tokens
    retail, retail_bundle = tiny("retail")
    user = str(retail.splits.test.users[0])
    with _serve(retail_bundle, file, tmp_path / "r") as (base, _), Client(base, admin) as client:
        answer = client.retail.recommend(user, k=5)
        assert 0 < len(answer.recommendations) <= 5 and answer.fallback is False
        item = answer.recommendations[0]["item_id"]
        assert item not in [r["item_id"] for r in client.retail.similar(item, k=3).recommendations]
        stored = client.retail.report(answer.request_id, [item])
        assert stored["stored"] == 1
    traffic, traffic_bundle = tiny("traffic")
    window = json.loads(example_body(traffic_bundle / EXAMPLES))
    with _serve(traffic_bundle, file, tmp_path / "t") as (base, _), Client(base, admin) as client:
        forecast = client.traffic.forecast(window)
        assert forecast.rows and {"sensor", "timestamp", "horizon_min"} <= set(forecast.rows[0])
        observed = [{"sensor": r["sensor"], "timestamp": r["timestamp"], "speed": 50.0}
                    for r in forecast.rows[:3]]  # fmt: skip
        assert client.traffic.report(forecast.request_id, observed)["stored"] == 1


def test_medical_and_manufacturing_files(tokens, tiny, tmp_path: Path) -> None:
    pytest.importorskip("monai")
    needs_ultralytics()
    file, admin, _ = tokens
    medical, medical_bundle = tiny("medical")
    volume = Path(medical.splits.test[0]["image"])
    with _serve(medical_bundle, file, tmp_path / "m") as (base, _), Client(base, admin) as client:
        summary, mask = client.medical.segment(volume, tmp_path / "masks")
        assert mask.is_file() and mask.name.endswith(".nii.gz") and summary.volumes_ml
        assert client.medical.correct(summary.request_id, mask) == {"stored": 1, "replaced": 0}
    parts, parts_bundle = tiny("manufacturing")
    image = parts.splits.test.images[0]
    with _serve(parts_bundle, file, tmp_path / "p") as (base, _), Client(base, admin) as client:
        inspected = client.manufacturing.inspect(image, tmp_path / "annotated")
        assert inspected.output is not None and inspected.output.is_file()
        assert inspected.decision in ("pass", "fail")
        assert client.manufacturing.report(inspected.request_id, "pass", [])["stored"] == 1


def test_retries_on_503_only() -> None:
    calls = {"busy": 0, "broken": 0}

    async def busy(request):  # noqa: ANN001, ANN202 - a bare Starlette endpoint
        calls["busy"] += 1
        if calls["busy"] < 3:
            return JSONResponse({"message": "busy"}, 503, headers={"Retry-After": "0"})
        return JSONResponse({"vertical": "finance"})

    async def broken(request):  # noqa: ANN001, ANN202
        calls["broken"] += 1
        return JSONResponse({"message": "bad input", "request_id": "r-1"}, 422)

    app = Starlette(routes=[Route("/metadata", busy), Route("/broken", broken)])
    with serving_in_thread(app) as (base, _), Client(base, backoff=0.01) as client:
        assert client.vertical == "finance" and calls["busy"] == 3  # two 503s, then 200
        with pytest.raises(ClientError) as refused:
            client.request("GET", "/broken")
        assert calls["broken"] == 1 and refused.value.request_id == "r-1"  # not retried
    with (
        Client("http://127.0.0.1:9", retries=1, backoff=0.01) as client,
        pytest.raises(Exception, match="onnect"),
    ):
        client.request("GET", "/metadata")
