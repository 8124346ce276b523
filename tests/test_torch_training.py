"""The core's torch training loop, and the torch verticals (traffic, medical) on it:
atomic checkpoints, early stopping, the time budget, history.csv, resume past a cut-short
checkpoint, and the same seed giving the same model."""

from __future__ import annotations

import csv
import logging
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from verticals.configs import compose  # noqa: E402
from verticals.core import registry  # noqa: E402
from verticals.core import torch_training as tt  # noqa: E402
from verticals.core.contract import RunContext  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402

LOG = logging.getLogger("verticals.test")


def context(run_dir: Path, seed: int = 0) -> RunContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(run_dir, resolve_device("cpu"), seed, LOG)


def toy_trainer(run_dir: Path, settings: tt.Settings, **kwargs: Any) -> tt.Trainer:
    """A 2 -> 1 linear model with SGD: small enough that its weights can be followed."""
    return tt.Trainer(
        context(run_dir),
        "toy",
        build=lambda: torch.nn.Linear(2, 1),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        settings=settings,
        files=tt.Checkpoints(run_dir / "checkpoints"),
        **kwargs,
    )


def toy_hooks(metrics: list[float], seen: list[dict[str, Any]], batches: int = 2) -> tt.Hooks:
    """Validation answers `metrics` in turn and records the weights it was asked about."""
    x, y = torch.ones(4, 2), torch.zeros(4, 1)

    def validate(module: Any) -> float:
        seen.append({k: v.clone() for k, v in module.state_dict().items()})
        return metrics[len(seen) - 1]

    return tt.Hooks(
        batches=lambda epoch: [0] * batches,
        loss=lambda module, _: ((module(x) - y) ** 2).mean(),
        validate=validate,
    )


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def without_times(run_dir: Path) -> list[dict[str, str]]:
    """history.csv but the wall-clock column: losses, metrics and learning rates."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(run_dir)]


def cut_short(path: Path) -> None:
    """Keep the first half of the file, as an interrupted copy or a full disk would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# -------------------------------------------------------------------- the core loop


