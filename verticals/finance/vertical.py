"""The finance vertical as the core drives it: applicant records in, PD, score, grade and
reason codes out. The entry point names this module, so it is imported only when finance
runs, and LightGBM and scikit-learn load with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from verticals.core.contract import RecordVertical
from verticals.finance import (
    config,
    data,
    evaluation,
    model,
    monitoring,
    retraining,
    schema,
    shards,
    views,
)


class FinanceVertical(RecordVertical):
    name = "finance"
    title = "Credit-default risk scoring (LightGBM)"
    headline_metric = "roc_auc"
    scale_out = "lightgbm"  # cluster=: LightGBM's data-parallel learner on Ray Train

    register_configs = staticmethod(config.register)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(model.fit)
    share = staticmethod(model.share)
    reads_on_cluster = staticmethod(shards.wanted)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    request_schema = staticmethod(schema.request_schema)
    predict = staticmethod(model.predict)
    predict_records = staticmethod(model.predict_records)
    predict_table = staticmethod(model.predict_table)
    example_inputs = staticmethod(data.example_inputs)
    describe = staticmethod(evaluation.describe)
    outcome_schema = staticmethod(monitoring.outcome_schema)
    monitor_frame = staticmethod(monitoring.monitor_frame)
    live_metrics = staticmethod(monitoring.live_metrics)
    learn_from = staticmethod(retraining.learn_from)
    extend_holdout = staticmethod(retraining.extend_holdout)
    save_holdout = staticmethod(retraining.save_holdout)
    load_holdout = staticmethod(retraining.load_holdout)
    score_cases = staticmethod(retraining.score_cases)
    case_keys = staticmethod(retraining.case_keys)
    entry_keys = staticmethod(retraining.entry_keys)
    view = staticmethod(views.view)

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.Prediction

    def library_versions(self) -> list[str]:
        return ["lightgbm", "scikit-learn"]
