"""Bundles: a trained run turned into a self-contained, verifiable, servable directory.

A bundle holds the model, the resolved config, the request/response JSON schema, the
metrics, a model card, a serving entry point, a Dockerfile and `manifest.json` (sha256 of
every file, library versions). It is assembled in a hidden sibling directory and renamed
into place, so a crash never leaves a bundle that loads half; `load_bundle` re-checks
every hash before it trusts the files.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, metadata, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core import registry
from verticals.core.contract import FileVertical, Vertical
from verticals.core.errors import UserError
from verticals.core.examples import EXAMPLES
from verticals.core.fingerprint import file_digest
from verticals.core.runs import mark_latest, write_json
from verticals.core.signing import Trust, enforce, load_private_key, sign_manifest
from verticals.core.wheel import build_wheel

MANIFEST = "manifest.json"
FORMAT = 2  # 2: the core is `verticals.core` and the suite's wheel is in wheels/
WHEELS = "wheels"
SUITE = "verticals"  # the distribution of the core
# reference.jsonl.gz: the training reference the monitor compares live traffic with
_COPIED = ("config.yaml", "metrics.json", "run.json", "model_card.md", "reference.jsonl.gz")
_CORE_LIBS = (
    "numpy", "pandas", "pyarrow", "pydantic", "hydra-core", "omegaconf",
    "fastapi", "uvicorn", "httptools", "uvloop", "prometheus-client", "python-multipart",
    "threadpoolctl", "mlflow-skinny", "sqlalchemy", "alembic",
)  # fmt: skip


@dataclass
class Bundle:
    """A loaded, verified bundle, ready to predict."""

    path: Path
    vertical: Vertical
    model: Any
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    config: DictConfig

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])


sha256 = file_digest  # a file's sha256, as the manifest lists it


def _versions(names: list[str]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def licence(name: str) -> str:
    """A distribution's licence as its metadata states it (SPDX expression where given)."""
    meta = metadata(name)
    if meta.get("License-Expression"):
        return str(meta["License-Expression"])
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 60:
        return text
    classifiers = [
        c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    return "; ".join(classifiers) or "not stated in the package metadata"


def _network_copyleft(licences: dict[str, str]) -> list[str]:
    """Pinned libraries under a licence whose terms reach users over a network (AGPL)."""
    return sorted(n for n, text in licences.items() if "AGPL" in text or "Affero" in text)


def _serve_entry(vertical: str) -> str:
    return f'''"""Serve this bundle: `uvicorn serve:app --port 8000`, run from this folder.

Install first, from this folder: `pip install -r requirements.txt` (the suite's wheel is
in wheels/, so only the public libraries come from a package index).

Every answer is logged: to ./predlog/predictions.db, or the folder VERTICALS_LOG_DIR
names, or the database VERTICALS_LOG_URL names (VERTICALS_LOG=off: no log).

Callers need a bearer token once VERTICALS_TOKENS (`predict:<token>,...`) or
VERTICALS_TOKENS_FILE (hashed, `verticals token create`) gives one; the container
(VERTICALS_REQUIRE_TOKENS=1) does not start without one.
"""

import os
from pathlib import Path

from verticals.core.auth import refuse_open_container
from verticals.core.config import ServeConfig
from verticals.core.predlog import settings_from_env
from verticals.core.serving import create_app

refuse_open_container()
app = create_app(  # {vertical} model
    Path(__file__).resolve().parent,
    warm="background",
    options=ServeConfig(tokens_file=os.environ.get("VERTICALS_TOKENS_FILE")),
    prediction_log=settings_from_env(),
)
'''


def _dockerfile(vertical: str, versions: dict[str, str]) -> str:
    # The `pip install` RUN line is exactly what tests/test_bundle_install.py runs in a
    # fresh venv.
    return f"""# Serves this bundle on port 8000. Build here: docker build -t {vertical}-model .
FROM python:{versions["python"].rsplit(".", 1)[0]}-slim
# An unprivileged user (a fixed UID, for runAsNonRoot); it owns only the prediction log's
# folder: the bundle's files stay root's, so a compromised server cannot rewrite its model.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin verticals \\
    && mkdir -p /var/lib/verticals/predlog && chown 10001:10001 /var/lib/verticals/predlog
WORKDIR /bundle
COPY requirements.txt ./
COPY {WHEELS}/ {WHEELS}/
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# The prediction log goes where the user may write (mount a volume there to keep it, or
# set VERTICALS_LOG_URL=postgresql+psycopg://... to log to a database).
ENV VERTICALS_LOG_DIR=/var/lib/verticals/predlog
# It listens on every address: it refuses to start without a token (VERTICALS_TOKENS or
# VERTICALS_TOKENS_FILE), unless VERTICALS_ALLOW_UNAUTHENTICATED=1.
ENV VERTICALS_REQUIRE_TOKENS=1
VOLUME /var/lib/verticals/predlog
USER 10001:10001
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready')"
CMD ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
"""


def _requirements(wheels: list[str], extras: list[str], versions: dict[str, str]) -> str:
    """The suite from its own wheel in this folder, then pins of every library it used."""
    lines = ["# pip install -r requirements.txt, run from this folder (paths are relative)"]
    lines += [f"./{WHEELS}/{name}[{','.join(extras)}]" for name in wheels]
    # A local label (torch's `+cu130`) names a build, not an index release: pin the release.
    lines += [f"{n}=={v.split('+')[0]}" for n, v in versions.items() if n != "python"]
    return "\n".join(lines) + "\n"


def _licence_notice(vertical: str, licences: dict[str, str]) -> str:
    rows = "\n".join(f"| {name} | {text} |" for name, text in sorted(licences.items()))
    text = f"# Licences of what this {vertical} bundle installs\n\n| library | licence |\n"
    text += f"| --- | --- |\n{rows}\n"
    copyleft = _network_copyleft(licences)
    if copyleft:
        text += (
            f"\n**{', '.join(copyleft)}: AGPL-3.0.** Serving this bundle over a network to "
            "people outside your organisation counts as conveying the program under the "
            "AGPL: you must offer those users the complete corresponding source code of the "
            "service (including your changes), under the AGPL, or hold a commercial licence "
            "from the copyright holder. Internal use and the other verticals' bundles, which "
            "do not install it, are not affected.\n"
        )
    return text


def _extras(suite: list[str], vertical: str) -> list[str]:
    """The extras of the suite's wheels that serving `vertical` needs (those they declare):
    the server, its console (`/ui`) and the vertical's libraries."""
    declared = {e for name in suite for e in metadata(name).get_all("Provides-Extra") or []}
    return [e for e in ("serve", "console", vertical) if e in declared]


def io_schema(vertical: Vertical, model: Any) -> dict[str, Any]:
    """JSON schemas of what `/predict` takes and gives (a file vertical takes an upload)."""
    if isinstance(vertical, FileVertical):
        request: dict[str, Any] = {
            "type": "file",
            "multipart_field": "file",
            "file_endings": list(vertical.input_suffixes),
        }
    else:
        request = vertical.request_schema(model).model_json_schema()
    return {"request": request, "response": vertical.response_schema(model).model_json_schema()}


def write_bundle(
    run_dir: Path,
    bundles_dir: Path,
    vertical: Vertical | None = None,
    examples: bool = True,
    name: str | None = None,
    sign_key: str | Path | None = None,
) -> Path:
    """Package `run_dir` as `<bundles_dir>/<vertical>/<name>/` (default: the run's name),
    atomically, replacing a bundle of that name; with `examples`, the run's example inputs
    go in too (servers warm up on them). With `sign_key` (an Ed25519 private key, PEM) the
    manifest is signed before the bundle appears (`signing`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").is_dir():
        raise UserError(f"run={run_dir} has no model/ folder: was training finished?")
    signer = None if sign_key is None else load_private_key(sign_key)  # a bad key: before work
    cfg = OmegaConf.load(run_dir / "config.yaml")
    vertical = vertical or registry.get(str(cfg.vertical))
    model = vertical.load(run_dir / "model")
    final = Path(bundles_dir) / vertical.name / (name or bundle_name(run_dir))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(run_dir / "model", tmp / "model")
        for name in _COPIED:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        if (run_dir / "plots").is_dir():
            shutil.copytree(run_dir / "plots", tmp / "plots")
        (tmp / "schema.json").write_text(json.dumps(io_schema(vertical, model), indent=2) + "\n")
        if examples and (run_dir / EXAMPLES).is_dir():
            shutil.copytree(run_dir / EXAMPLES, tmp / EXAMPLES)
        suite = sorted({registry.distribution(vertical.name), SUITE})  # a plug-in needs both
        wheels = [build_wheel(name, tmp / WHEELS).name for name in suite]
        versions = _versions([*_CORE_LIBS, *vertical.library_versions()])
        licences = {name: licence(name) for name in [*suite, *versions] if name != "python"}
        (tmp / "serve.py").write_text(_serve_entry(vertical.name))
        (tmp / "Dockerfile").write_text(_dockerfile(vertical.name, versions))
        (tmp / "requirements.txt").write_text(
            _requirements(wheels, _extras(suite, vertical.name), versions)
        )
        (tmp / "LICENSES.md").write_text(_licence_notice(vertical.name, licences))
        files = {
            p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "vertical": vertical.name,
            "model_version": final.name,
            "created": datetime.now().isoformat(timespec="seconds"),
            "source_run": str(run_dir.resolve()),
            "versions": {**{name: version(name) for name in suite}, **versions},
            "licences": licences,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
        if signer is not None:
            sign_manifest(tmp, signer)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mark_latest(final)
    return final


def bundle_name(run_dir: Path) -> str:
    """The run's name; a sweep's numbered job gets its sweep's name in front."""
    return f"{run_dir.parent.name}_{run_dir.name}" if run_dir.name.isdigit() else run_dir.name


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing bundle is moved aside first, then removed."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    had_old = final.exists()
    if had_old:
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if had_old:
            os.replace(old, final)  # put the previous bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


def verify(path: Path) -> dict[str, Any]:
    """The manifest of the bundle at `path`, after checking every file's sha256."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"{path} is not a bundle (no {MANIFEST}); create one with `verticals package`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
        manifest["vertical"], manifest["model_version"]  # noqa: B018 - required keys
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"bundle {path}: {MANIFEST} is damaged ({exc}); package the run again"
        ) from None
    found = manifest.get("format", 1)
    if isinstance(found, int) and found > FORMAT:
        raise UserError(
            f"bundle {path} has format {found}, written by a newer version of the suite "
            f"(this one reads format {FORMAT}); upgrade verticals to serve it"
        )
    if found != FORMAT:
        source = manifest.get("source_run", "its run")
        raise UserError(
            f"bundle {path} was written by an older layout of the suite (its serve.py imports "
            f"`shared`, now `verticals.core`); package it again: verticals package "
            f"{manifest['vertical']} run={source}"
        )
    for rel, expected in files.items():
        file = path / rel
        if not file.is_file():
            raise UserError(f"bundle {path} is missing {rel}, which its manifest lists")
        if sha256(file) != expected:
            raise UserError(f"bundle {path}: {rel} does not match its sha256 in {MANIFEST}")
    return manifest


def load_bundle(path: str | Path, trust: Trust | None = None) -> Bundle:
    """Verify and load the bundle at `path`. `trust` (the `serve.*` settings): with
    `require_signature`, its signature is checked too, before the model is loaded."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise UserError(f"bundle={path} does not exist or is not a folder")
    manifest = verify(path)
    enforce(path, trust)
    vertical = registry.get(manifest["vertical"])
    model = vertical.load(path / "model")
    metrics = (
        json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
    )
    config = OmegaConf.load(path / "config.yaml")
    assert isinstance(config, DictConfig)
    return Bundle(path, vertical, model, manifest, metrics, config)
