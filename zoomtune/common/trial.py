"""Trials, their states, the task message that dispatches one, and the outcome a worker reports.

A trial moves QUEUED -> RUNNING -> COMPLETE | FAILED | PRUNED. Each dispatch is an *attempt*:
a lost worker sends the trial back to QUEUED with attempt + 1 (see `zoomtune.common.store`).
A study is RUNNING until it ends COMPLETE, FAILED or CANCELLED. Both state enums are also what
the store's Lua scripts compare with (`zoomtune.common.store_scripts` hands them over).
Everything here is plain JSON data: nothing read from Redis is unpickled or imported.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from zoomtune.common.errors import MessageError
from zoomtune.common.names import OBJECTIVE_NAME, STUDY_NAME
from zoomtune.common.parameters import ParamValue

MAX_MESSAGE_BYTES = 64 * 1024
"""A task message larger than this is refused: params are a few scalars, never a payload."""

MAX_ERROR_CHARS = 2000
"""Failure reasons are cut to this length before they are stored."""

MAX_RUNGS = 1000
"""A trial message carries at most this many rungs (each a step and a threshold)."""


class TrialStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"

    def is_finished(self) -> bool:
        return self in (TrialStatus.COMPLETE, TrialStatus.FAILED, TrialStatus.PRUNED)


class StudyState(StrEnum):
    """The `state` field of a study's meta record."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Rung:
    """An early-stopping decision point: a trial whose value at `step` is worse than
    `threshold` is pruned there (see `zoomtune.coordinator.pruning`, which computes them).

    A trial's value at a rung is its value at the first step it reported at or after the
    rung's step (`value_at`), so a trial that reports every few steps is still judged.
    """

    step: int
    threshold: float

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise MessageError(f"a rung's step must be an integer >= 0, got {self.step!r}")
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float)
            or not math.isfinite(self.threshold)
        ):
            raise MessageError(
                f"a rung's threshold must be a finite number, got {self.threshold!r}"
            )
        object.__setattr__(self, "threshold", float(self.threshold))

    def keeps(self, value: float, maximize: bool) -> bool:
        """True when `value` is at least as good as the threshold (ties are kept)."""
        return value >= self.threshold if maximize else value <= self.threshold

    def to_list(self) -> list[int | float]:
        return [self.step, self.threshold]


