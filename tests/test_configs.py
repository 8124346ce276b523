"""Configs refuse bad values while composing, before any work: a word outside an enum fails
in Hydra's own message, a number out of range names its key; every option composes; option
files repeat no schema default; enum settings reach the libraries as plain words."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from verticals.configs import compose, conf_dir
from verticals.core.config import ConfigValueError, check_config
from verticals.core.errors import UserError

VERTICALS = ("finance", "retail", "manufacturing", "medical", "traffic")
MINE = ("finance", "retail", "manufacturing")  # their option files list only what differs
GLOBAL_GROUPS = ("experiment", "debug", "hparams_search")  # `@package _global_` options
IDENTITY = ("source", "name")  # what an option *is* (data=german: source german), kept


def _options(vertical: str) -> list[tuple[str, str]]:
    root = conf_dir() / vertical
    return sorted((path.parent.name, path.stem) for path in root.glob("*/*.yaml"))


@pytest.mark.parametrize(
    ("vertical", "override", "choices"),
    [
        ("finance", "trainer.device=cuad", "[auto, cpu, cuda]"),
        ("finance", "trainer.precision=fp8", "[auto, fp32, bf16, fp16]"),
        ("finance", "model.class_weight=balancd", "[none, balanced]"),
        ("finance", "model.early_stopping_metric=logloss", "[binary_logloss, auc]"),
        ("finance", "data.source=csv", "[german, synthetic, table]"),
        ("retail", "model.name=alz", "[als, bpr, lmf]"),
        ("retail", "model.weighting=bm52", "[none, bm25, tfidf]"),
        ("retail", "data.split=random", "[user_fraction, leave_last, time]"),
        ("manufacturing", "inspection.runtime=tensorrt", "[onnxruntime, torch]"),
        ("manufacturing", "model.scale=xl", "[n, s, m, l, x]"),
        ("manufacturing", "data.source=coco", "[synthetic, yolo, voc]"),
    ],
)
def test_enum_typo_fails_while_composing(vertical: str, override: str, choices: str) -> None:
    key, word = override.split("=")
    with pytest.raises(ConfigCompositionException) as caught:
        compose("train", vertical, [override])
    cause = str(caught.value.__cause__)
    assert f"Invalid value '{word}', expected one of {choices}" in cause, cause
    assert f"full_key: {key}" in cause


def test_serve_log_level_is_an_enum() -> None:
    with pytest.raises(ConfigCompositionException) as caught:
        compose("serve", "finance", ["serve.log_level=loud"])
    assert "expected one of [critical, error, warning, info, debug, trace]" in str(
        caught.value.__cause__
    )
    assert compose("serve", "finance", ["serve.log_level=debug"]).serve.log_level == "debug"


def test_enum_settings_hold_members_equal_to_their_words() -> None:
    cfg = compose("train", "retail", ["model=bpr", "trainer=cpu"])
    assert cfg.model.name == "bpr" and str(cfg.model.name) == "bpr"
    assert cfg.trainer.device == "cpu" and type(cfg.trainer.device).__name__ == "Device"
    # the run's config.yaml holds the words, so a saved run composes back the same
    saved = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    assert saved.model.name == "bpr" and type(saved.model.name) is str


@pytest.mark.parametrize(
    ("vertical", "override", "said"),  # said: what follows `<key>=` in the message
    [
        ("finance", "model.learning_rate=-1", "-1.0; expected a number > 0"),
        ("finance", "model.num_leaves=1", "1; expected a whole number >= 2"),
        ("finance", "model.feature_fraction=0", "0.0; expected a number > 0 and <= 1"),
        ("finance", "data.test_size=1", "1.0; expected a number > 0 and < 1"),
        ("finance", "scorecard.pdo=0", "0.0; expected a number > 0"),
        ("finance", "+model.monotone.age=2", "2; expected -1, 0 or 1"),
        ("finance", "scorecard.grades=[[A]]", "[['A']]; expected [grade, lowest score] pairs"),
        ("retail", "model.factors=0", "0; expected a whole number >= 1"),
        ("retail", "model.k=5000", "5000; expected a whole number >= 1 and <= 1000"),
        ("retail", "data.test_fraction=1.5", "1.5; expected a number > 0 and < 1"),
        ("manufacturing", "training.epochs=0", "0; expected a whole number >= 1"),
        ("manufacturing", "training.cpu_minutes=0", "0.0; expected a number > 0"),
        ("manufacturing", "training.cache=maybe", "'maybe'; expected false, ram or disk"),
        ("manufacturing", "inspection.conf=1.5", "1.5; expected a number >= 0 and <= 1"),
        ("manufacturing", "+inspection.thresholds.crack=2", "2.0; expected a number >= 0"),
        ("manufacturing", "data.n_train=0", "0; expected a whole number >= 1"),
    ],
)
def test_out_of_range_number_fails_naming_the_key(vertical: str, override: str, said: str) -> None:
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigValueError) as caught:
        compose("train", vertical, [override])
    assert str(caught.value).startswith(f"{key}={said}"), str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UserError)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("serve.port=70000", "serve.port=70000; expected a whole number >= 0 and <= 65535"),
        ("serve.workers=0", "serve.workers=0; expected a whole number >= 1"),
    ],
)
def test_out_of_range_serve_setting_fails_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigValueError, match=f"^{re.escape(message)}$"):
        compose("serve", "finance", [override])


@dataclass
class _Counted:
    """A schema whose own check raises a plain ValueError (no `check_range`)."""

    n: int = 1
    parts: list[int] = field(default_factory=lambda: [1])

    def __post_init__(self) -> None:
        if self.n < 0 or not isinstance(self.parts, list):
            raise ValueError(f"n={self.n} must not be negative")


def test_check_config_runs_nested_schemas_and_names_their_group() -> None:
    cfg = OmegaConf.create({"outer": {"group": OmegaConf.structured(_Counted)}, "seed": 1})
    check_config(cfg)  # valid: nothing raised, lists reach __post_init__ as lists
    cfg.outer.group.n = -1
    with pytest.raises(UserError, match="^outer.group: n=-1 must not be negative$"):
        check_config(cfg)
    cfg.outer.group.n = "???"  # still missing: left to the code that needs it
    check_config(cfg)


def test_edges_of_a_range_are_allowed() -> None:
    cfg = compose(
        "train",
        "manufacturing",
        ["inspection.conf=0", "inspection.iou=1", "training.batch=-1", "training.cpu_minutes=null"],
    )
    assert cfg.inspection.conf == 0 and cfg.training.batch == -1
    assert compose("train", "finance", ["model.feature_fraction=1"]).model.feature_fraction == 1


@pytest.mark.parametrize(
    ("vertical", "group", "option"),
    [(v, g, o) for v in VERTICALS for g, o in _options(v)]
    + [("finance", "trainer", o) for o in ("auto", "cpu", "gpu")],
)
def test_every_option_composes(vertical: str, group: str, option: str) -> None:
    # thresholds and rules: the monitor's and the retrain's only
    command = group if group in ("monitor", "retrain") else "train"
    cfg = compose(command, vertical, [f"{group}={option}"])
    assert cfg.vertical == vertical
    nodes = {"monitor": ("paths", "log"), "retrain": ("data", "model", "trainer", "paths", "log")}
    nodes = nodes.get(command, ("data", "model", "trainer", "paths"))
    for node in nodes:  # every group node keeps its schema
        assert is_dataclass(OmegaConf.get_type(cfg[node])), (node, OmegaConf.get_type(cfg[node]))
    if group not in GLOBAL_GROUPS:
        assert is_dataclass(OmegaConf.get_type(cfg[group])), f"{group}/{option} has no schema"


def test_the_serve_option_composes() -> None:
    cfg = compose("serve", "finance")
    assert (cfg.serve.host, cfg.serve.port, cfg.serve.workers) == ("127.0.0.1", 8000, 1)
    assert cfg.paths.runs_dir == "./runs"  # the interpolation now lives in PathsConfig


def _schema_of(group: str, option_file: Path) -> object:
    defaults = yaml.safe_load(option_file.read_text()).get("defaults", [])
    names = [d for d in defaults if isinstance(d, str) and d != "_self_"]
    assert len(names) == 1, f"{option_file} does not extend one schema: {defaults}"
    return ConfigStore.instance().load(f"{group}/{names[0]}.yaml").node


@pytest.mark.parametrize(
    "option_file",
    [p for v in MINE for p in sorted((conf_dir() / v).glob("*/*.yaml"))
     if p.parent.name not in GLOBAL_GROUPS]
    + [p for g in ("trainer", "paths", "serve") for p in sorted((conf_dir() / g).glob("*.yaml"))],
    ids=lambda p: str(p.relative_to(conf_dir())),
)  # fmt: skip
def test_option_files_repeat_no_schema_default(option_file: Path) -> None:
    """A default lives in its schema: an option lists only what makes it that option."""
    vertical = option_file.parent.parent.name
    compose("train", vertical if vertical in MINE else "finance")  # registers the schemas
    schema = _schema_of(option_file.parent.name, option_file)
    option = yaml.safe_load(option_file.read_text())
    repeated = [
        key
        for key, value in option.items()
        if key != "defaults" and key not in IDENTITY and key in schema and schema[key] == value
    ]
    assert not repeated, f"{option_file.name} repeats the schema's defaults for {repeated}"


def test_cli_prints_one_line_and_exits_2_before_any_work(tmp_path: Path) -> None:
    for override, message in (
        ("model.learning_rate=-1", "error: model.learning_rate=-1.0; expected a number > 0"),
        ("model.class_weight=balancd", "Invalid value 'balancd', expected one of"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "verticals", "train", "finance", override,
             f"paths.root_dir={tmp_path}"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
        assert message in lines[0], proc.stderr
        assert not list(tmp_path.rglob("train.log")), "training started"


def test_enum_settings_reach_libraries_as_plain_words(tmp_path: Path) -> None:
    """LightGBM, implicit's saved parameters and ultralytics' args.yaml get `str`, not enum
    members (yaml.safe_dump refuses those)."""
    import numpy as np

    from verticals.core.device import resolve_device
    from verticals.finance.data import FeatureSchema
    from verticals.finance.model import lightgbm_params
    from verticals.manufacturing.training import train_args

    finance = compose("train", "finance", ["model.early_stopping_metric=auc"])
    params = lightgbm_params(finance.model, FeatureSchema(["x"]), np.array([0, 1]), 1)
    assert params["metric"] == ["auc", "binary_logloss"]
    assert all(type(m) is str for m in params["metric"])
    assert params["deterministic"] is True and params["force_col_wise"] is True

    retail = compose("train", "retail", ["model=bpr"])
    saved = OmegaConf.to_container(retail.model, resolve=True, enum_to_str=True)
    assert json.loads(json.dumps(saved))["name"] == "bpr" and type(saved["name"]) is str

    cfg = compose(
        "train", "manufacturing", ["training.optimizer=AdamW", f"paths.root_dir={tmp_path}"]
    )
    splits = SimpleNamespace(train=SimpleNamespace(yaml=tmp_path / "data.yaml"))
    ctx = SimpleNamespace(device=resolve_device("cpu"), seed=0, run_dir=tmp_path, log=_Log())
    args = train_args(cfg, splits, ctx)  # type: ignore[arg-type]
    assert args["optimizer"] == "AdamW" and type(args["optimizer"]) is str
    yaml.safe_dump(args)  # what ultralytics writes as args.yaml


def test_cpu_cap_is_logged_and_only_on_cpu(tmp_path: Path) -> None:
    from verticals.core.device import Device
    from verticals.manufacturing.training import train_args

    cfg = compose("train", "manufacturing", [f"paths.root_dir={tmp_path}"])
    splits = SimpleNamespace(train=SimpleNamespace(yaml=tmp_path / "data.yaml"))
    log = _Log()
    cpu = SimpleNamespace(device=Device("cpu", "cpu", "fp32"), seed=0, run_dir=tmp_path, log=log)
    args = train_args(cfg, splits, cpu)  # type: ignore[arg-type]
    assert args["time"] == pytest.approx(3 / 60) and args["epochs"] == 30
    assert "cpu_minutes" not in args  # the suite's setting, not an ultralytics argument
    assert any("CPU: training capped at 3 minutes or 30 epochs" in m for m in log.messages)
    gpu = SimpleNamespace(
        device=Device("cuda", "GPU", "bf16"), seed=0, run_dir=tmp_path, log=_Log()
    )
    assert "time" not in train_args(cfg, splits, gpu)  # type: ignore[arg-type]
    full = compose("train", "manufacturing", ["training.cpu_minutes=null"])
    assert "time" not in train_args(full, splits, cpu)  # type: ignore[arg-type]


def test_cpu_cap_never_plans_more_epochs_than_configured() -> None:
    """ultralytics' `time` re-plans the epochs to fill the time; the cap only shortens."""
    from verticals.manufacturing.training import epochs_at_most

    rebuilt = []
    trainer = SimpleNamespace(epochs=90, args=SimpleNamespace(epochs=90), epoch=2)
    trainer._setup_scheduler = lambda: rebuilt.append(trainer.epochs)
    trainer.scheduler = SimpleNamespace(last_epoch=0)
    epochs_at_most(30)(trainer)
    assert (trainer.epochs, trainer.args.epochs, rebuilt, trainer.scheduler.last_epoch) == (
        30, 30, [30], 2
    )  # fmt: skip
    trainer.epochs = trainer.args.epochs = 12  # a slow machine: fewer epochs fit, kept
    epochs_at_most(30)(trainer)
    assert trainer.epochs == 12 and rebuilt == [30]


class _Log:
    """Collects what `ctx.log` is told."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.messages.append(message % args)

    warning = info
