"""`verticals <command> <vertical> [hydra overrides ...]`: a thin layer over Hydra.

Everything after the vertical goes to Hydra unchanged (`-m` sweeps, `--cfg job`, `--help`).
A user error prints one line and exits 2; a full traceback only with HYDRA_FULL_ERROR=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

USAGE = """\
usage: verticals <command> <vertical> [hydra overrides ...]
       verticals demo [overrides ...]

commands:
  train      train on the configured data; writes runs/<vertical>/<time>/ and moves LATEST
  evaluate   re-score a run (run=PATH, default the latest) on its test split
  package    turn a run into a bundle under bundles/<vertical>/ (run=PATH, default latest)
  serve      serve the champion over HTTP and follow it (or bundle=PATH; serve.port=8000)
  predict    score a file with a bundle: input=in.csv output=out.parquet
             (file verticals, medical and manufacturing: input=<folder or file>,
             output=<folder> for output files + predictions.csv, or output=<table.csv>)
  runs       the vertical's runs in the tracking store (MLflow), with the headline metric
  models     registered versions (package registers each bundle), metrics, aliases
  promote    make a version the champion that servers follow: version=N reason="..."
  rollback   move the champion back to the version before the last promotion
  feedback   store outcomes of logged predictions from a table: input=outcomes.csv
  monitor    drift and live metrics of the logged traffic against the training reference
             (since=7d; exit 1 when a figure is outside its threshold)
  retrain    train a challenger on the champion's config plus the logged feedback, score
             both on the champion's holdout, promote only when better (retrain.promote=false:
             register only)
  loop       monitor every `every=1h`, retrain on drift or enough new feedback
  log        the prediction log: `log prune <vertical> older_than=90d`,
             `log export <vertical> output=log.parquet [since=30d]`
  token      bearer tokens of the vertical's servers: `token create <vertical>
             [scope=predict|feedback|admin] [name=...]` (printed once, kept hashed),
             `token list <vertical>`, `token revoke <vertical> name=...`
  call       send one record, list (input=x.json) or file to a running server and print the
             answer (url=http://127.0.0.1:8000; the token from VERTICALS_TOKEN)
  demo       every vertical end to end on built-in demo data, then a summary table
  list       the installed verticals

examples:
  verticals train finance
  verticals train finance data=table data.path=loans.parquet data.target=default
  verticals train finance -m model.num_leaves=15,63
  verticals train medical data=decathlon data.root=/data/Task09_Spleen
  verticals train manufacturing data=yolo data.yaml=/data/line3/data.yaml
  verticals train finance --cfg job
  verticals runs finance
  verticals promote finance version=2 reason="better on the March holdout"
  verticals serve finance serve.port=8080
  verticals monitor finance since=7d
  verticals feedback finance input=outcomes.csv
  verticals retrain finance retrain.since=30d
  verticals train finance tracking.uri=http://mlflow.internal:5000
"""

COMMANDS = ("train", "evaluate", "package", "serve", "predict", "runs", "models", "promote",
            "rollback", "feedback", "monitor", "log", "retrain", "loop", "token",
            "call")  # fmt: skip
# A command whose config is not named after it (`conf/log/` is the log settings' group).
_CONFIG_NAMES = {"log": "prediction_log"}
_ACTIONS = {"log": ("prune", "export"), "token": ("create", "list", "revoke")}
# Only a training run gets a folder of its own: the others would leave empty run folders.
_NO_OUTPUT = ["hydra.run.dir=.", "hydra.output_subdir=null"]


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(exc: BaseException) -> str:
    """The exception and its causes as one line, without Hydra's search-path dump."""
    parts: list[str] = []
    while exc is not None:
        for line in str(exc).splitlines():
            line = line.strip().rstrip(".")
            if line.startswith("Config search path"):
                break
            noise = line.startswith(("full_key:", "object_type=", "provider="))
            if line and not noise and line not in parts:
                parts.append(line)
        exc = exc.__cause__  # type: ignore[assignment]
    return "; ".join(parts) or "invalid configuration"


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

    from verticals.core.errors import UserError

    return (
        UserError,
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        MissingMandatoryValue,
        ValidationError,
        ConfigKeyError,
    )


def run_guarded(func: Callable[[], Any]) -> Any:
    """Run `func`; user errors become one line and exit 2, bugs keep a pointer to the trace."""
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise, so we decide how it is shown
    if full:
        os.environ["VERTICALS_FULL_ERROR"] = "1"
    try:
        return func()
    except _user_error_types() as exc:
        if full:
            raise
        fail(_one_line(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        if full:
            raise
        fail(f"{type(exc).__name__}: {_one_line(exc)} (HYDRA_FULL_ERROR=1 shows the traceback)", 1)
    finally:
        if not full:
            os.environ.pop("HYDRA_FULL_ERROR", None)


# Hydra's flags that take a value (`--info` takes one only from its list of choices).
_VALUE_FLAGS = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
                "-cd", "--config-dir", "--experimental-rerun"}  # fmt: skip
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Overrides and flags apart: Hydra's parser takes the overrides as one run of
    positionals, so they go together before the flags, whatever order the user typed."""
    overrides: list[str] = []
    flags: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            overrides.append(arg)
        else:
            flags.append(arg)
            takes = arg in _VALUE_FLAGS or (
                arg in ("-i", "--info") and i + 1 < len(args) and args[i + 1] in _INFO_CHOICES
            )
            if takes and i + 1 < len(args):
                i += 1
                flags.append(args[i])
        i += 1
    return overrides, flags


def _run_hydra(command: str, vertical: str, args: Sequence[str]) -> Any:
    import hydra

    from verticals import commands
    from verticals.configs import conf_dir, register_configs, vertical_overrides
    from verticals.core.config import check_config

    register_configs(vertical)
    command_func = commands.COMMANDS[command]

    def task(cfg: Any) -> Any:
        try:  # handled here so Hydra does not add its own "Error executing job" line
            check_config(cfg)  # the schemas' range checks, before any work
            return command_func(cfg)
        except _user_error_types() as exc:
            if os.environ.get("VERTICALS_FULL_ERROR") == "1":
                raise
            fail(_one_line(exc))

    config_name = _CONFIG_NAMES.get(command, command)
    main = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
        task
    )
    overrides, flags = split_args(args)
    saved = sys.argv
    sys.argv = [
        f"verticals {command} {vertical}",
        *vertical_overrides(vertical),
        *(_NO_OUTPUT if command != "train" else []),
        *overrides,
        *flags,
    ]
    try:
        return main()
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    from verticals.core import registry

    if command == "list":
        for name in registry.available():
            print(name)
        return
    if command == "demo":
        from verticals import demo
        from verticals.core.logs import ensure_console

        ensure_console()
        run_guarded(lambda: demo.main(rest))
        return
    if command not in COMMANDS:
        fail(
            f"unknown command {command!r}; expected one of {', '.join((*COMMANDS, 'demo', 'list'))}"
        )
    if command in _ACTIONS:  # `verticals log prune <vertical> ...`: the action comes first
        actions = _ACTIONS[command]
        if not rest or rest[0] not in actions:
            fail(f"`verticals {command}` needs an action first: {', '.join(actions)}")
        rest = [*rest[1:2], f"action={rest[0]}", *rest[2:]]
    if not rest or rest[0].startswith("-") or "=" in rest[0]:
        names = ", ".join(registry.available())
        fail(f"`verticals {command}` needs a vertical first; installed: {names}")
    vertical, overrides = rest[0], rest[1:]
    run_guarded(lambda: (registry.get(vertical), _run_hydra(command, vertical, overrides)))


if __name__ == "__main__":
    main()
