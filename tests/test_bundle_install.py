"""A finance bundle installs and serves on a machine that has only the bundle.

The bundle is copied out of the project, its Dockerfile's RUN lines are run in a fresh
virtual environment (no checkout on the path, nothing from this one), and the Dockerfile's
CMD serves it with uvicorn. Its predictions must equal the in-process ones.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verticals.core.bundle import write_bundle

from .servers import free_port, http, wait_ready


def _dockerfile(path: Path) -> tuple[list[str], list[str]]:
    """The shell commands of the RUN lines and the CMD's argument list."""
    runs, cmd = [], []
    for line in path.read_text().splitlines():
        if line.startswith("RUN "):
            runs.append(line[4:])
        elif line.startswith("CMD "):
            cmd = json.loads(line[4:])
    return runs, cmd


@pytest.mark.slow
def test_bundle_installs_in_a_fresh_venv_and_serves(finance_run, tmp_path: Path) -> None:
    bundle = write_bundle(finance_run.run_dir, tmp_path / "bundles")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["licences"]["lightgbm"] == "MIT"
    wheels = sorted((bundle / "wheels").glob("verticals-*.whl"))
    assert len(wheels) == 1 and "wheels/" + wheels[0].name in manifest["files"]

    alone = tmp_path / "machine" / "bundle"  # a folder with nothing of the project beside it
    shutil.copytree(bundle, alone)
    venv = tmp_path / "machine" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv))

    runs, cmd = _dockerfile(alone / "Dockerfile")
    assert runs[0].startswith("useradd --uid 10001 ")  # the image's unprivileged user
    runs = [run for run in runs if run.startswith("pip ")]  # the rest needs root
    assert runs == ["pip install --no-cache-dir -r requirements.txt"]
    started = time.perf_counter()
    for run in runs:
        subprocess.run(["bash", "-c", run], cwd=alone, env=env, check=True, timeout=900)
    install_s = time.perf_counter() - started
    show = "import verticals.core; print(verticals.core.__file__)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", show],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where
    no_shared = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import shared"], cwd=tmp_path, env=env
    )
    assert no_shared.returncode != 0

    port = free_port()
    assert cmd[0] == "uvicorn" and "--port" in cmd
    argv = [str(venv / "bin" / cmd[0]), *cmd[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"  # the image listens on all; a test on loopback
    argv[argv.index("--port") + 1] = str(port)
    server = subprocess.Popen(argv, cwd=alone, env=env, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server)
        inputs = finance_run.vertical.example_inputs(finance_run.splits, 25)
        records = json.loads(inputs.to_json(orient="records"))
        status, body = http(f"{base}/predict", json.dumps(records).encode())
        assert status == 200, body[:500]
        served = json.loads(body)["predictions"]
        page_status, page = http(f"{base}/ui/")  # the image serves its console too
        assert page_status == 200 and b"<html" in page.lower(), page[:300]
    finally:
        server.terminate()
        server.wait(timeout=30)
    local = finance_run.vertical.predict(finance_run.model, inputs)
    assert [round(r["pd"], 12) for r in served] == [round(float(p), 12) for p in local["pd"]]
    assert [r["grade"] for r in served] == list(local["grade"])
    size_mb = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()) / 1e6
    print(f"\nbundle install: {install_s:.0f} s, venv {size_mb:.0f} MB: {shlex.join(runs)}")
