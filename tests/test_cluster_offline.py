"""A sweep on an embedded Ray (`-m ... cluster=ray_local`) in a network namespace with only
loopback (`unshare -n`), every Python process of it (the CLI, Ray's dashboard and agents, the
job tasks) under a socket guard that records any connection outside loopback: Ray must not
reach out (usage statistics, cloud metadata), and the jobs must run as Ray tasks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = Path(__file__).parent / "netguard"


def _isolated() -> list[str]:
    """`unshare -n` with loopback up, or a reason it cannot run here."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux's unshare (CI runs as root)")
    return [unshare, "-n", sys.executable, str(GUARD / "offline.py")]


def _guarded_env(log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD), env.get("PYTHONPATH")]))
    env["VERTICALS_NETGUARD_LOG"] = str(log)
    return env


def test_the_guard_sees_a_connection_outside_loopback(tmp_path: Path) -> None:
    """The guard works (so the test below can fail): an outside address is recorded."""
    log = tmp_path / "net.log"
    probe = (
        "import socket\n"
        "try:\n    socket.create_connection(('192.0.2.1', 80), 1)\nexcept OSError: pass"
    )
    subprocess.run([sys.executable, "-c", probe], env=_guarded_env(log), check=True, timeout=60)
    assert "192.0.2.1" in log.read_text()


def test_a_sweep_on_ray_stays_on_loopback(tmp_path: Path) -> None:
    log = tmp_path / "net.log"
    verticals = str(Path(sys.executable).parent / "verticals")
    command = [*_isolated(), verticals, "train", "finance", "-m", f"paths.root_dir={tmp_path}",
               "data=synthetic", "debug=fast", "trainer.device=cpu", "cluster=ray_local",
               "cluster.num_cpus=2", "model.num_leaves=8,16"]  # fmt: skip
    done = subprocess.run(command, env=_guarded_env(log), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not log.exists(), f"connections outside loopback:\n{log.read_text()}"
    # the jobs ran as Ray tasks, each recorded as a run with its metrics (MLflow on SQLite)
    assert "execute_job pid=" in output
    runs = sorted((tmp_path / "runs" / "finance").glob("multirun_*/*/metrics.json"))
    assert len(runs) == 2, output[-3000:]
    assert (tmp_path / "runs" / "mlflow" / "mlflow.db").is_file()
    # Ray's session files under the cache folder, its token beside them (not in ~/.ray)
    ray_dir = tmp_path / "cache" / "ray"
    assert list(ray_dir.glob("session_*")), sorted(p.name for p in ray_dir.iterdir())
    assert (ray_dir / "auth_token").stat().st_mode & 0o777 == 0o600