def sorted_curve(
    reports: Iterable[tuple[int, float]],
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A learning curve as (steps, values), steps strictly ascending: from reports in the order
    they were made, the last value reported at each step counts (a later attempt's)."""
    by_step = {int(step): float(value) for step, value in reports}
    steps = tuple(sorted(by_step))
    return steps, tuple(by_step[step] for step in steps)


def value_at(steps: Sequence[int], values: Sequence[float], step: int) -> float | None:
    """A curve's value at a rung's `step`: its value at the smallest reported step >= `step`,
    or None when the curve has not reached `step`. `steps` are strictly ascending."""
    index = bisect.bisect_left(steps, step)
    return values[index] if index < len(steps) else None


def pruned_at(
    rungs: Sequence[Rung], steps: Sequence[int], values: Sequence[float], maximize: bool
) -> Rung | None:
    """The first rung that cuts a trial with this curve so far, or None."""
    for rung in rungs:
        value = value_at(steps, values, rung.step)
        if value is None:
            return None
        if not rung.keeps(value, maximize):
            return rung
    return None


@dataclass(frozen=True)
class Verdict:
    """What becomes of a trial that ran with other rungs than its round's final ones: "keep"
    it as it is, or run it "again" with them."""

    action: Literal["keep", "again"]


def judge(
    rungs: Sequence[Rung],
    status: TrialStatus,
    last_step: int | None,
    steps: Sequence[int],
    values: Sequence[float],
    maximize: bool,
) -> Verdict:
    """The verdict on a finished trial of a round run ahead whose rungs changed after it
    started, from its curve (`steps` ascending), its status and, when PRUNED, the step it was
    pruned at. Its result stands only where the final rungs give the same one whatever the
    objective does; where they would cut it, whether it stops there depends on whether it asks
    `should_prune()` there, which only running it again tells.

    - COMPLETE or FAILED: kept when no final rung cuts its curve (up to where it ended nothing
      would have gone differently), else run again.
    - PRUNED at a step (it asked there): kept when the final rungs first cut it at that very
      step, else run again (they cut it earlier, or would have let it go on).
    - RUNNING: kept for now; judged when it finishes.
    """
    if status is TrialStatus.RUNNING:
        return Verdict("keep")
    rung = pruned_at(rungs, steps, values, maximize)
    cut = None if rung is None else steps[bisect.bisect_left(steps, rung.step)]
    if status is TrialStatus.PRUNED:
        return Verdict("keep" if cut is not None and cut == last_step else "again")
    return Verdict("keep" if cut is None else "again")


def rungs_from_json(data: object) -> tuple[Rung, ...]:
    """Rungs from their JSON form, [[step, threshold], ...]: steps strictly ascending."""
    if not isinstance(data, list):
        raise MessageError(f"rungs must be a list of [step, threshold] pairs, got {data!r}")
    if len(data) > MAX_RUNGS:
        raise MessageError(f"at most {MAX_RUNGS} rungs, got {len(data)}")
    rungs: list[Rung] = []
    for pair in data:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise MessageError(f"a rung is a [step, threshold] pair, got {pair!r}")
        rung = Rung(pair[0], pair[1])
        if rungs and rung.step <= rungs[-1].step:
            raise MessageError(
                f"rung steps must be strictly ascending, got {rungs[-1].step} then {rung.step}"
            )
        rungs.append(rung)
    return tuple(rungs)


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
    last_step: int | None = None
    """PRUNED trials: the step of the last value it reported (`last_value`); the score stays
    None, since a value from an earlier step is not comparable with final scores."""
    last_value: float | None = None
    rungs: tuple[Rung, ...] = ()
    """The early-stopping rungs written with the trial's round and sent in its messages."""
    last_error: str | None = None
    """Why the previous attempt ended, when the trial was handed back or its lease expired."""
    worker: str | None = None
    host: str | None = None
    device: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def completed_score(self) -> float | None:
        """Its score when COMPLETE (what the search ranks); None when failed, pruned or not
        finished."""
        return self.score if self.status is TrialStatus.COMPLETE else None

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
            "last_step": self.last_step,
            "last_value": self.last_value,
            "rungs": [rung.to_list() for rung in self.rungs],
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
                last_step=_optional_int(data.get("last_step")),
                last_value=_optional_float(data.get("last_value")),
                rungs=rungs_from_json(data.get("rungs") or []),
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


def _optional_int(value: object) -> int | None:
    if value is None or value == "":
        return None
    return int(str(value))


def _optional_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrialMessage:
    """The body of the Celery task that runs one attempt of one trial: data only.

    The worker resolves `objective` in its own allow-list and checks `params` against the study's
    space before it runs anything. `rungs` are the trial's early-stopping thresholds as they were
    when the message was sent; the attempt runs on the stored ones, which its start hands it
    (a round run ahead may have changed them in place since), and `trial.should_prune()` then
    applies them without asking Redis.
    """

    study: str
    trial: int
    attempt: int
    objective: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    rungs: tuple[Rung, ...] = ()

    def payload(self) -> dict[str, Any]:
        """What the message says about its trial, by field of the trial's stored record: the
        worker runs it only if every value is the stored one (`StudyStore.start` compares them
        as canonical JSON). The study, trial and attempt are the trial's identity, checked by
        the same call. The rungs are not compared: they are not what the attempt runs on (the
        start hands it the stored ones), and the coordinator may send one attempt with
        different rungs (a resumed coordinator re-sends a queued trial with the rungs it has
        now, a lost message is re-sent as it was first sent).
        """
        return {"params": dict(self.params)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "attempt": self.attempt,
            "objective": self.objective,
            "params": dict(self.params),
            "rungs": [rung.to_list() for rung in self.rungs],
        }

    @classmethod
    def from_dict(cls, data: object) -> TrialMessage:
        """Decode a message, refusing anything that is not exactly the expected shape."""
        if not isinstance(data, dict):
            raise MessageError(f"a trial message must be a JSON object, got {type(data).__name__}")
        expected = {"study", "trial", "attempt", "objective", "params"}
        # `rungs` may be left out (no early stopping), e.g. by a coordinator of an older version.
        if set(data) - {"rungs"} != expected:
            raise MessageError(
                f"a trial message has exactly the keys {sorted(expected)} and optionally "
                f"'rungs', got {sorted(data)}"
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
        rungs = rungs_from_json(data.get("rungs", []))
        return cls(
            study=study,
            trial=trial,
            attempt=attempt,
            objective=objective,
            params=params,
            rungs=rungs,
        )


def _is_param_value(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


@dataclass(frozen=True)
class TrialResult:
    """What an attempt ended with: a score, a failure with its reason, or pruned at a step."""

    status: TrialStatus
    score: float | None = None
    error: str | None = None
    last_step: int | None = None
    last_value: float | None = None

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

    @classmethod
    def pruned(cls, last: tuple[int, float] | None) -> TrialResult:
        """Stopped early; `last` is the (step, value) it reported last (None: it reported
        nothing, which happens only to an attempt that lost its trial, whose result is
        dropped)."""
        if last is None:
            return cls(TrialStatus.PRUNED)
        return cls(TrialStatus.PRUNED, last_step=last[0], last_value=float(last[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "score": self.score,
            "error": self.error,
            "last_step": self.last_step,
            "last_value": self.last_value,
        }
