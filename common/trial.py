"""Trials, their states, the task message that dispatches one, and the outcome a worker reports.

A trial moves QUEUED -> RUNNING -> COMPLETE | FAILED | PRUNED. Each dispatch is an *attempt*:
a lost worker sends the trial back to QUEUED with attempt + 1 (see `common.store`). Everything
here is plain JSON data: nothing read from Redis is unpickled or imported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from common.errors import MessageError
from common.names import OBJECTIVE_NAME, STUDY_NAME
from common.space import ParamValue

MAX_MESSAGE_BYTES = 64 * 1024
"""A task message larger than this is refused: params are a few scalars, never a payload."""

MAX_ERROR_CHARS = 2000
"""Failure reasons are cut to this length before they are stored."""


class TrialStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"

    def is_finished(self) -> bool:
        return self in (TrialStatus.COMPLETE, TrialStatus.FAILED, TrialStatus.PRUNED)


@dataclass(frozen=True)
class Trial:
    """One trial as the study store records it. Times are Redis server time, in seconds."""

    study: str
    number: int
    round: int
    params: Mapping[str, ParamValue]
    status: TrialStatus = TrialStatus.QUEUED
    attempt: int = 1
    score: float | None = None
    error: str | None = None
    last_error: str | None = None
    """Why the previous attempt ended, when the trial was handed back or its lease expired."""
    worker: str | None = None
    host: str | None = None
    device: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "number": self.number,
            "round": self.round,
            "params": dict(self.params),
            "status": self.status.value,
            "attempt": self.attempt,
            "score": self.score,
            "error": self.error,
            "last_error": self.last_error,
            "worker": self.worker,
            "host": self.host,
            "device": self.device,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        try:
            return cls(
                study=str(data["study"]),
                number=int(data["number"]),
                round=int(data["round"]),
                params=dict(data["params"]),
                status=TrialStatus(data["status"]),
                attempt=int(data["attempt"]),
                score=None if data.get("score") is None else float(data["score"]),
                error=data.get("error"),
                last_error=data.get("last_error"),
                worker=data.get("worker"),
                host=data.get("host"),
                device=data.get("device"),
                queued_at=_optional_float(data.get("queued_at")),
                started_at=_optional_float(data.get("started_at")),
                finished_at=_optional_float(data.get("finished_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"not a trial record: {exc!r}") from exc


def _optional_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrialMessage:
    """The body of the Celery task that runs one attempt of one trial: data only.

    The worker resolves `objective` in its own allow-list and checks `params` against the study's
    space before it runs anything.
    """

    study: str
    trial: int
    attempt: int
    objective: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "attempt": self.attempt,
            "objective": self.objective,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: object) -> TrialMessage:
        """Decode a message, refusing anything that is not exactly the expected shape."""
        if not isinstance(data, dict):
            raise MessageError(f"a trial message must be a JSON object, got {type(data).__name__}")
        expected = {"study", "trial", "attempt", "objective", "params"}
        if set(data) != expected:
            raise MessageError(
                f"a trial message has exactly the keys {sorted(expected)}, got {sorted(data)}"
            )
        size = len(json.dumps(data, default=str))
        if size > MAX_MESSAGE_BYTES:
            raise MessageError(f"trial message of {size} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
        study, trial, attempt = data["study"], data["trial"], data["attempt"]
        objective, params = data["objective"], data["params"]
        if not isinstance(study, str) or not STUDY_NAME.fullmatch(study):
            raise MessageError(f"bad study name {study!r}")
        if not isinstance(objective, str) or not OBJECTIVE_NAME.fullmatch(objective):
            raise MessageError(f"bad objective name {objective!r}")
        for key, value in (("trial", trial), ("attempt", attempt)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MessageError(f"{key} must be a non-negative integer, got {value!r}")
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and _is_param_value(v) for k, v in params.items()
        ):
            raise MessageError(f"params must map names to scalars, got {params!r}")
        return cls(study=study, trial=trial, attempt=attempt, objective=objective, params=params)


def _is_param_value(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


@dataclass(frozen=True)
class TrialResult:
    """What an attempt ended with: a score, or a failure with its reason."""

    status: TrialStatus
    score: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not self.status.is_finished():
            raise MessageError(f"a result needs a finished status, got {self.status.value!r}")
        if self.status is TrialStatus.COMPLETE and (
            self.score is None or not math.isfinite(self.score)
        ):
            raise MessageError(f"a complete trial needs a finite score, got {self.score!r}")

    @classmethod
    def complete(cls, score: float) -> TrialResult:
        return cls(TrialStatus.COMPLETE, score=float(score))

    @classmethod
    def failed(cls, reason: str) -> TrialResult:
        return cls(TrialStatus.FAILED, error=reason[:MAX_ERROR_CHARS])

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "score": self.score, "error": self.error}
