"""The vertical contract: the one interface through which the core drives every vertical.

The CLI, training pipeline, bundles, HTTP serving and batch prediction are written once
against it. A vertical subclasses one of two kinds, which share `Vertical`:

- `RecordVertical`: inputs are records (JSON objects over HTTP, rows of a CSV/Parquet file);
- `FileVertical`: inputs are files (volumes, images): uploads, or a folder of them.

The core picks how to serve and batch-score a vertical from its kind, so neither kind carries
the other's methods. A vertical registers its class as an entry point in the
`verticals.verticals` group, so it can live in a separate package. Nothing here imports
pandas, pydantic or OmegaConf at run time: `verticals list` imports this module and must
stay fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from verticals.core.errors import UserError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    import numpy as np
    import pandas as pd
    from omegaconf import DictConfig
    from pydantic import BaseModel

    from verticals.core.device import Device
    from verticals.core.views import Answer, Control, View


@dataclass
class Splits:
    """Train/validation/test parts of a data set, in whatever form the vertical uses."""

    train: Any
    val: Any
    test: Any
    info: dict[str, Any] = field(default_factory=dict)  # source, sizes, schema: goes in the card


@dataclass
class Logged:
    """One logged prediction as monitoring (and retraining) hand it to a vertical: what came
    in, what the model said and, once feedback arrived, what really happened.

    `inputs`: a record vertical's request records (list of dicts, by column name; under
    `log.inputs=hashed` each value is a hash string, under `none` this is None); a file
    vertical's facts of the file: `{"name", "size", "statistics"}` (`FileOutput.statistics`).
    `outputs`: a record vertical's answer rows (list of dicts); a file vertical's summary.
    `files`: paths of the files the log kept: "input", "output", "outcome".
    """

    request_id: str
    inputs: Any
    outputs: Any
    outcome: dict[str, Any] | None = None
    observed_at: datetime | None = None
    files: dict[str, Path] = field(default_factory=dict)
    created: datetime | None = None
    model_version: str = ""


@dataclass
class CaseScores:
    """A model's answers on a holdout, kept so that its metrics can be computed again on any
    resample of the cases (the bootstrap of a champion-challenger comparison) without
    predicting again. `metrics(positions)`: the metrics on the cases at `positions` (an int
    array of length `n`, with repeats), named as `evaluate` names them."""

    n: int
    metrics: Callable[[np.ndarray], dict[str, float]]

    @classmethod
    def of_means(cls, per_case: dict[str, Any]) -> CaseScores:
        """Metrics that are means over cases (Dice per volume, NDCG per customer, error per
        window): `per_case` maps each metric to one value per case (NaN: not scored)."""
        import numpy as np

        values = {k: np.asarray(v, dtype=float) for k, v in per_case.items()}
        n = len(next(iter(values.values()))) if values else 0

        def metrics(positions: np.ndarray) -> dict[str, float]:
            return {k: float(np.nanmean(v[positions])) for k, v in values.items()}

        return cls(n, metrics)


@dataclass
class Workers:
    """Where this process stands in a fit spread over several (`cluster.workers`): its rank
    among `size`, and what the engine hands it in `params` (LightGBM's network settings;
    `devices`, the GPUs of a node). Rank 0, the chief, writes the run's files."""

    rank: int
    size: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def chief(self) -> bool:
        return self.rank == 0


@dataclass
class RunContext:
    """What a vertical gets from the core while it trains and evaluates."""

    run_dir: Path
    device: Device
    seed: int
    log: logging.Logger
    #: None: one process; else this process's place among the fit's workers (`cluster=`)
    workers: Workers | None = None

    @property
    def plots_dir(self) -> Path:
        path = self.run_dir / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path


