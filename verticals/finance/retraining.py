"""Feedback as training data: labelled applications from the prediction log join the
training table, and a holdout of applicants scores champion and challenger alike."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from verticals.core.contract import CaseScores, Logged, Splits
from verticals.core.errors import UserError
from verticals.finance.data import FeatureSchema, Part, to_features, to_matrix

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from verticals.finance.model import FinanceModel

#: Share of the feedback that goes to the validation split (early stopping must see the
#: world the feedback comes from, not only the old one).
VALIDATION_SHARE = 0.2
_HOLDOUT = "holdout.parquet"
_SCHEMA = "schema.json"
_TARGET = "__defaulted__"


def labelled(entries: list[Logged], schema: FeatureSchema) -> tuple[Part, dict[str, int]]:
    """One row per entry whose request held one applicant and whose outcome says whether
    they defaulted; counts of what was skipped and why."""
    records, labels, ids = [], [], []
    skipped = {"several_applicants": 0, "no_inputs": 0}
    for entry in entries:
        if not entry.outcome or "defaulted" not in entry.outcome:
            continue
        if not isinstance(entry.inputs, list) or not entry.inputs:
            skipped["no_inputs"] += 1
            continue
        if len(entry.inputs) != 1:  # an outcome names one applicant: which one is unknown
            skipped["several_applicants"] += 1
            continue
        records.append(entry.inputs[0])
        labels.append(int(entry.outcome["defaulted"]))
        ids.append(entry.request_id)
    _refuse_hashed(records, schema)
    frame = pd.DataFrame.from_records(records, columns=schema.features, index=ids)
    X = to_features(frame, schema, "the prediction log's inputs")
    part = Part(X, np.asarray(labels, dtype="int8"), pd.DataFrame(index=X.index))
    return part, skipped


def _refuse_hashed(records: list[dict[str, Any]], schema: FeatureSchema) -> None:
    for record in records:
        for name in schema.numeric:
            if isinstance(record.get(name), str):
                raise UserError(
                    f"the prediction log holds hashed inputs (field {name!r}): the server ran "
                    "with log.inputs=hashed, so there is nothing to learn from; log.inputs=full "
                    "keeps them"
                )


def _concat(a: Part, b: Part) -> Part:
    extra = pd.concat([a.extra, b.extra]) if len(a.extra.columns) else pd.DataFrame(
        index=a.X.index.append(b.X.index)
    )  # fmt: skip
    return Part(pd.concat([a.X, b.X]), np.concatenate([a.y, b.y]).astype("int8"), extra)


def _to_validation(request_ids: pd.Index) -> np.ndarray:
    """A stable draw per request id: the same feedback lands in the same split every time."""
    draws = [zlib.crc32(str(i).encode()) / 2**32 for i in request_ids]
    return np.asarray(draws) < VALIDATION_SHARE


def learn_from(cfg: DictConfig, splits: Splits, feedback: list[Logged]) -> Splits:
    """The training and validation tables with the labelled applicants added (about a fifth
    to validation, for early stopping); the test split stays as it was."""
    schema: FeatureSchema = splits.info["schema"]
    if not isinstance(splits.train, Part):
        raise UserError(
            "retraining reads the training table into one process: run it with cluster=none "
            "(a sharded Parquet table on a cluster is for training from scratch)"
        )
    part, skipped = labelled(feedback, schema)
    if len(part.y) == 0:
        why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
        raise UserError(f"no labelled applicant in the feedback to learn from ({why or 'none'})")
    val = _to_validation(part.X.index)
    train_part = Part(part.X[~val], part.y[~val], part.extra[~val])
    val_part = Part(part.X[val], part.y[val], part.extra[val])
    info = dict(splits.info)
    info["feedback"] = {
        "applicants": int(len(part.y)),
        "to_train": int((~val).sum()),
        "to_validation": int(val.sum()),
        "default_rate": round(float(part.y.mean()), 4),
        **{f"skipped_{k}": v for k, v in skipped.items() if v},
    }
    return Splits(
        _concat(splits.train, train_part), _concat(splits.val, val_part), splits.test, info
    )


def extend_holdout(model: FinanceModel, holdout: Part, feedback: list[Logged]) -> Part:
    """The holdout with the labelled applicants added. The planted truth (`true_pd`) is
    known for demo data only, so it is dropped when applicants without it join."""
    part, _ = labelled(feedback, model.schema)
    if len(part.y) == 0:
        return holdout
    joined = _concat(
        Part(holdout.X, holdout.y, pd.DataFrame(index=holdout.X.index)), part
    )  # no oracle column: the new rows have no planted truth
    return joined


def save_holdout(part: Part, directory: Path) -> None:
    """The applicants as one Parquet table (levels kept as categoricals) and the target."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = part.X.copy()
    frame[_TARGET] = part.y
    for name in part.extra.columns:
        frame[f"__extra__{name}"] = part.extra[name].to_numpy()
    frame.reset_index(drop=True).to_parquet(directory / _HOLDOUT, index=False)
    schema = {
        "numeric": [
            c for c in part.X.columns if not isinstance(part.X[c].dtype, pd.CategoricalDtype)
        ],
        "categorical": {
            c: [str(v) for v in part.X[c].cat.categories]
            for c in part.X.columns
            if isinstance(part.X[c].dtype, pd.CategoricalDtype)
        },
        "columns": list(part.X.columns),
    }
    (directory / _SCHEMA).write_text(json.dumps(schema, indent=1))


