"""The traffic vertical as the core drives it: a window of sensor readings in, speed
forecasts per sensor and horizon (with alerts) out. The entry point names this module, so
it is imported only when traffic runs; torch still loads on first use."""

from __future__ import annotations

from typing import Any, ClassVar

from omegaconf import DictConfig
from pydantic import BaseModel

from verticals.core.contract import RecordVertical
from verticals.core.runs import resumed_config
from verticals.traffic import config, data, evaluation, model, schema, training
from verticals.traffic.predict import forecast_rows


class TrafficVertical(RecordVertical):
    name = "traffic"
    title = "Traffic forecasting on a road-sensor graph (Graph WaveNet)"
    headline_metric = "mae_60min"
    group_column: ClassVar[str | None] = "window"

    register_configs = staticmethod(config.register)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(training.fit)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    predict = staticmethod(forecast_rows)
    example_inputs = staticmethod(data.example_inputs)
    describe = staticmethod(evaluation.describe)

    def resolve_config(self, cfg: DictConfig) -> DictConfig:
        """`training.resume=<run>` continues that run: its data, split seed and network
        come from its config.yaml; this command's `training.*` (epochs, budget) apply."""
        if not cfg.training.resume:
            return cfg
        return resumed_config(cfg, str(cfg.training.resume))

    def request_schema(self, model: Any) -> type[BaseModel]:
        return schema.Reading

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.Forecast

    def library_versions(self) -> list[str]:
        return ["torch", "h5py"]
