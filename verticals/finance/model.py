"""The PD model: a LightGBM binary classifier with its schema, scorecard and PSI baseline."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from verticals.core.contract import RunContext, Splits, Workers
from verticals.core.errors import UserError
from verticals.finance import scorecard, shards, single_row
from verticals.finance.config import ClassWeight, ScorecardConfig, StoppingMetric
from verticals.finance.data import FeatureSchema, Part, to_matrix
from verticals.finance.metrics import score_bins

MODEL_FILE = "lightgbm.txt"
PSI_SAMPLE = shards.PSI_SAMPLE  # training rows scored for the PSI baseline
SMALL_BATCH = 256  # rows below which prediction runs on one thread
META_FILE = "finance.json"


@dataclass
class FinanceModel:
    booster: lgb.Booster
    schema: FeatureSchema
    card: ScorecardConfig
    psi_edges: np.ndarray
    psi_expected: np.ndarray
    best_iteration: int
    lightgbm_device: str

    def pd(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.booster.predict(X, num_iteration=self.best_iteration, **_threads(len(X)))

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if len(X) == 1 and isinstance(X, np.ndarray):
            try:  # one applicant: the C API's single-row call, half the time
                return single_row.contributions(self.booster, X[0], self.best_iteration)
            except (AttributeError, RuntimeError):  # another LightGBM build: the usual way
                pass
        return self.booster.predict(
            X, num_iteration=self.best_iteration, pred_contrib=True, **_threads(len(X))
        )


def _threads(rows: int) -> dict[str, int]:
    """One thread for a handful of rows: spinning up every core costs more than it saves,
    and concurrent API requests would fight over them."""
    return {"num_threads": 1} if rows < SMALL_BATCH else {}


def _metrics(first: str) -> list[str]:
    """Validation metrics as LightGBM names them, the one early stopping watches first."""
    watched = StoppingMetric(first)
    return [str(watched), *(str(m) for m in StoppingMetric if m is not watched)]


def lightgbm_params(
    model_cfg: DictConfig, schema: FeatureSchema, y: np.ndarray | list[int], seed: int
) -> dict:
    """LightGBM parameters from `model.*`, with monotone constraints checked by name; `y`:
    the training target, or its class counts [negatives, positives]."""
    params: dict[str, Any] = {
        "objective": "binary",
        "metric": _metrics(model_cfg.early_stopping_metric),
        "verbosity": -1,
        "seed": seed,
        "num_leaves": model_cfg.num_leaves,
        "learning_rate": model_cfg.learning_rate,
        "min_data_in_leaf": model_cfg.min_data_in_leaf,
        "feature_fraction": model_cfg.feature_fraction,
        "bagging_fraction": model_cfg.bagging_fraction,
        "bagging_freq": model_cfg.bagging_freq,
        "lambda_l2": model_cfg.lambda_l2,
        "max_bin": model_cfg.max_bin,
        "cat_smooth": model_cfg.cat_smooth,
        "num_threads": model_cfg.num_threads,
    }
    extra = OmegaConf.to_container(model_cfg.extra, resolve=True) or {}
    if model_cfg.deterministic:
        params["deterministic"] = True
        if not {"force_row_wise", "force_col_wise"} & set(extra):
            params["force_col_wise"] = True
    if ClassWeight(model_cfg.class_weight) is ClassWeight.balanced:
        negatives, positives = y if isinstance(y, list) else ((y == 0).sum(), (y == 1).sum())
        params["scale_pos_weight"] = float(negatives / max(positives, 1))
    monotone = dict(model_cfg.monotone or {})  # values -1, 0 or 1: LightGBMConfig checks
    if monotone:
        unknown = [k for k in monotone if k not in schema.numeric]
        if unknown:
            raise UserError(
                f"model.monotone names {unknown}, which are not numeric features; "
                f"numeric features are {schema.numeric}"
            )
        params["monotone_constraints"] = [int(monotone.get(f, 0)) for f in schema.features]
        params["monotone_constraints_method"] = "advanced"
    params.update(extra)
    return params


def _train(
    params: dict, train: lgb.Dataset, val: lgb.Dataset, cfg: DictConfig, log: logging.Logger
) -> lgb.Booster:
    return lgb.train(
        params,
        train,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[val],
        valid_names=["val"],
        callbacks=[
            lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False),
            lgb.log_evaluation(period=max(cfg.num_boost_round // 10, 1)),
        ],
    )


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> FinanceModel:
    """Train with early stopping on the validation split, on the GPU when one is usable."""
    schema: FeatureSchema = splits.info["schema"]
    train, val = splits.train, splits.val
    baseline = getattr(train, "sample", None)  # a sharded table's sample of all its rows
    if isinstance(train, shards.ShardPart):  # this worker's row groups of a Parquet table
        train = shards.load(train, f"data.path ({len(train.pieces)} row groups)")
    card = ScorecardConfig(**OmegaConf.to_container(cfg.scorecard, resolve=True))  # checked
    # a worker's share: the whole table's classes ([negatives, positives]) weigh them
    params = lightgbm_params(cfg.model, schema, splits.info.get("train_y", train.y), ctx.seed)
    lgb.register_logger(ctx.log)
    categorical = list(schema.categorical)
    workers = ctx.workers
    if workers is not None and workers.size > 1:  # cluster=: LightGBM's data-parallel learner
        # `share` gave each worker its rows; all validate on the same split, so the early
        # stopping of each is the same and the chief's booster is the model
        params.update(workers.params, tree_learner="data", pre_partition=True)
        ctx.log.info("LightGBM data-parallel: %d training rows on this worker", len(train.y))
    dtrain = lgb.Dataset(train.X, train.y, categorical_feature=categorical, free_raw_data=False)
    dval = lgb.Dataset(val.X, val.y, categorical_feature=categorical, reference=dtrain)
    device = "cpu"
    if ctx.device.is_cuda:
        try:
            booster = _train({**params, "device_type": "gpu"}, dtrain, dval, cfg.model, ctx.log)
            device = "gpu"
        except lgb.basic.LightGBMError as exc:
            ctx.log.warning("LightGBM GPU learner unavailable (%s); training on CPU", exc)
    if device == "cpu":
        try:
            booster = _train(params, dtrain, dval, cfg.model, ctx.log)
        except lgb.basic.LightGBMError as exc:  # a parameter LightGBM refuses
            raise UserError(f"LightGBM refused the model settings: {exc}") from None
    best = booster.best_iteration or booster.current_iteration()
    ctx.log.info("LightGBM ran on %s; best iteration %d", device, best)
    model = FinanceModel(booster, schema, card, np.array([]), np.array([]), best, device)
    baseline = train.X if baseline is None else baseline
    if len(baseline) > PSI_SAMPLE:  # deciles are stable long before every row is scored
        baseline = baseline.sample(PSI_SAMPLE, random_state=ctx.seed)
    model.psi_edges, model.psi_expected = score_bins(scorecard.scores(model.pd(baseline), card))
    return model


def _scores(
    model: FinanceModel, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PD, points, grades and SHAP contributions of a feature matrix (one model call)."""
    contrib = model.contributions(X)
    pd_ = 1.0 / (1.0 + np.exp(-contrib.sum(axis=1)))  # SHAP values add up to the log-odds
    points = scorecard.scores(pd_, model.card)
    return pd_, points, scorecard.grades(points, model.card), contrib


