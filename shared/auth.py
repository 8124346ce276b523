"""Bearer tokens: who may call a served vertical, and for what.

A token is shown once, when it is made (`verticals token create`); only its sha256 is kept,
one line per token in the vertical's tokens file (`<digest> <scope> <name> <created>`), or
given to a container as `VERTICALS_TOKENS` (`scope:token` entries, a secret's plain text).
A server re-reads the file when it changes, so a revoked token stops working within a
second, without a restart. Once any token exists, every request needs one, loopback
included; `/health` and `/ready` stay open for load balancers.

Scopes: `predict` (/predict, /metadata, the OpenAPI docs), `feedback` (/feedback), `admin`
(everything: /metrics, reloads, the log). A missing or unknown token is 401, a token of the
wrong scope 403; the presented token is never logged, and failures are counted
(`verticals_auth_failures_total{reason}`). Tokens are 256-bit random, so comparing their
sha256 digests with `hmac.compare_digest` is as safe as a slow hash, and costs a
microsecond per request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verticals.core.errors import UserError

SCOPES = ("predict", "feedback", "admin")
ENV = "VERTICALS_TOKENS"
OPEN_PATHS = frozenset({"/health", "/ready"})
_PREFIX = "vt_"
#: The scope each path needs; anything not listed needs `predict`.
_PATH_SCOPES = (("/feedback", "feedback"), ("/metrics", "admin"), ("/reload", "admin"),
                ("/log", "admin"))  # fmt: skip


@dataclass(frozen=True)
class Token:
    digest: str  # "sha256:<hex>"
    scope: str
    name: str
    created: str = ""

    def line(self) -> str:
        return f"{self.digest} {self.scope} {self.name} {self.created}".rstrip()


def digest_of(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def scope_for(path: str) -> str | None:
    """The scope a request to `path` needs; None for the open paths."""
    if path in OPEN_PATHS:
        return None
    for prefix, scope in _PATH_SCOPES:
        if path == prefix or path.startswith(prefix + "/"):
            return scope
    return "predict"


def route_path(scope: Any) -> str:
    """The path the router matches: without the `root_path` a proxy mounts the app under
    (uvicorn puts it in front of `path`), so `/api/metrics` needs admin as `/metrics` does."""
    path, root = scope["path"], scope.get("root_path") or ""
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def allows(scope: str, needed: str) -> bool:
    return scope == "admin" or scope == needed


# -- the tokens file ---------------------------------------------------------------------


def default_file(tokens_dir: str | Path, vertical: str) -> Path:
    return Path(tokens_dir).expanduser().resolve() / f"{vertical}.tokens"


def read_file(path: Path) -> list[Token]:
    """The tokens of a file; a line that is not `<sha256:hex> <scope> <name> [created]` is
    a `UserError` naming the file and line (a plain token pasted in, say)."""
    tokens = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) < 3 or not parts[0].startswith("sha256:") or parts[1] not in SCOPES:
            raise UserError(
                f"{path}, line {number}: expected '<sha256:hex> <scope> <name>'; tokens are "
                "kept hashed (`verticals token create` writes them)"
            )
        tokens.append(Token(parts[0], parts[1], parts[2], " ".join(parts[3:])))
    return tokens


def write_file(path: Path, tokens: list[Token]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    body = "# verticals tokens: sha256 of each, its scope, its name, when it was made\n"
    body += "".join(f"{t.line()}\n" for t in tokens)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    os.replace(tmp, path)


def create(path: Path, scope: str, name: str | None = None) -> tuple[str, Token]:
    """A new token of `scope` in `path`: (the token, shown once; what the file keeps)."""
    if scope not in SCOPES:
        raise UserError(f"scope={scope!r}; expected one of {', '.join(SCOPES)}")
    existing = read_file(path) if path.is_file() else []
    name = name or f"{scope}-{len(existing) + 1}"
    if any(t.name == name for t in existing):
        raise UserError(f"{path} already has a token named {name!r}; give another name=")
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"name={name!r}; use letters, digits, '-', '_' and '.' only")
    token = new_token()
    made = datetime.now(UTC).isoformat(timespec="seconds")
    entry = Token(digest_of(token), scope, name, made)
    write_file(path, [*existing, entry])
    return token, entry


def revoke(path: Path, name: str) -> Token:
    existing = read_file(path) if path.is_file() else []
    gone = [t for t in existing if t.name == name]
    if not gone:
        names = ", ".join(t.name for t in existing) or "none"
        raise UserError(f"{path} has no token named {name!r} (tokens: {names})")
    write_file(path, [t for t in existing if t.name != name])
    return gone[0]


def from_env(value: str | None) -> list[Token]:
    """`VERTICALS_TOKENS`: `scope:token` entries (or hashed lines), comma or newline apart."""
    tokens = []
    for n, item in enumerate(filter(None, (p.strip() for p in (value or "").replace(",", "\n")
                                           .splitlines())), start=1):  # fmt: skip
        if item.startswith("sha256:"):
            parts = item.split()
            tokens.append(Token(parts[0], parts[1] if len(parts) > 1 else "predict",
                                f"env-{n}"))  # fmt: skip
            continue
        scope, _, token = item.partition(":")
        if scope not in SCOPES or not token:
            raise UserError(f"{ENV}: entry {n} is not 'scope:token' (scope: {', '.join(SCOPES)})")
        tokens.append(Token(digest_of(token), scope, f"env-{n}"))
    return tokens


class Tokens:
    """The tokens a server accepts: its file (re-read when it changes, checked at most once a
    second) and the environment's."""

    def __init__(self, file: Path | None, env: str | None = None) -> None:
        self.file = file
        self._env = from_env(env)
        self._file_tokens: list[Token] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._ever = False  # once a token existed, the last one's revocation closes, not opens
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        if self.file is None:
            return
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            self._file_tokens, self._stamp = [], None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._file_tokens, self._stamp = read_file(self.file), stamp

    @property
    def all(self) -> list[Token]:
        self._refresh()
        return [*self._file_tokens, *self._env]

    @property
    def required(self) -> bool:
        """Whether requests need a token: once any token has existed, always (an emptied or
        deleted file then lets no one in, rather than everyone)."""
        self._ever = self._ever or bool(self.all)
        return self._ever

    def check(self, presented: str) -> Token | None:
        """The token `presented` is, or None: every digest is compared, in constant time."""
        digest = digest_of(presented)
        found = None
        for token in self.all:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    def describe(self) -> str:
        n = len(self.all)
        return f"bearer tokens ({n})" if n else "off: no tokens"