class Vertical(ABC):
    """What every vertical does, whatever its inputs: data -> fit -> evaluate -> save/load.

    Subclass `RecordVertical` or `FileVertical`, not this class directly. The methods take
    exactly what the core passes, so a vertical may bind its own module functions to them
    (`fit = staticmethod(training.fit)`) instead of writing a forwarding method.
    """

    name: str = ""
    title: str = ""
    #: The metric the demo summary and the model card lead with.
    headline_metric: str = ""
    #: Whether a better model has a higher ("max") or lower ("min", an error) headline.
    headline_goal: str = "max"
    #: How `cluster=ray_local|ray` trains it: "torch" (Ray Train's TorchTrainer: `fit` on
    #: every worker, the core's torch loop in DDP), "lightgbm" (Ray Train's LightGBMTrainer:
    #: `fit` on every worker with `ctx.workers.params`), "node" (the whole `fit` in one Ray
    #: task holding a node's GPUs, for libraries with their own multi-GPU training), or
    #: "none" (its library trains on one process: the fit runs as without a cluster).
    scale_out: ClassVar[str] = "none"

    def register_configs(self) -> None:  # noqa: B027 - optional hook
        """Store the vertical's structured config schemas in Hydra's ConfigStore."""

    def resolve_config(self, cfg: DictConfig) -> DictConfig:
        """The config a training run really uses (default: `cfg`). A vertical that resumes
        runs takes the resumed run's data and model settings here, before anything is
        loaded or written, so the new run's config.yaml says what it trained on."""
        return cfg

    @abstractmethod
    def load_data(self, cfg: DictConfig) -> Splits:
        """Load and validate the configured data source (split seed: `cfg.seed`); raise
        `UserError` on bad input."""

    @abstractmethod
    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        """Train a model on `splits.train` (early-stopping on `splits.val`)."""

    def share(self, splits: Splits, workers: Workers) -> Splits:
        """What one worker of a fit spread over several (`cluster=`) gets of `splits`: by
        default all of them (a torch loop shares its batches itself); a vertical whose
        learner takes a share of the rows (finance) returns that share, so no worker holds
        the whole training table."""
        return splits

    def reads_on_cluster(self, cfg: DictConfig) -> bool:
        """Whether `load_data` (and `evaluate`) run Ray tasks under this config (finance's
        sharded Parquet table): the command then holds one Ray session throughout."""
        return False

    @abstractmethod
    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        """Plain-float metrics on `data`; plots go to `ctx.plots_dir` when ctx is given."""

    @abstractmethod
    def save(self, model: Any, directory: Path) -> None:
        """Write everything `load` needs into `directory`."""

    @abstractmethod
    def load(self, directory: Path) -> Any:
        """Inverse of `save`."""

    @abstractmethod
    def response_schema(self, model: Any) -> type[BaseModel]:
        """Pydantic model of one output record (a file vertical's summary of one file)."""

    def describe(self, model: Any, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
        """Vertical-specific paragraphs of the model card (Markdown)."""
        return ""

    def library_versions(self) -> list[str]:
        """Distribution names whose versions go into a bundle's manifest."""
        return []

    def batches_well(self, model: Any) -> bool:
        """Whether scoring many inputs in one call is much cheaper per input than one at a
        time (a network on a GPU): servers then micro-batch concurrent requests when
        `serve.batching=auto`. Default: no, since waiting for company costs latency."""
        return False

    # -- after the API: feedback and monitoring (the core logs, stores and compares) --

    #: Inputs of the test split that a training run scores and saves as the reference the
    #: monitor compares live traffic with (records, or files for a file vertical).
    reference_size: ClassVar[int] = 1000

    def outcome_schema(self, model: Any) -> type[BaseModel] | None:
        """Pydantic model of what really happened after one prediction (`POST /feedback`
        adds `request_id` and `observed_at` around it); unknown fields must be rejected.
        None: the vertical takes no feedback."""
        return None

    def monitor_frame(self, model: Any, entries: list[Logged]) -> pd.DataFrame:
        """The quantities whose drift the monitor watches, as a table: numeric columns are
        compared as distributions (PSI, KS), text and boolean ones as category mixes
        (PSI, chi-square). Built the same way from the reference and from the live log, so
        it must cope with `inputs` being hashed or None (`log.inputs`)."""
        raise NotImplementedError

    def live_metrics(self, model: Any, entries: list[Logged]) -> dict[str, float]:
        """Metrics on real outcomes (`entries` are those with an outcome): the live
        counterparts of the test metrics (AUC on labelled applicants, NDCG on later
        purchases). Default: none."""
        return {}

    # -- retraining: feedback becomes training data; one holdout scores every challenger --

    def learn_from(self, cfg: DictConfig, splits: Splits, feedback: list[Logged]) -> Splits:
        """`splits` with the cases of `feedback` (logged predictions with an outcome, oldest
        first) added to its training part, and `info["feedback"]` saying how many cases that
        gave. Raise `UserError` when they cannot be learnt from (inputs not logged, files not
        kept). Default: the vertical does not learn from feedback."""
        raise UserError(f"{self.name} does not learn from feedback")

    def extend_holdout(self, model: Any, holdout: Any, feedback: list[Logged]) -> Any:
        """`holdout` (what `evaluate` takes) with the cases of `feedback` added: the share of
        fresh feedback that `retrain.holdout_share` keeps out of training to score on."""
        raise UserError(
            f"{self.name} cannot add feedback to its holdout; set retrain.holdout_share=0"
        )

    def save_holdout(self, data: Any, directory: Path) -> None:
        """Write `data` (the test data `evaluate` takes) into `directory`, self-contained
        (files copied in), so a champion and its challengers are scored on the same cases
        whatever later happens to the data source."""
        raise NotImplementedError

    def load_holdout(self, directory: Path) -> Any:
        """Inverse of `save_holdout`."""
        raise NotImplementedError

    def case_keys(self, data: Any) -> set[str]:
        """Keys of the cases in `data` (a split's data or a holdout): equal keys mean the same
        case (an applicant's fields, a customer's purchase of an item, a reading's time, a
        file's sha256). The core keeps feedback that meets the holdout out of training, and
        refuses a challenger whose training data holds a holdout case. Default: no keys, so
        no such checks."""
        return set()

    def entry_keys(self, entry: Logged) -> set[str]:
        """Keys of the cases one logged prediction with its outcome holds, as `case_keys`
        names them."""
        return set()

    def score_cases(self, model: Any, data: Any) -> CaseScores | None:
        """The model's answers on `data`, for the bootstrap interval of a comparison.
        None (default): the comparison has no interval, only the two `evaluate` results."""
        return None

    # -- the console (`/ui`): what a person sees of an answer --

    #: Controls shown beside an answer (a slice slider, a horizon); `view` gets their values.
    view_controls: ClassVar[tuple[Control, ...]] = ()

    def view(self, model: Any, answer: Answer, controls: dict[str, Any]) -> View:
        """What the console shows of one `/predict` answer (`views.py`): plain data, drawn
        by the core. Default: the answer as a table."""
        from verticals.core.views import Table, View

        body = answer.body
        rows = body.get("predictions") or [body.get("prediction") or {}]
        return View([Table([_scalars(row) for row in rows], "prediction")])


class RecordVertical(Vertical):
    """A vertical whose inputs are records: JSON objects over HTTP, rows of a table file.

    Serving validates each record against `request_schema` and answers with `predict`'s
    rows; batch prediction runs `predict_table` over a CSV/Parquet file in batches.
    """

    #: Rows sharing this column's value are one input together (a window of sensor
    #: readings): batch files keep them in one batch, and `predict` may answer per group.
    group_column: ClassVar[str | None] = None

    @abstractmethod
    def request_schema(self, model: Any) -> type[BaseModel]:
        """Pydantic model of one input record; unknown fields must be rejected."""

    @abstractmethod
    def predict(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """Score a batch of records (one row each) and return one output row per input."""

    def predict_records(
        self, model: Any, requests: list[list[dict[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        """The answers to a few small requests, each a list of validated records (dicts keyed
        by column name, as `request_schema` dumps them by alias), as lists of output rows.

        Servers call this for small requests, several at once when they micro-batch, so a
        vertical should override it to go from records to the model's input array without
        pandas (a one-row DataFrame costs milliseconds; the model, microseconds). Its rows
        must equal `records_of(predict(...))` of the same records. Default: that, per request.
        """
        import pandas as pd

        return [records_of(self.predict(model, pd.DataFrame(records))) for records in requests]

    def predict_table(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for a file: flat columns where `predict` nests (default: `predict`).

        Files are read by spreadsheets and SQL; a vertical whose API output nests (lists of
        reasons, boxes) can flatten it here, and skip per-row Python work on big batches.
        """
        return self.predict(model, frame)

    @abstractmethod
    def example_inputs(self, splits: Splits, n: int) -> pd.DataFrame:
        """`n` input records from `splits.test`, as a user would send them to `predict`."""

    def monitor_frame(self, model: Any, entries: list[Logged]) -> pd.DataFrame:
        """Default: every input field and every scalar output field, one row per record
        (an output field named like an input one is prefixed `output.`). Requests whose
        inputs and outputs differ in length (a window -> many forecasts) give outputs only."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for entry in entries:
            outputs = [_scalars(row) for row in entry.outputs or []]
            inputs = entry.inputs if isinstance(entry.inputs, list) else None
            if inputs is None or len(inputs) != len(outputs):
                rows.extend(outputs)
                continue
            for record, out in zip(inputs, outputs, strict=True):
                row = dict(record)
                row.update({(f"output.{k}" if k in row else k): v for k, v in out.items()})
                rows.append(row)
        return pd.DataFrame(rows)


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
    """A row's numbers, strings and booleans (lists and objects left out)."""
    return {k: v for k, v in row.items() if v is None or isinstance(v, int | float | str | bool)}


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as plain dicts, missing values as None (JSON has no NaN): what a
    server answers with, and what `predict_records` must equal."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@dataclass
class FileOutput:
    """The answer of a file vertical for one input file: a summary record and an output file."""

    summary: dict[str, Any]  # JSON-able; validated against `response_schema` when served
    content: bytes  # the output file itself (a mask, an annotated image)
    suffix: str  # file name ending of `content`, e.g. ".nii.gz"
    media_type: str = "application/octet-stream"
    # figures of the input the monitor watches for drift (intensity, brightness, size): the
    # log keeps them, not the file, unless `log.keep_files`
    statistics: dict[str, float] = field(default_factory=dict)


class FileVertical(Vertical):
    """A vertical whose inputs are files (volumes, images), not table rows.

    Serving takes an upload and answers with the summary plus the output file; batch
    prediction runs over a folder and writes one output file per input and a summary table.
    """

    #: File name endings this vertical reads, longest first (".nii.gz" before ".nii").
    input_suffixes: ClassVar[tuple[str, ...]] = ()
    reference_size: ClassVar[int] = 16
    #: The outcome field given as a file (medical: a corrected mask), uploaded to
    #: `/feedback` as multipart; None: outcomes are JSON only.
    outcome_file: ClassVar[str | None] = None
    #: Whether the log keeps every output file (medical: Dice against corrected masks
    #: needs the predicted mask); inputs are kept only with `log.keep_files`.
    keep_outputs: ClassVar[bool] = False

    def view(self, model: Any, answer: Answer, controls: dict[str, Any]) -> View:
        """Default: the summary as a table, and the output file to download."""
        from verticals.core.views import Download

        shown = super().view(model, answer, controls)
        if answer.output is not None:
            shown.panels.append(Download(answer.output_name or "output", answer.output))
        return shown

    def check_outcome_file(self, path: Path, entry: Logged) -> None:
        """Raise `UserError` when the file given as an outcome does not fit the logged
        prediction (a mask in another grid than the input's). Default: any file."""

    def monitor_frame(self, model: Any, entries: list[Logged]) -> pd.DataFrame:
        """Default: one row per file, its `statistics` and the summary's scalar fields."""
        import pandas as pd

        rows = []
        for entry in entries:
            facts = entry.inputs if isinstance(entry.inputs, dict) else {}
            rows.append({**dict(facts.get("statistics") or {}), **_scalars(entry.outputs or {})})
        return pd.DataFrame(rows)

    @abstractmethod
    def predict_path(self, model: Any, path: Path) -> FileOutput:
        """Predict for one input file; raise `UserError` for a corrupt or unsuitable file."""

    def predict_paths(self, model: Any, paths: list[Path]) -> list[FileOutput]:
        """Predict for several files in one go (a server's micro-batch): a vertical whose
        model takes batches overrides this. Default: `predict_path` on each. A `UserError`
        fails the whole call; the server then retries the files one by one."""
        return [self.predict_path(model, path) for path in paths]

    @abstractmethod
    def example_files(self, splits: Splits, n: int, directory: Path) -> list[Path]:
        """Write up to `n` inputs from `splits.test` into `directory`, as a user would have them."""

    def find_inputs(self, folder: Path) -> list[Path]:
        """The input files under `folder` (default: those with one of `input_suffixes`)."""
        return sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and self.matches(p)
        )

    def matches(self, path: Path) -> bool:
        """Whether `path` is an input (a vertical may also accept folders, e.g. DICOM)."""
        return self.accepts_name(path.name)

    def accepts_name(self, name: str) -> bool:
        """Whether a file called `name` can be an input, by its ending alone (uploads)."""
        return any(name.lower().endswith(s) for s in self.input_suffixes)

    def stem(self, path: Path) -> str:
        """`path`'s name without the input suffix (`case_1.nii.gz` -> `case_1`)."""
        for suffix in self.input_suffixes:
            if path.name.lower().endswith(suffix):
                return path.name[: -len(suffix)]
        return path.stem
