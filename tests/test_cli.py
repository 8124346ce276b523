"""The `verticals` command as a user types it (subprocesses, in a scratch directory; commands
typed one after another share one process, `servers.cli_session`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from .servers import cli_session

FAST = ["debug=fast", "trainer.device=cpu"]


def cli(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "verticals", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"verticals {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory in which `verticals train finance` has run once."""
    root = tmp_path_factory.mktemp("cli")
    cli(root, "train", "finance", *FAST, "model.num_leaves=6")
    return root


def test_help_and_list() -> None:
    proc = cli(Path.cwd(), "--help")
    assert "usage: verticals <command> <vertical>" in proc.stdout
    assert "finance" in cli(Path.cwd(), "list").stdout.split()


def test_help_and_list_import_no_vertical_library() -> None:
    """`--help` and `list` answer at once: a vertical's libraries load only when it runs."""
    heavy = ("pandas", "numpy", "torch", "lightgbm", "sklearn", "implicit", "monai", "ultralytics")
    code = (
        "import sys\n"
        "from verticals.cli import main\n"
        "main(['--help'])\n"
        "main(['list'])\n"
        f"print('loaded:', *[m for m in {heavy!r} if m in sys.modules])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.splitlines()[-1] == "loaded:", proc.stdout
    assert {"finance", "medical", "retail", "manufacturing", "traffic"} <= set(proc.stdout.split())


def test_train_writes_a_run_with_the_override(workdir: Path) -> None:
    latest = (workdir / "runs" / "finance" / "LATEST").read_text().strip()
    run = workdir / "runs" / "finance" / latest
    assert "num_leaves: 6" in (run / "config.yaml").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.6
    assert (run / "train.log").read_text().count("LightGBM ran on cpu") == 1


def session(cwd: Path, *commands: list[str]) -> list[str]:
    """Commands typed one after another (one process: `servers.cli_session`); their
    outputs, each command having succeeded."""
    done = cli_session(cwd, *commands, timeout=600)
    for proc in done:
        assert proc.returncode == 0, f"{proc.args} failed:\n{proc.stderr[-3000:]}"
    assert len(done) == len(commands)
    return [proc.stdout for proc in done]


def test_evaluate_package_predict_without_paths(workdir: Path) -> None:
    from verticals.finance.german import load_shipped

    load_shipped().drop(columns="default").head(50).to_csv(workdir / "apps.csv", index=False)
    evaluated, out, _ = session(
        workdir, ["evaluate", "finance"], ["package", "finance"],
        ["predict", "finance", "input=apps.csv", "output=scored.parquet"],
    )  # fmt: skip
    assert "roc_auc=" in evaluated
    bundle = Path(out.split("bundle:")[1].splitlines()[0].strip())
    assert "registered verticals-finance version 1 and champion" in out
    assert (workdir / bundle / "manifest.json").is_file()
    scored = pd.read_parquet(workdir / "scored.parquet")
    assert len(scored) == 50 and scored["pd"].between(0, 1).all()


def test_serve_answers_http(workdir: Path) -> None:
    cli(workdir, "package", "finance")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "verticals", "serve", "finance", f"serve.port={port}"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                    break
            except OSError:
                time.sleep(0.25)
        else:
            raise AssertionError("server did not come up")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            data=b'{"duration_in_month": 24}',
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert 0 < json.loads(r.read())["predictions"][0]["pd"] < 1
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_multirun_sweep(tmp_path: Path) -> None:
    cli(tmp_path, "train", "finance", "-m", "model.num_leaves=4,15", *FAST)
    sweeps = list((tmp_path / "runs" / "finance").glob("multirun_*"))
    assert len(sweeps) == 1
    configs = sorted((sweeps[0] / str(i) / "config.yaml").read_text() for i in (0, 1))
    assert "num_leaves: 15" in configs[0] and "num_leaves: 4" in configs[1]


def test_cfg_job_prints_config_without_training(tmp_path: Path) -> None:
    out = cli(tmp_path, "train", "finance", "--cfg", "job", "data=synthetic").stdout
    assert "source: synthetic" in out and "num_leaves: 4" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "finance", "model.num_leavs=3"], "Key 'num_leavs' not in 'LightGBMConfig'"),
        (["train", "finance", "model.num_leaves=many"], "could not be converted to Integer"),
        (["train", "finance", "data=table", "data.path=nope.csv"], "nope.csv does not exist"),
        (["train", "finance", "data=table"], "data.path"),
        (["train", "banking"], "unknown vertical 'banking'"),
        (["predict", "finance", "input=.", "output=b.csv"], "no bundle found"),
        (["fly", "finance"], "unknown command 'fly'"),
        (["train", "finance", "seed=abc"], "seed='abc'; expected a whole number"),
        (["predict", "finance", "input=a.csv"], "Missing mandatory value: output"),
        (["train", "finance", "scorecard.pdo=0"], "scorecard.pdo=0.0; expected a number > 0"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """`verticals.cli.main`, the console script's own function, in this process: the
    checks happen before any heavy import, so a new interpreter per case would only add
    its start-up (`test_cli_prints_one_line_and_exits_2_before_any_work` runs one)."""
    from verticals.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(args)
    stderr = capfd.readouterr().err
    assert exited.value.code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], stderr
    assert "Traceback" not in stderr and "Error executing job" not in stderr


def test_medical_train_package_predict_a_folder(tmp_path: Path) -> None:
    """A folder of volumes in, a folder of masks and a volumes table out."""
    pytest.importorskip("monai")
    session(tmp_path, ["train", "medical", *FAST], ["package", "medical"])
    scans = tmp_path / "scans"
    scans.mkdir()
    for image in sorted((tmp_path / "cache" / "medical").glob("phantoms-*/imagesTr/*.nii.gz"))[:2]:
        (scans / image.name).write_bytes(image.read_bytes())
    proc, bad = cli_session(
        tmp_path, ["predict", "medical", "input=scans", "output=masks"],
        ["predict", "medical", "input=nowhere", "output=m2"],
    )  # fmt: skip
    assert proc.returncode == 0 and "2 inputs" in proc.stdout, proc.stderr[-3000:]
    masks = sorted(p.name for p in (tmp_path / "masks").glob("*.nii.gz"))
    assert masks == sorted(p.name for p in scans.iterdir())
    table = pd.read_csv(tmp_path / "masks" / "predictions.csv")
    assert {"input", "output", "volumes_ml_organ", "error"} <= set(table.columns)
    assert bad.returncode == 2 and "input nowhere does not exist" in bad.stderr


def test_retail_optuna_search_optimises_ndcg(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    pytest.importorskip("implicit")
    cli(
        tmp_path,
        "train",
        "retail",
        "debug=fast",
        "trainer.device=cpu",
        "hparams_search=ndcg_optuna",
        "hydra.sweeper.n_trials=3",
    )
    [result] = (tmp_path / "runs" / "retail").glob("multirun_*/optimization_results.yaml")
    text = result.read_text()
    assert "best_params" in text and "model.factors" in text and "best_value" in text
    # each trial is a child run of the sweep's parent, with its objective
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("retail").experiment_id])
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 3 and len(runs) == 4
    assert all(r.data.metrics["objective"] == r.data.metrics["ndcg_at_10"] for r in trials)
    bad = cli(tmp_path, "train", "retail", "debug=fast", "+optimized_metric=auc", check=False)
    assert bad.returncode == 2 and "optimized_metric='auc' is not one of" in bad.stderr
