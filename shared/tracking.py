"""Runs and model versions in MLflow: every training run tracked, every bundle registered.

(Work in progress: the champion follower's interface is fixed, its body comes next.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

CHAMPION = "champion"


@dataclass(frozen=True)
class Champion:
    """The bundle that the `champion` alias of `verticals-<vertical>` names, asked afresh on
    each call (None: the registry has no champion). Servers call it on an interval; it is
    a plain value, so several server processes can each rebuild it from the environment."""

    uri: str
    vertical: str

    def __call__(self) -> Path | None:
        raise NotImplementedError

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, value: str) -> Champion:
        return cls(**json.loads(value))
