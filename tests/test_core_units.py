"""The core on its own: devices, run directories, tables, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verticals.core import device as device_mod
from verticals.core.errors import UserError
from verticals.core.runs import latest, mark_latest, new_run_dir, resolve_run, write_json
from verticals.core.seeding import seed_everything
from verticals.core.tables import TableWriter, iter_batches, read_table


def test_auto_device_is_cpu_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "_cuda_name", lambda: None)
    dev = device_mod.resolve_device("auto")
    assert (dev.kind, dev.precision) == ("cpu", "fp32")


def test_auto_device_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "_cuda_name", lambda: "Fake GPU")
    monkeypatch.setattr(device_mod, "_bf16_supported", lambda: True)
    dev = device_mod.resolve_device("auto")
    assert dev.is_cuda and dev.name == "Fake GPU" and dev.precision == "bf16"
    assert device_mod.resolve_device("cpu").kind == "cpu"


def test_cuda_requested_without_gpu_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "_cuda_name", lambda: None)
    with pytest.raises(UserError, match="trainer.device=cuda"):
        device_mod.resolve_device("cuda")
    with pytest.raises(UserError, match="not one of"):
        device_mod.resolve_device("tpu")
    with pytest.raises(UserError, match="needs a CUDA device"):
        device_mod.resolve_device("cpu", "fp16")
    assert device_mod.resolve_device("cpu", "bf16").precision == "bf16"  # CPU autocast
    assert device_mod.resolve_device("cpu").precision == "fp32"


def test_seeding_repeats_numpy() -> None:
    seed_everything(7)
    a = np.random.rand(3)
    seed_everything(7)
    assert np.array_equal(a, np.random.rand(3))


def test_run_dirs_and_latest_pointer(tmp_path) -> None:
    first = new_run_dir(tmp_path, "toy")
    second = new_run_dir(tmp_path, "toy")
    assert first != second and first.parent == second.parent == tmp_path / "toy"
    with pytest.raises(UserError, match="no run found"):
        latest(tmp_path / "toy")
    (second / "config.yaml").write_text("vertical: toy\n")
    mark_latest(second)
    assert latest(tmp_path / "toy") == second.resolve()
    assert resolve_run(None, tmp_path, "toy") == second.resolve()
    with pytest.raises(UserError, match="not a run directory"):
        resolve_run(str(first), tmp_path, "toy")


def test_metrics_json_is_strict(tmp_path) -> None:
    write_json(tmp_path / "m.json", {"auc": np.float64(0.5), "bad": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": 0.5, "bad": None}


def test_read_table_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(UserError, match=r"missing\.csv does not exist"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="no rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(UserError, match="expected .csv or .parquet"):
        read_table(tmp_path / "data.xlsx")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_table_writer_round_trip_in_batches(tmp_path, suffix: str) -> None:
    frame = pd.DataFrame({"a": range(10), "nested": [[{"k": i}] for i in range(10)]})
    writer = TableWriter(tmp_path / f"out.{suffix}")
    for start in range(0, 10, 4):
        writer.write(frame.iloc[start : start + 4])
    assert not (tmp_path / f"out.{suffix}").exists()  # appears only when complete
    writer.close()
    back = pd.concat(iter_batches(tmp_path / f"out.{suffix}", 3))
    assert back["a"].tolist() == list(range(10))
    assert json.loads(back["nested"].iloc[3]) == [{"k": 3}]


def test_whole_groups_keeps_a_group_in_one_batch() -> None:
    from verticals.core.tables import whole_groups

    frame = pd.DataFrame({"w": [1, 1, 1, 2, 2, 3, 3, 3, 3, 4], "v": range(10)})
    batches = [frame.iloc[i : i + 3] for i in range(0, 10, 3)]
    out = list(whole_groups(iter(batches), "w", Path("f.csv")))
    assert [b["w"].tolist() for b in out] == [[1, 1, 1, 2, 2], [3, 3, 3, 3], [4]]
    assert pd.concat(out)["v"].tolist() == list(range(10))
    apart = pd.DataFrame({"w": [1, 1, 2, 2, 1], "v": range(5)})
    with pytest.raises(UserError, match="rows of w=1 are not next to each other"):
        list(whole_groups(iter([apart.iloc[:2], apart.iloc[2:]]), "w", Path("f.csv")))


def test_a_checkout_maps_its_own_core_when_no_install_does(tmp_path) -> None:
    """From a checkout's root with a regular (non-editable) install, Python takes
    `verticals` from the checkout, whose folder has no core/: it maps ../shared itself."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        "import verticals.core.errors as e; print(e.__file__)"
    )
    out = subprocess.run(  # -S: no site-packages, so no install's finder maps verticals.core
        [sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(root / "shared" / "errors.py")