def _reasons(model: FinanceModel, contrib: np.ndarray, X: np.ndarray) -> list[list[dict]]:
    schema = model.schema
    levels = [None] * len(schema.numeric) + list(schema.categorical.values())
    return scorecard.reasons(contrib, schema.features, X, levels, model.card.n_reasons)


def _score(model: FinanceModel, frame: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Feature matrix, PD/score/grade columns, and the SHAP contributions."""
    X = to_matrix(frame, model.schema)
    pd_, points, grades, contrib = _scores(model, X)
    return (
        X,
        pd.DataFrame({"pd": pd_, "score": points, "grade": grades}, index=frame.index),
        contrib,
    )


def predict(model: FinanceModel, frame: pd.DataFrame) -> pd.DataFrame:
    """PD, score, grade and up to `n_reasons` reasons (feature, value, direction) per row."""
    X, out, contrib = _score(model, frame)
    out["reasons"] = _reasons(model, contrib, X)
    out["out_of_range"] = model.schema.out_of_range(X)
    return out


def predict_records(model: FinanceModel, requests: list[list[dict[str, Any]]]) -> list[list[dict]]:
    """`predict` for a few validated records, without pandas: every request's rows in one
    feature matrix and one LightGBM call, the answers split back per request."""
    rows = [record for records in requests for record in records]
    X = model.schema.record_matrix(rows)
    pd_, points, grades, contrib = _scores(model, X)
    reasons, outside = _reasons(model, contrib, X), model.schema.out_of_range(X)
    answers = [
        {"pd": p, "score": s, "grade": g, "reasons": r, "out_of_range": o}
        for p, s, g, r, o in zip(
            pd_.tolist(), points.tolist(), grades.tolist(), reasons, outside, strict=True
        )
    ]
    out, start = [], 0
    for records in requests:
        out.append(answers[start : start + len(records)])
        start += len(records)
    return out


def predict_table(model: FinanceModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The same scores with flat reason columns: `reason_k` (feature) and `reason_k_log_odds`,
    and `out_of_range`: the features outside the training range, joined by ";"."""
    present = [f for f in model.schema.features if f in frame.columns]
    if not present:
        raise UserError(
            f"none of the model's {len(model.schema.features)} feature columns is in the input "
            f"(expected e.g. {', '.join(model.schema.features[:5])})"
        )
    X, out, contrib = _score(model, frame)
    out["out_of_range"] = [";".join(names) for names in model.schema.out_of_range(X)]
    names, effects = scorecard.top_reasons(contrib, model.schema.features, model.card.n_reasons)
    for k in range(names.shape[1]):
        out[f"reason_{k + 1}"] = names[:, k]
        out[f"reason_{k + 1}_log_odds"] = effects[:, k]
    return out


def save(model: FinanceModel, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(directory / MODEL_FILE, num_iteration=model.best_iteration)
    meta = {
        "schema": model.schema.to_dict(),
        "scorecard": asdict(model.card),
        "psi_edges": model.psi_edges.tolist(),
        "psi_expected": model.psi_expected.tolist(),
        "best_iteration": model.best_iteration,
        "lightgbm_device": model.lightgbm_device,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _card(saved: dict[str, Any]) -> ScorecardConfig:
    grades = saved.get("grades")
    if isinstance(grades, dict):  # models saved before grades became [grade, bound] pairs
        saved = {**saved, "grades": [[g, b] for g, b in grades.items()]}
    return ScorecardConfig(**saved)


def load(directory: Path) -> FinanceModel:
    meta_path, model_path = directory / META_FILE, directory / MODEL_FILE
    if not meta_path.is_file() or not model_path.is_file():
        raise UserError(f"{directory} does not hold a finance model ({MODEL_FILE}, {META_FILE})")
    meta = json.loads(meta_path.read_text())
    booster = lgb.Booster(model_file=str(model_path))
    return FinanceModel(
        booster=booster,
        schema=FeatureSchema.from_dict(meta["schema"]),
        card=_card(meta["scorecard"]),
        psi_edges=np.array(meta["psi_edges"]),
        psi_expected=np.array(meta["psi_expected"]),
        best_iteration=int(meta["best_iteration"]),
        lightgbm_device=meta["lightgbm_device"],
    )


def share(splits: Splits, workers: Workers) -> Splits:
    """A worker's share of the training rows (every size-th, from its rank), for LightGBM's
    data-parallel learner; validation and test stay whole."""
    if isinstance(splits.train, shards.ShardPart):  # its row groups, read by the worker
        return shards.share(splits, workers)
    train = splits.train
    rows = slice(workers.rank, None, workers.size)
    part = Part(train.X.iloc[rows], train.y[rows], train.extra.iloc[rows])
    # the whole table's classes, so `class_weight=balanced` weighs alike on every worker
    info = {**splits.info, "train_y": np.bincount(train.y, minlength=2).tolist()}
    return Splits(part, splits.val, splits.test, info)