def refuse_open_container() -> None:
    """A bundle's container (`VERTICALS_REQUIRE_TOKENS=1`, set by its Dockerfile) listens on
    every address: without a token it does not start, unless
    `VERTICALS_ALLOW_UNAUTHENTICATED=1` says something in front of it checks callers."""
    if os.environ.get("VERTICALS_REQUIRE_TOKENS") != "1":
        return
    if os.environ.get("VERTICALS_ALLOW_UNAUTHENTICATED") == "1":
        return
    file = os.environ.get("VERTICALS_TOKENS_FILE")
    if not Tokens(Path(file) if file else None, os.environ.get(ENV)).required:
        raise SystemExit(
            f"error: no tokens: give {ENV}=predict:<token> (or VERTICALS_TOKENS_FILE), or "
            "VERTICALS_ALLOW_UNAUTHENTICATED=1 if something in front checks callers"
        )


class Auth:
    """The ASGI middleware: a plain one, since Starlette's `BaseHTTPMiddleware` costs more
    per request than scoring a record."""

    def __init__(self, app: Any, tokens: Tokens, failures: Any) -> None:
        self.app, self.tokens, self.failures = app, tokens, failures

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = scope_for(route_path(scope))
        if needed is None or not self.tokens.required:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        kind, _, presented = header.decode("latin-1").partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            need = "this server needs a bearer token: Authorization: Bearer <token>"
            await self._refuse(scope, receive, send, 401, "missing", need)
            return
        token = self.tokens.check(presented.strip())
        if token is None:
            await self._refuse(scope, receive, send, 401, "invalid", "unknown or revoked token")
            return
        if not allows(token.scope, needed):
            await self._refuse(scope, receive, send, 403, "scope",
                               f"token {token.name!r} has scope {token.scope}; "
                               f"{scope['path']} needs {needed}")  # fmt: skip
            return
        scope.setdefault("state", {})["token"] = token.name
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any, status: int, reason: str,
                      message: str) -> None:  # fmt: skip
        self.failures.labels(reason).inc()
        request_id = scope.get("state", {}).get("request_id")
        body = json.dumps({"message": message, "request_id": request_id}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="verticals"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
