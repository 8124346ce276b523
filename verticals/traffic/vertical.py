"""The traffic vertical as the core drives it: a window of sensor readings in, speed
forecasts per sensor and horizon (with alerts) out. The entry point names this module, so
it is imported only when traffic runs; torch still loads on first use."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from verticals.core.contract import RecordVertical
from verticals.core.runs import resume_training
from verticals.traffic import config, data, evaluation, model, schema, training
from verticals.traffic.predict import forecast_rows


class TrafficVertical(RecordVertical):
    name = "traffic"
    title = "Traffic forecasting on a road-sensor graph (Graph WaveNet)"
    headline_metric = "mae_60min"
    group_column: ClassVar[str | None] = "window"

    register_configs = staticmethod(config.register)
    resolve_config = staticmethod(resume_training)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(training.fit)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    predict = staticmethod(forecast_rows)
    example_inputs = staticmethod(data.example_inputs)
    describe = staticmethod(evaluation.describe)

    def request_schema(self, model: Any) -> type[BaseModel]:
        return schema.Reading

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.Forecast

    def library_versions(self) -> list[str]:
        return ["torch", "h5py"]
