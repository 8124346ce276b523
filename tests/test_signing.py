"""Signed bundles: `sign.key` signs the manifest, and a server with
`serve.require_signature=true` and the trusted `serve.public_key` refuses a bundle that is
unsigned, signed by another key, or whose manifest was edited after signing (the attack
hashes alone cannot catch: a model file replaced and its sha256 updated to match)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from verticals.core.bundle import MANIFEST, _dockerfile, load_bundle, sha256, write_bundle
from verticals.core.config import ServeConfig
from verticals.core.errors import UserError
from verticals.core.serving import create_app
from verticals.core.signing import SIGNATURE, keygen, main, sign_manifest, verify_signature

from .servers import Pointer, run_cli


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two key pairs: the packager's (`ours`) and someone else's (`theirs`)."""
    root = tmp_path_factory.mktemp("keys")
    return {name: keygen(root / name) for name in ("ours", "theirs")}


@pytest.fixture(scope="module")
def signed(finance_run, keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finance bundle signed with our key."""
    root = tmp_path_factory.mktemp("signed")
    return write_bundle(finance_run.run_dir, root, sign_key=keys["ours"][0], examples=False)


def _trust(keys: dict[str, tuple[Path, Path]], who: str = "ours") -> ServeConfig:
    return ServeConfig(require_signature=True, public_key=str(keys[who][1]))


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "finance" / bundle.name))


def _one_line(exc: pytest.ExceptionInfo[UserError], *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and all(w in text for w in words), text
    return text


def test_a_signed_bundle_serves_with_the_trusted_key(signed: Path, keys) -> None:
    sig = json.loads((signed / SIGNATURE).read_text())
    assert sig["algorithm"] == "ed25519" and sig["key_fingerprint"].startswith("sha256:")
    assert SIGNATURE not in json.loads((signed / MANIFEST).read_text())["files"]
    assert verify_signature(signed, keys["ours"][1]) == sig["key_fingerprint"]
    app = create_app(signed, options=_trust(keys))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200


def test_an_unsigned_bundle_is_refused(signed: Path, keys, tmp_path: Path) -> None:
    bundle = _copy(signed, tmp_path)
    (bundle / SIGNATURE).unlink()
    with pytest.raises(UserError) as exc:
        load_bundle(bundle, trust=_trust(keys))
    _one_line(exc, str(bundle), "not signed", "sign.key")
    load_bundle(bundle)  # without require_signature: served as before
    with pytest.raises(UserError) as exc:  # also when something else loaded it first
        create_app(load_bundle(bundle), options=_trust(keys))
    _one_line(exc, str(bundle), "not signed")


def test_another_key_is_refused(signed: Path, keys) -> None:
    with pytest.raises(UserError) as exc:
        load_bundle(signed, trust=_trust(keys, "theirs"))
    _one_line(exc, str(signed), "signed by key", "serve.public_key")


def test_a_resigned_bundle_is_refused(signed: Path, keys, tmp_path: Path) -> None:
    """An attacker who signs their edit with their own key gains nothing."""
    bundle = _copy(signed, tmp_path)
    sign_manifest(bundle, keys["theirs"][0])
    with pytest.raises(UserError) as exc:
        load_bundle(bundle, trust=_trust(keys))
    _one_line(exc, str(bundle), "signed by key")


def test_a_model_swapped_with_its_hash_updated_is_refused(
    signed: Path, keys, tmp_path: Path
) -> None:
    bundle = _copy(signed, tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    model = next(rel for rel in manifest["files"] if rel.startswith("model/"))
    with (bundle / model).open("a") as fh:
        fh.write("\n")  # the attacker's model
    manifest["files"][model] = sha256(bundle / model)  # and its hash, to match
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    load_bundle(bundle)  # the hashes alone do not notice
    with pytest.raises(UserError) as exc:
        load_bundle(bundle, trust=_trust(keys))
    _one_line(exc, str(bundle), MANIFEST, "does not match its signature")


def test_require_signature_needs_a_trusted_key(signed: Path) -> None:
    options = ServeConfig(require_signature=True)
    with pytest.raises(UserError) as exc:
        create_app(signed, options=options)
    _one_line(exc, "serve.require_signature=true needs serve.public_key")


def test_a_followed_unsigned_version_is_not_served(signed: Path, keys, tmp_path: Path) -> None:
    unsigned = _copy(signed, tmp_path)
    (unsigned / SIGNATURE).unlink()
    pointer = Pointer(tmp_path / "champion", signed)
    app = create_app(signed, options=_trust(keys), follow=pointer)
    with TestClient(app) as client:
        pointer.point(unsigned)
        assert client.portal.call(app.state.reload) is False
        error = client.get("/metadata").json()["reload_error"]
        assert "not signed" in error and str(unsigned) in error
        assert app.state.served.bundle.path == signed


def test_package_signs_through_the_cli(finance_run, keys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = run_cli(
        "package", "finance", f"run={finance_run.run_dir}", f"paths.root_dir={tmp_path}",
        "tracking=none", "examples=false", f"sign.key={keys['ours'][0]}",
    )  # fmt: skip
    assert code == 0
    (bundle,) = (tmp_path / "bundles" / "finance").glob("*/manifest.sig")
    assert verify_signature(bundle.parent, keys["ours"][1]).startswith("sha256:")
    bad = ("package", "finance", f"run={finance_run.run_dir}", f"paths.root_dir={tmp_path}")
    assert run_cli(*bad, "tracking=none", "sign.key=/no/key") == 2  # before any work


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path, capsys) -> None:
    assert main(["keygen", str(tmp_path)]) == 0
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    assert "serve.public_key=" in capsys.readouterr().out
    assert main(["keygen", str(tmp_path)]) == 2  # never overwrites a private key


def test_the_dockerfile_serves_as_an_unprivileged_user() -> None:
    """Not signing, but the same hardening: the image's server never runs as root."""
    lines = _dockerfile("finance", {"python": "3.12.3"}).splitlines()
    user = lines.index("USER 10001:10001")
    assert user < next(i for i, line in enumerate(lines) if line.startswith("CMD "))
    assert any(line.startswith("RUN useradd --uid 10001 ") for line in lines[:user])
    assert not any(line.startswith("USER root") for line in lines[user:])
