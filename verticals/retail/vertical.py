"""The retail vertical as the core drives it: a customer (or an item) in, ranked products
out. The entry point names this module, so it is imported only when retail runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from verticals.core.contract import RecordVertical
from verticals.retail import (
    config,
    data,
    evaluation,
    model,
    monitoring,
    recommend,
    retraining,
    schema,
    views,
)


class RetailVertical(RecordVertical):
    name = "retail"
    title = "Product recommendation (implicit)"
    headline_metric = "ndcg@10"

    register_configs = staticmethod(config.register)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(model.fit)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    predict = staticmethod(recommend.predict)
    predict_records = staticmethod(recommend.predict_records)
    predict_table = staticmethod(recommend.predict_table)
    example_inputs = staticmethod(data.example_inputs)
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
    view_controls = views.CONTROLS

    def request_schema(self, model: Any) -> type[BaseModel]:
        return schema.RecommendRequest

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.RecommendResponse

    def library_versions(self) -> list[str]:
        return ["implicit", "scipy"]
