"""The vertical contract: every installed vertical is one of its two kinds, and what each
binds to the contract's methods accepts what the core passes."""

from __future__ import annotations

import inspect
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from verticals.core import registry
from verticals.core.contract import FileVertical, RecordVertical, Vertical
from verticals.core.errors import UserError

from .toy_vertical import ToyVertical

# How many arguments the core passes to each method (a vertical binds plain functions).
COMMON = {"register_configs": [0], "resolve_config": [1], "load_data": [1], "fit": [3],
          "evaluate": [2, 3], "save": [2], "load": [1], "response_schema": [1],
          "describe": [3], "library_versions": [0]}  # fmt: skip
RECORD = {"request_schema": [1], "predict": [2], "predict_table": [2], "example_inputs": [2]}
FILE = {"predict_path": [2], "example_files": [3], "find_inputs": [1], "matches": [1]}


@pytest.mark.parametrize("name", registry.available())
def test_each_vertical_takes_what_the_core_passes(name: str) -> None:
    vertical = registry.get(name)
    kind = RECORD if isinstance(vertical, RecordVertical) else FILE
    assert isinstance(vertical, RecordVertical) != isinstance(vertical, FileVertical)
    for method, counts in {**COMMON, **kind}.items():
        signature = inspect.signature(getattr(vertical, method))
        for n in counts:
            signature.bind(*[None] * n)  # TypeError names the method's mismatch
    assert vertical.name == name and vertical.title and vertical.headline_metric
    if isinstance(vertical, FileVertical):
        assert vertical.input_suffixes and not hasattr(vertical, "predict")
    else:
        assert not hasattr(vertical, "predict_path")


def test_a_vertical_of_neither_kind_is_refused() -> None:
    class Bare(Vertical):
        name = "bare"
        load_data = fit = evaluate = save = load = response_schema = staticmethod(print)

    with pytest.raises(TypeError, match="RecordVertical or FileVertical"):
        registry.register(Bare())
    registry.register(ToyVertical())  # the toy, a RecordVertical, is fine


def test_a_missing_library_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ghost_vertical.py").write_text("import no_such_library_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("ghost", "ghost_vertical:GhostVertical", registry.GROUP)
    with pytest.raises(UserError, match="ghost vertical needs 'no_such_library_here'"):
        registry._import(ep)
    broken = EntryPoint("ghost", "no_such_vertical_module:GhostVertical", registry.GROUP)
    with pytest.raises(ModuleNotFoundError):  # the vertical's own module: a broken install
        registry._import(broken)
    sys.modules.pop("ghost_vertical", None)


def test_contract_imports_no_heavy_library() -> None:
    """`verticals list` imports the contract: no pandas, pydantic or OmegaConf on the way."""
    code = (
        "import sys, verticals.core.registry\n"
        "print(*[m for m in ('pandas', 'numpy', 'pydantic', 'omegaconf') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
