"""`/predict` for traffic: the readings of one window in, forecasts per sensor and horizon out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

#: Readings are refused outside these years: a forecast past them would overflow the
#: calendar (9999-12-31 plus an hour wrapped to year 0), and no loop detector ran before.
FIRST_YEAR, LAST_YEAR = 1900, 8999


def not_bool(value: object) -> object:
    """JSON's true and false are not speeds, though Python takes them for 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("true and false are not numbers")
    return value


Speed = Annotated[float, BeforeValidator(not_bool)]


class Reading(BaseModel):
    """One loop-detector reading; send every reading of the latest window as a list."""

    model_config = ConfigDict(extra="forbid")

    sensor: str = Field(description="sensor id, as in the training data")
    timestamp: datetime = Field(description=f"between the years {FIRST_YEAR} and {LAST_YEAR}")
    value: Speed | None = Field(None, description="speed; null or 0 = missing")
    window: str | None = Field(None, description="groups readings into windows (batch files)")

    @field_validator("timestamp")
    @classmethod
    def _plausible_year(cls, value: datetime) -> datetime:
        if not FIRST_YEAR <= value.year <= LAST_YEAR:
            raise ValueError(f"the year must be between {FIRST_YEAR} and {LAST_YEAR}")
        return value


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
