"""Bearer tokens: `verticals token` makes, lists and revokes them (kept hashed); a server with
any token needs one on every path but /health and /ready, answers 401 without or with a
wrong one and 403 for the wrong scope, counts the refusals, and never shows the token;
`verticals serve` refuses an address beyond loopback without tokens unless told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from verticals.core import auth
from verticals.core.bundle import write_bundle
from verticals.core.config import ServeConfig
from verticals.core.examples import EXAMPLES, example_body
from verticals.core.serving import create_app

from .servers import run_cli


@pytest.fixture(scope="module")
def bundle(finance_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(finance_run.run_dir, tmp_path_factory.mktemp("auth-bundles"))


def _create(root: Path, capsys, *more: str) -> str:
    assert run_cli("token", "create", "finance", f"paths.root_dir={root}", *more) == 0
    return capsys.readouterr().out.splitlines()[1]


def test_tokens_are_shown_once_kept_hashed_and_revoked(tmp_path: Path, capsys) -> None:
    secret = _create(tmp_path, capsys, "name=app-1")
    admin = _create(tmp_path, capsys, "scope=admin", "name=ops")
    file = tmp_path / "tokens" / "finance.tokens"
    text = file.read_text()
    assert secret not in text and admin not in text  # only digests on disk
    assert auth.digest_of(secret) in text and file.stat().st_mode & 0o077 == 0
    assert run_cli("token", "list", "finance", f"paths.root_dir={tmp_path}") == 0
    listed = capsys.readouterr().out
    assert "app-1" in listed and "ops" in listed and "admin" in listed and secret not in listed
    assert run_cli("token", "create", "finance", f"paths.root_dir={tmp_path}", "name=app-1") == 2
    assert "already has a token named 'app-1'" in capsys.readouterr().err
    assert run_cli("token", "create", "finance", f"paths.root_dir={tmp_path}", "scope=root") == 2
    assert "scope='root'; expected one of predict, feedback, admin" in capsys.readouterr().err
    assert run_cli("token", "revoke", "finance", f"paths.root_dir={tmp_path}", "name=app-1") == 0
    assert auth.digest_of(secret) not in file.read_text()
    assert run_cli("token", "revoke", "finance", f"paths.root_dir={tmp_path}", "name=gone") == 2


def test_a_server_with_tokens_checks_every_request(bundle: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "finance.tokens"
    predict, _ = auth.create(file, "predict", "app")
    feedback, _ = auth.create(file, "feedback", "ledger")
    admin, _ = auth.create(file, "admin", "ops")
    body = json.loads(example_body(bundle / EXAMPLES))[:1]
    client = TestClient(create_app(bundle, options=ServeConfig(tokens_file=str(file))))

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    missing = client.post("/predict", json=body)
    assert missing.status_code == 401 and "needs a bearer token" in missing.json()["message"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["x-request-id"]  # counted and named like any other answer
    wrong = client.post("/predict", json=body, headers=bearer(predict + "x"))
    assert wrong.status_code == 401 and predict not in wrong.text
    assert client.post("/predict", json=body, headers=bearer(predict)).status_code == 200
    assert client.get("/metadata", headers=bearer(predict)).json()["authentication"] == (
        "bearer tokens (3)"
    )
    assert client.post("/predict", json=body, headers=bearer(admin)).status_code == 200
    scoped = client.get("/metrics", headers=bearer(predict))
    assert scoped.status_code == 403 and "needs admin" in scoped.json()["message"]
    denied = client.post("/feedback", json=[], headers=bearer(predict))
    assert denied.status_code == 403
    assert client.post("/predict", json=body, headers=bearer(feedback)).status_code == 403
    metrics = client.get("/metrics", headers=bearer(admin)).text
    assert 'verticals_auth_failures_total{reason="missing"} 1.0' in metrics
    assert 'verticals_auth_failures_total{reason="scope"} 3.0' in metrics
    assert predict not in metrics

    auth.revoke(file, "app")  # the server re-reads the file: no restart
    import time

    time.sleep(1.1)
    assert client.post("/predict", json=body, headers=bearer(predict)).status_code == 401
    for name in ("ledger", "ops"):  # the last token gone: no one gets in, rather than all
        auth.revoke(file, name)
    time.sleep(1.1)
    assert client.post("/predict", json=body).status_code == 401
    auth.create(file, "predict", "app-2")
    mounted = TestClient(create_app(bundle, options=ServeConfig(tokens_file=str(file))),
                         root_path="/api")  # fmt: skip
    assert mounted.get("/health").status_code == 200  # behind a proxy's prefix, as before
    assert mounted.get("/metrics").status_code == 401
    assert "Bearer" not in capsys.readouterr().err  # no token in the server log


def test_tokens_from_the_environment(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ENV, "predict:s3cret-from-a-vault")
    client = TestClient(create_app(bundle))
    assert client.get("/metadata").status_code == 401
    ok = client.get("/metadata", headers={"Authorization": "Bearer s3cret-from-a-vault"})
    assert ok.status_code == 200


def test_serve_beyond_loopback_needs_tokens_or_an_explicit_opt_out(
    bundle: Path, tmp_path: Path, capsys
) -> None:
    args = ["serve", "finance", f"bundle={bundle}", f"paths.root_dir={tmp_path}",
            "serve.host=0.0.0.0", "serve.port=1", "tracking=none"]  # fmt: skip
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "serve.host=0.0.0.0 reaches beyond this machine" in err
    assert "verticals token create finance" in err
    assert not (tmp_path / "runs").exists()  # a refused start leaves no run folder


def test_a_bundles_container_entry_needs_a_token(bundle: Path) -> None:
    """The Dockerfile sets VERTICALS_REQUIRE_TOKENS=1: `serve.py` refuses to build the app
    without a token, and builds it (auth on) with one."""
    import os
    import subprocess
    import sys

    assert "ENV VERTICALS_REQUIRE_TOKENS=1" in (bundle / "Dockerfile").read_text()
    base = {k: v for k, v in os.environ.items() if k != auth.ENV}
    env = {**base, "VERTICALS_REQUIRE_TOKENS": "1", "VERTICALS_LOG": "off"}
    probe = "import serve; print(type(serve.app).__name__)"
    refused = subprocess.run([sys.executable, "-c", probe], cwd=bundle, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode != 0 and "error: no tokens" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    env[auth.ENV] = "predict:a-token-from-a-secret"
    built = subprocess.run([sys.executable, "-c", probe], cwd=bundle, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert built.returncode == 0 and "FastAPI" in built.stdout, built.stderr[-2000:]