def load_holdout(directory: Path) -> Part:
    frame = pd.read_parquet(directory / _HOLDOUT)
    schema = json.loads((directory / _SCHEMA).read_text())
    X = frame[schema["columns"]].copy()
    for name, levels in schema["categorical"].items():  # the levels' order is the model's
        X[name] = pd.Categorical(X[name].astype("string"), categories=levels)
    extra_cols = [c for c in frame.columns if c.startswith("__extra__")]
    extra = frame[extra_cols].rename(columns=lambda c: c.removeprefix("__extra__"))
    return Part(X, frame[_TARGET].to_numpy(dtype="int8"), extra)


def score_cases(model: FinanceModel, part: Part) -> CaseScores:
    """The PDs once; ROC-AUC and Brier of any resample of the applicants from them."""
    pd_ = model.pd(to_matrix(part.X, model.schema))
    y = part.y

    def metrics(positions: np.ndarray) -> dict[str, float]:
        ys, ps = y[positions], pd_[positions]
        found = {"brier": float(np.mean((ps - ys) ** 2))}
        if len(np.unique(ys)) == 2:
            found["roc_auc"] = float(roc_auc_score(ys, ps))
        return found

    return CaseScores(len(y), metrics)


def _key(pairs: list[tuple[str, Any]]) -> str:
    """An applicant's non-missing fields, numbers as floats: the same in a JSON request and
    in a typed table."""
    return "|".join(f"{k}={float(v)!r}" if isinstance(v, int | float) else f"{k}={v}"
                    for k, v in sorted(pairs))  # fmt: skip


def case_keys(part: Part) -> set[str]:
    """One key per applicant (row) of `part`."""
    columns = list(part.X.columns)
    values = part.X.astype(object).where(part.X.notna(), None).itertuples(index=False)
    return {_key([(c, v) for c, v in zip(columns, row, strict=True) if v is not None])
            for row in values}  # fmt: skip


def entry_keys(entry: Logged) -> set[str]:
    """The applicant of a one-applicant request, as `case_keys` keys it."""
    if not isinstance(entry.inputs, list) or len(entry.inputs) != 1:
        return set()
    record = entry.inputs[0]
    return {_key([(k, v) for k, v in record.items() if v is not None and not isinstance(v, bool)])}
