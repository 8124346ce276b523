"""`/predict` for traffic: the readings of one window in, forecasts per sensor and horizon out."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Reading(BaseModel):
    """One loop-detector reading; send every reading of the latest window as a list."""

    model_config = ConfigDict(extra="forbid")

    sensor: str = Field(description="sensor id, as in the training data")
    timestamp: datetime
    value: float | None = Field(None, description="speed; null or 0 = missing")
    window: str | None = Field(None, description="groups readings into windows (batch files)")


class Forecast(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: str | None = None
    sensor: str
    horizon_min: int = Field(description="minutes after the window's last reading")
    timestamp: datetime = Field(
        description="the time the forecast is for, as wall-clock time of the training data"
    )
    speed: float
    alert: bool = Field(description="forecast below the configured congestion speed")
