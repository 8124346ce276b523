"""Where the Hydra config tree lives, and composing it from Python (notebooks, tests, demo).

`conf/` at the top of the repository is installed as the `verticals.conf` resources. Each
vertical's own groups (data/, model/, experiment/, ...) sit in `conf/<vertical>/`, which is
added to Hydra's search path when that vertical runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from verticals.core import registry
from verticals.core.config import check_config, register_core_configs


@cache
def conf_dir() -> Path:
    """`conf/`: inside the installed package (wheel), or beside it (source checkout)."""
    here = Path(__file__).resolve().parent
    for path in (here / "conf", here.parent / "conf"):
        if (path / "train.yaml").is_file():
            return path
    raise RuntimeError(f"the config tree conf/ is missing beside {here}; reinstall verticals")


def vertical_overrides(vertical: str) -> list[str]:
    """The overrides that select `vertical` and put its config groups on the search path."""
    path = str(conf_dir() / vertical).replace("\\", "\\\\").replace("'", "\\'")
    return [f"vertical={vertical}", f"hydra.searchpath=['file://{path}']"]  # quoted: any path


def _find_launcher() -> None:
    """Let Hydra find the suite's launcher (`hydra/launcher=ray_jobs`) from a source
    checkout: an editable install maps `hydra_plugins.verticals_ray_jobs` to
    shared/hydra_plugins/, which Hydra's scan of its namespace does not see (a wheel installs
    it inside the namespace)."""
    import hydra_plugins

    folder = Path(__file__).resolve().parent.parent / "shared" / "hydra_plugins"
    if (folder / "verticals_ray_jobs").is_dir() and str(folder) not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(folder))


def register_configs(vertical: str) -> None:
    """Store the core's and `vertical`'s structured-config schemas in the ConfigStore."""
    _find_launcher()
    register_core_configs()
    registry.get(vertical).register_configs()


def compose(command: str, vertical: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config `verticals <command> <vertical> <overrides>` would run with, its ranges
    checked as the CLI checks them."""
    register_configs(vertical)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(command, overrides=[*vertical_overrides(vertical), *overrides])
    check_config(cfg)
    return cfg
