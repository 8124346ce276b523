"""Bundles: a trained run turned into a self-contained, verifiable, servable directory.

A bundle holds the model, the resolved config, the request/response JSON schema, the
metrics, a model card, a serving entry point, a Dockerfile and `manifest.json` (sha256 of
every file, library versions). It is assembled in a hidden sibling directory and renamed
into place, so a crash never leaves a bundle that loads half; `load_bundle` re-checks
every hash before it trusts the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from verticals.core import registry
from verticals.core.contract import FileVertical, Vertical
from verticals.core.errors import UserError
from verticals.core.runs import mark_latest, write_json

MANIFEST = "manifest.json"
_COPIED = ("config.yaml", "metrics.json", "run.json", "model_card.md")
_CORE_LIBS = (
    "numpy", "pandas", "pyarrow", "pydantic", "hydra-core", "omegaconf",
    "fastapi", "uvicorn", "prometheus-client", "python-multipart",
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions(names: list[str]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _serve_entry(vertical: str) -> str:
    return f'''"""Serve this bundle: `uvicorn serve:app --port 8000`, run from this folder."""

from pathlib import Path

from verticals.core.serving import create_app

app = create_app(Path(__file__).resolve().parent)  # {vertical} model
'''


def _dockerfile(vertical: str, versions: dict[str, str]) -> str:
    return f"""# Serves this bundle on port 8000. Build here: docker build -t {vertical}-model .
FROM python:{versions["python"].rsplit(".", 1)[0]}-slim
WORKDIR /bundle
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
"""


def _requirements(versions: dict[str, str]) -> str:
    """Pins for the serving image: the vertical's distribution and every library it used."""
    # A local label (torch's `+cu130`) names a build, not an index release: pin the release.
    pins = [f"{n}=={v.split('+')[0]}" for n, v in versions.items() if n != "python"]
    return "\n".join(pins) + "\n"


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


def write_bundle(run_dir: Path, bundles_dir: Path, vertical: Vertical | None = None) -> Path:
    """Package `run_dir` as `<bundles_dir>/<vertical>/<run name>/`, atomically."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").is_dir():
        raise UserError(f"run={run_dir} has no model/ folder: was training finished?")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    vertical = vertical or registry.get(str(cfg.vertical))
    model = vertical.load(run_dir / "model")
    final = Path(bundles_dir) / vertical.name / bundle_name(run_dir)
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
        versions = _versions(
            [registry.distribution(vertical.name), *_CORE_LIBS, *vertical.library_versions()]
        )
        (tmp / "serve.py").write_text(_serve_entry(vertical.name))
        (tmp / "Dockerfile").write_text(_dockerfile(vertical.name, versions))
        (tmp / "requirements.txt").write_text(_requirements(versions))
        files = {
            p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format": 1,
            "vertical": vertical.name,
            "model_version": final.name,
            "created": datetime.now().isoformat(timespec="seconds"),
            "source_run": str(run_dir.resolve()),
            "versions": versions,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
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
    for rel, expected in files.items():
        file = path / rel
        if not file.is_file():
            raise UserError(f"bundle {path} is missing {rel}, which its manifest lists")
        if sha256(file) != expected:
            raise UserError(f"bundle {path}: {rel} does not match its sha256 in {MANIFEST}")
    return manifest


def load_bundle(path: str | Path) -> Bundle:
    """Verify and load the bundle at `path`."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise UserError(f"bundle={path} does not exist or is not a folder")
    manifest = verify(path)
    vertical = registry.get(manifest["vertical"])
    model = vertical.load(path / "model")
    metrics = (
        json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
    )
    config = OmegaConf.load(path / "config.yaml")
    assert isinstance(config, DictConfig)
    return Bundle(path, vertical, model, manifest, metrics, config)
