"""Bundle signatures: who packaged this bundle, and has anything changed since.

The manifest lists every file's sha256, so a damaged file is caught; but whoever can edit a
model file can update its hash too. An Ed25519 signature over `manifest.json`, made with a
private key only the packager holds, closes that gap: a server given the matching public key
(`serve.public_key`) and `serve.require_signature=true` refuses any bundle whose manifest
was not signed by that key, or was edited afterwards.

The signature lies beside the manifest in `manifest.sig` (JSON: the base64 signature and the
signer's key fingerprint). A public key shipped inside the bundle would prove nothing (an
attacker re-signs with their own), so the trusted key always comes from the server's side.

Make a key pair with `python -m verticals.core.signing keygen DIR` (or
`openssl genpkey -algorithm ed25519 -out signing.key` and
`openssl pkey -in signing.key -pubout -out signing.pub`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from verticals.core.errors import UserError
from verticals.core.runs import write_atomic

MANIFEST = "manifest.json"  # the same name as bundle.MANIFEST (bundle imports this module)
SIGNATURE = "manifest.sig"
ALGORITHM = "ed25519"


class Trust(Protocol):
    """The `serve.*` settings a signature check needs (`ServeConfig` has them)."""

    require_signature: bool
    public_key: str | None


def fingerprint(key: Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the raw public key: names the signer in messages and the file."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file at `path` (unencrypted), or a `UserError`."""
    data = _read_key(path, "sign.key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UserError(f"sign.key={path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"sign.key={path}: a {type(key).__name__}; an Ed25519 key is needed")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file at `path`, or a `UserError`."""
    data = _read_key(path, "serve.public_key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UserError(f"serve.public_key={path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(
            f"serve.public_key={path}: a {type(key).__name__}; an Ed25519 key is needed"
        )
    return key


def _read_key(path: str | Path, setting: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UserError(f"{setting}={path}: cannot read it ({exc.strerror})") from None


def sign_manifest(bundle_dir: str | Path, key: str | Path | Ed25519PrivateKey) -> Path:
    """Sign `bundle_dir/manifest.json` as it is on disk; returns the `manifest.sig` written.
    Sign last: any later edit of the manifest breaks the signature."""
    bundle_dir = Path(bundle_dir)
    private = key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)
    signature = private.sign((bundle_dir / MANIFEST).read_bytes())
    content = {
        "algorithm": ALGORITHM,
        "signed": MANIFEST,
        "key_fingerprint": fingerprint(private.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    write_atomic(bundle_dir / SIGNATURE, json.dumps(content, indent=2) + "\n")
    return bundle_dir / SIGNATURE


def verify_signature(bundle_dir: str | Path, public_key_path: str | Path) -> str:
    """Check that `bundle_dir/manifest.json` is signed by the key at `public_key_path`;
    the signer's fingerprint, or a one-line `UserError` naming the bundle."""
    bundle_dir = Path(bundle_dir)
    public = load_public_key(public_key_path)
    expected = fingerprint(public)
    signature, signer = _read_signature(bundle_dir)
    if signer is not None and signer != expected:
        raise UserError(
            f"bundle {bundle_dir} is signed by key {signer}, not by serve.public_key "
            f"({expected}); refusing to serve it"
        )
    try:
        public.verify(signature, (bundle_dir / MANIFEST).read_bytes())
    except InvalidSignature:
        raise UserError(
            f"bundle {bundle_dir}: {MANIFEST} does not match its signature (edited after "
            f"signing, or signed by another key); refusing to serve it"
        ) from None
    except OSError as exc:
        raise UserError(f"bundle {bundle_dir}: cannot read {MANIFEST} ({exc.strerror})") from None
    return expected


def _read_signature(bundle_dir: Path) -> tuple[bytes, str | None]:
    """The raw signature in `manifest.sig` and the fingerprint it names."""
    path = bundle_dir / SIGNATURE
    if not path.is_file():
        raise UserError(
            f"bundle {bundle_dir} is not signed (no {SIGNATURE}) and serve.require_signature "
            f"is true; package it with sign.key=PATH"
        )
    try:
        content = json.loads(path.read_text())
        if content.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {content.get('algorithm')!r}, not {ALGORITHM}")
        signature = base64.b64decode(content["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise UserError(f"bundle {bundle_dir}: {SIGNATURE} is damaged ({exc})") from None
    signer = content.get("key_fingerprint")
    return signature, None if signer is None else str(signer)


def check_trust(trust: Trust | None) -> None:
    """Refuse `require_signature` without a trusted key: a key inside the bundle proves
    nothing (whoever edits the bundle re-signs it with their own)."""
    if trust is not None and trust.require_signature and not trust.public_key:
        raise UserError(
            "serve.require_signature=true needs serve.public_key=PATH (the signer's public "
            "key, PEM): a key shipped inside the bundle proves nothing"
        )


def enforce(bundle_dir: str | Path, trust: Trust | None) -> None:
    """What serving asks before it loads a bundle: with `require_signature`, a signature
    by `public_key` (else a one-line `UserError`); without, nothing."""
    check_trust(trust)
    if trust is not None and trust.require_signature:
        assert trust.public_key is not None  # check_trust
        verify_signature(bundle_dir, trust.public_key)


def keygen(out_dir: str | Path, name: str = "signing") -> tuple[Path, Path]:
    """Write a new key pair, `<name>.key` (private, mode 600) and `<name>.pub`; refuses to
    overwrite a private key (bundles signed with it could no longer be re-signed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    if private_path.exists():
        raise UserError(f"{private_path} exists; remove it first or choose another folder")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def main(argv: list[str] | None = None) -> int:
    """`python -m verticals.core.signing keygen DIR`: a key pair for `sign.key` and
    `serve.public_key`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "keygen":
        print("usage: python -m verticals.core.signing keygen OUT_DIR", file=sys.stderr)
        return 2
    try:
        private_path, public_path = keygen(args[1])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"private key: {private_path} (keep it secret; package with sign.key={private_path})")
    print(f"public key:  {public_path} (serve with serve.public_key={public_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
