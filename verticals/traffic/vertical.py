"""The traffic vertical as the core drives it: a window of sensor readings in, speed
forecasts per sensor and horizon (with alerts) out. The entry point names this module, so
it is imported only when traffic runs; torch still loads on first use."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import BaseModel

from verticals.core.contract import RecordVertical
from verticals.core.runs import resume_training
from verticals.traffic import (
    config,
    data,
    evaluation,
    model,
    monitoring,
    retraining,
    schema,
    training,
    views,
)
from verticals.traffic.predict import forecast_records, forecast_rows

log = logging.getLogger(__name__)

#: Batching pays on a CPU when a window costs this many times less in a call of 8.
CPU_GAIN = 2.0


class TrafficVertical(RecordVertical):
    name = "traffic"
    title = "Traffic forecasting on a road-sensor graph (Graph WaveNet)"
    headline_metric = "mae_60min"
    headline_goal = "min"
    scale_out = "torch"  # cluster=: Ray Train's TorchTrainer (DDP) around the core's loop
    group_column: ClassVar[str | None] = "window"
    # readings, not windows: 333 windows of the 30-sensor demo, 48 of METR-LA's 207 sensors
    reference_size: ClassVar[int] = 10_000

    register_configs = staticmethod(config.register)
    resolve_config = staticmethod(resume_training)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(training.fit)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    predict = staticmethod(forecast_rows)
    predict_records = staticmethod(forecast_records)
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
    view_controls = views.CONTROLS

    def request_schema(self, model: Any) -> type[BaseModel]:
        return schema.Reading

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.Forecast

    def library_versions(self) -> list[str]:
        return ["torch", "h5py"]

    def batches_well(self, model: Any) -> bool:
        """On a GPU, always. On a CPU, measured on this model: 8 windows in one call against
        8 calls of one, worth the wait for company only when a window costs over
        `CPU_GAIN` times less batched (per-call overhead dominates small graphs, the
        convolutions big ones)."""
        if str(model.device).startswith("cuda"):
            return True
        alone, together = model.batch_gain(8)
        gain = alone / together
        log.info(
            "traffic: one window %.2f ms alone, %.2f ms in a call of 8 (%.1fx)",
            alone * 1e3, together * 1e3, gain,
        )  # fmt: skip
        return gain > CPU_GAIN