def test_save_leaves_no_partial_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    tt.save_atomic({"epoch": 1}, target)
    real_save = torch.save

    def failing_save(obj: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then the save dies
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        tt.save_atomic({"epoch": 2}, target, keep_previous="previous.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left
    assert tt.load_file(target) == {"epoch": 1}  # the old checkpoint, whole


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    settings = tt.Settings(epochs=10, patience=2, mode="min")
    result = toy_trainer(tmp_path, settings).fit(toy_hooks([3.0, 1.0, 2.0, 4.0, 0.5], seen))
    assert result.stopped == "patience"
    assert [int(r["epoch"]) for r in result.history] == [1, 2, 3, 4]  # 2 worse after the best
    assert result.best == 1.0 and result.best_epoch == 2
    for key, value in result.module.state_dict().items():
        assert torch.equal(value, seen[1][key]), key  # epoch 2's weights, not epoch 4's
        assert not torch.equal(value, seen[3][key]), key
    best = tt.load_file(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and torch.equal(best["model"]["weight"], seen[1]["weight"])


def test_budget_stops_training_between_batches(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    hooks = toy_hooks([1.0] * 5, seen, batches=10_000)
    slow = hooks.loss
    hooks.loss = lambda module, batch: (time.sleep(0.002), slow(module, batch))[1]
    settings = tt.Settings(epochs=5, deadline=time.perf_counter() + 0.3)
    result = toy_trainer(tmp_path, settings).fit(hooks)
    assert result.stopped == "budget"
    assert [int(r["epoch"]) for r in result.history] == [1]  # cut inside the first epoch
    assert len(seen) == 1  # and validated before stopping
    state = tt.load_file(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and 0 < state["step"] < 10_000


def test_history_file_has_every_models_rows(tmp_path: Path) -> None:
    toy_trainer(tmp_path, tt.Settings(epochs=2)).fit(toy_hooks([2.0, 1.0], []))
    other = tt.Trainer(
        context(tmp_path),
        "other",
        build=lambda: torch.nn.Linear(2, 1),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        settings=tt.Settings(epochs=1, val_every=1),
        files=tt.Checkpoints(tmp_path / "checkpoints", "other"),
        metric="val_mae",
    )
    other.fit(toy_hooks([5.0], []))
    rows = read_history(tmp_path)
    assert [(r["model"], r["epoch"]) for r in rows] == [("toy", "1"), ("toy", "2"), ("other", "1")]
    assert rows[0]["val_metric"] == "2.0" and rows[2]["val_mae"] == "5.0"
    assert rows[2]["val_metric"] == ""  # a column another model has is blank, not invented
    assert float(rows[1]["seconds"]) >= float(rows[0]["seconds"])
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "other.best.pt", "other.pt", "previous.pt"]


def test_resume_skips_a_cut_short_checkpoint(tmp_path: Path, caplog) -> None:
    first = tmp_path / "first"
    toy_trainer(first, tt.Settings(epochs=3)).fit(toy_hooks([3.0, 2.0, 1.0], []))
    files = tt.Checkpoints(first / "checkpoints")
    cut_short(files.last)
    with caplog.at_level(logging.WARNING):
        resume = tt.find_resume("first", files, LOG)
    assert resume is not None and resume.path == files.previous
    assert "last.pt is cut short or corrupt" in caplog.text
    assert "resuming from previous.pt (epoch 2)" in caplog.text
    result = toy_trainer(tmp_path / "second", tt.Settings(epochs=4), resume=resume).fit(
        toy_hooks([0.5, 0.4], [])
    )
    assert [int(r["epoch"]) for r in result.history] == [1, 2, 3, 4]  # 1-2 from the checkpoint
    files.previous.unlink()
    with pytest.raises(UserError) as err:
        tt.find_resume("first", files, LOG)
    assert "\n" not in str(err.value)
    assert "last.pt is cut short or corrupt" in str(err.value)
    assert "no earlier complete checkpoint" in str(err.value)


def test_a_finished_network_carries_over_to_the_resuming_run(tmp_path: Path) -> None:
    """A run that resumes a finished network (traffic's GRU) still gets its checkpoint and
    history rows, so a run resuming that run finds the network instead of retraining it."""
    toy_trainer(tmp_path / "a", tt.Settings(epochs=2)).fit(toy_hooks([2.0, 1.0], []))
    resume = tt.find_resume("a", tt.Checkpoints(tmp_path / "a" / "checkpoints"), LOG)
    b = toy_trainer(tmp_path / "b", tt.Settings(epochs=2), resume=resume)
    result = b.fit(toy_hooks([], []), finished_ok=True)
    assert result.stopped == "done" and result.best == 1.0 and result.best_epoch == 2
    again = tt.find_resume("b", tt.Checkpoints(tmp_path / "b" / "checkpoints"), LOG)
    assert again is not None and again.path.parent == tmp_path / "b" / "checkpoints"
    assert [int(r["epoch"]) for r in read_history(tmp_path / "b")] == [1, 2]


def test_best_figures_come_with_the_best_weights(tmp_path: Path) -> None:
    """Resuming from previous.pt (last.pt cut short) keeps best.pt's own epoch and value."""
    first = tmp_path / "first"
    toy_trainer(first, tt.Settings(epochs=3)).fit(toy_hooks([3.0, 2.0, 1.0], []))
    files = tt.Checkpoints(first / "checkpoints")
    cut_short(files.last)  # best.pt holds epoch 3; previous.pt stopped at epoch 2
    resume = tt.find_resume("first", files, LOG)
    trainer = toy_trainer(tmp_path / "second", tt.Settings(epochs=3), resume=resume)
    assert (trainer.progress.best, trainer.progress.best_epoch) == (1.0, 3)


def test_cpu_budget_applies_only_without_a_budget_of_your_own(caplog) -> None:
    cpu, cuda = SimpleNamespace(is_cuda=False), SimpleNamespace(is_cuda=True)
    training = compose("train", "traffic", ["training.cpu_minutes=2"]).training
    with caplog.at_level(logging.INFO):
        assert tt.budget_minutes(training, cpu, LOG) == 2.0
    assert "CPU: training capped at 2 minutes" in caplog.text
    assert "training.cpu_minutes=null for the full recipe" in caplog.text
    assert tt.budget_minutes(training, cuda, LOG) is None
    own = compose("train", "traffic", ["training.max_minutes=7"]).training
    assert tt.budget_minutes(own, cpu, LOG) == 7.0
    full = compose("train", "traffic", ["training.cpu_minutes=null"]).training
    assert tt.budget_minutes(full, cpu, LOG) is None


# -------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("vertical", "override", "message"),
    [
        ("traffic", "training.lr=-1", "training.lr=-1.0; expected a number > 0"),
        ("traffic", "data.val_fraction=0.9", "data.val_fraction=0.9; expected < 0.8"),
        ("traffic", "alerts.horizons=[0]", "alerts.horizons=[0]; expected steps ahead"),
        ("medical", "training.val_every=0", "training.val_every=0; expected a whole number >= 1"),
        ("medical", "data.window=[300,-100]", "data.window=[300.0, -100.0]; expected [low, high]"),
        ("medical", "data.orientation=RRS", "data.orientation='RRS'; expected three letters"),
        ("medical", "model.feature_size=30", "model.feature_size=30; expected a multiple of 12"),
    ],
)
def test_out_of_range_settings_fail_at_compose(vertical, override, message, tmp_path) -> None:
    with pytest.raises(UserError) as err:
        compose("train", vertical, [f"paths.root_dir={tmp_path}", override])
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("vertical", "override"),
    [
        ("traffic", "model.name=gwnett"),
        ("traffic", "data.source=csv"),
        ("medical", "data.cache=ram"),
        ("medical", "data.intensity=ct"),
        ("medical", "model.norm=group"),
    ],
)
def test_word_settings_are_enums(vertical: str, override: str, tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose("train", vertical, [f"paths.root_dir={tmp_path}", override])
    assert "Invalid value" in str(err.value.__cause__)  # OmegaConf's: "expected one of [...]"
    cfg = compose("train", vertical, [f"paths.root_dir={tmp_path}"])
    assert cfg.data.source == "synthetic"  # StrEnum members compare equal to their words


# -------------------------------------------------------------------- the verticals

TRAFFIC = ["debug=fast", "training.epochs=2", "training.baseline_epochs=1"]
MEDICAL = ["debug=fast", "training.epochs=2", "data.n_cases=5"]


@pytest.fixture(scope="module")
def traffic_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    root = tmp_path_factory.mktemp("traffic-data")
    cfg = compose("train", "traffic", [f"paths.root_dir={root}", "trainer.device=cpu", *TRAFFIC])
    return cfg, registry.get("traffic").load_data(cfg)


@pytest.fixture(scope="module")
def medical_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    pytest.importorskip("monai")
    root = tmp_path_factory.mktemp("medical-data")
    cfg = compose("train", "medical", [f"paths.root_dir={root}", "trainer.device=cpu", *MEDICAL])
    return cfg, registry.get("medical").load_data(cfg)


def fit_run(vertical: str, data: tuple[Any, Any], run_dir: Path, **training: Any) -> Any:
    cfg, splits = data
    cfg = cfg.copy()
    for key, value in training.items():
        cfg.training[key] = value
    return registry.get(vertical).fit(cfg, splits, context(run_dir, seed=int(cfg.seed)))


def weights(model: Any) -> dict[str, Any]:
    """Every tensor of a fitted traffic or medical model, by network and name."""
    if hasattr(model, "states"):
        return {(n, k): v for n, state in model.states.items() for k, v in state.items()}
    return {("net", k): v for k, v in model.network.state_dict().items()}


@pytest.fixture(scope="module")
def traffic_first(traffic_data, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    run = tmp_path_factory.mktemp("traffic-runs") / "first"
    return run, fit_run("traffic", traffic_data, run)


@pytest.fixture(scope="module")
def medical_first(medical_data, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    run = tmp_path_factory.mktemp("medical-runs") / "first"
    return run, fit_run("medical", medical_data, run)


@pytest.mark.parametrize("vertical", ["traffic", "medical"])
def test_same_seed_same_model(vertical: str, request, tmp_path: Path) -> None:
    """Weights equal to the bit, so every metric computed from them is equal too; two epochs,
    because the second is where medical's loader threads once drew patches differently."""
    data = request.getfixturevalue(f"{vertical}_data")
    first_dir, first = request.getfixturevalue(f"{vertical}_first")
    again = fit_run(vertical, data, tmp_path / "again")
    a, b = weights(first), weights(again)
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    rows_a, rows_b = without_times(first_dir), without_times(tmp_path / "again")
    assert rows_a == rows_b and len(rows_a) >= 2  # losses and validation metrics, per epoch


@pytest.mark.parametrize(
    ("vertical", "last", "previous"),
    [("traffic", "gwnet.pt", "gwnet.previous.pt"), ("medical", "last.pt", "previous.pt")],
)
def test_resume_past_a_cut_short_checkpoint(
    vertical: str, last: str, previous: str, request, tmp_path: Path, caplog
) -> None:
    data = request.getfixturevalue(f"{vertical}_data")
    first_dir, _ = request.getfixturevalue(f"{vertical}_first")
    first = tmp_path / "first"
    shutil.copytree(first_dir, first)
    cut_short(first / "checkpoints" / last)
    with caplog.at_level(logging.WARNING):
        fit_run(vertical, data, tmp_path / "second", resume=str(first), epochs=3)
    assert f"{last} is cut short or corrupt" in caplog.text
    assert f"resuming from {previous} (epoch 1)" in caplog.text
    rows = read_history(tmp_path / "second")
    model = rows[0]["model"]  # gwnet or unet: the main network
    assert [int(r["epoch"]) for r in rows if r["model"] == model] == [1, 2, 3]
    (first / "checkpoints" / previous).unlink()
    with pytest.raises(UserError, match=rf"{last} is cut short .* no earlier complete") as err:
        fit_run(vertical, data, tmp_path / "third", resume=str(first), epochs=3)
    assert "\n" not in str(err.value)
