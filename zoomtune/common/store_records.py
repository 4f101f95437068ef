"""The records the study store hands back, decoded from Redis's hashes and streams.

Plain frozen dataclasses: a round, an event, what a reap, a cancel or a start did, the proof of
holding the coordinator lock (and who holds one), and a trial decoded from its hash.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoomtune.common.trial import Rung, Trial, TrialStatus, rungs_from_json


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: equal data gives equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class RoundRecord:
    """A round as written: its number (1-based), the box it sampled, and its trial numbers."""

    number: int
    box: Mapping[str, Any]
    first_trial: int
    trials: int
    queued_at: float | None = None
    """Redis time at which its trials were queued, when this process has just written the round
    (`StudyStore.write_round`); None for a round read from the store."""
    rungs: tuple[Rung, ...] = ()
    """The early-stopping rungs its trials carry (also stored in each trial's hash)."""
    provisional: bool = False
    """Written ahead of its reference trials (`[search] speculate`): it may still be revised."""
    written_ahead: bool = False
    """It was provisional once (final or not): some of its trials may be left to judge."""

    @property
    def trial_numbers(self) -> range:
        return range(self.first_trial, self.first_trial + self.trials)

    @classmethod
    def from_hash(cls, row: Mapping[str, str]) -> RoundRecord:
        return cls(
            number=int(row["round"]),
            box=json.loads(row.get("box") or "{}"),
            first_trial=int(row["first_trial"]),
            trials=int(row["trials"]),
            rungs=rungs_from_json(json.loads(row.get("rungs") or "[]")),
            provisional=row.get("provisional") == "1",
            written_ahead=row.get("written_ahead") == "1",
        )


@dataclass(frozen=True)
class Reported:
    """What `StudyStore.report` found: whether the attempt still owns its trial, and the
    trial's rungs when they changed since its message was sent (else None)."""

    owned: bool
    rungs: tuple[Rung, ...] | None = None


@dataclass(frozen=True)
class Revision:
    """What `StudyStore.revise_round` did to a round run ahead: the trials it queued again (to
    be sent) and those whose rungs alone changed, in place (started ones are to be judged once
    finished, `settle`; queued ones start on the new rungs)."""

    again: tuple[int, ...]
    judge: tuple[int, ...]


@dataclass(frozen=True)
class Event:
    """One entry of the study's event stream."""

    id: str
    type: str
    trial: int | None
    attempt: int | None
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Requeued:
    """A trial the reaper sent back to the queue (or failed, when attempts ran out)."""

    trial: int
    outcome: str  # "requeued" or "failed"
    attempt: int


@dataclass(frozen=True)
class Cancelled:
    """What `StudyStore.cancel` did: the QUEUED trials it failed, the RUNNING ones it left."""

    trials_cancelled: int
    trials_running: int
    already: bool
    """The study had been cancelled before (this call only cleaned up)."""


@dataclass(frozen=True)
class StartOutcome:
    """Whether a worker may run an attempt; `reason` says why not."""

    ok: bool
    reason: str
    started_at: float | None = None
    mismatch: str = ""
    """For reason "forged": the payload field whose value is not the trial's."""
    rungs: tuple[Rung, ...] = ()
    """When ok: the trial's rungs, which the attempt decides on (its message may carry those
    it was sent with before a round run ahead changed them in place)."""


@dataclass(frozen=True)
class CoordinatorLock:
    """Proof that this process holds a study's lock; every coordinator write presents it."""

    value: str
    ttl: float

    @property
    def owner(self) -> str:
        return self.value.split(" ", 1)[1]


def owner_id() -> str:
    """host:pid of this process, as shown to a second coordinator that is refused."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_dead_local(owner: str) -> bool:
    """True when `owner` ("host:pid") is a process on this host that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def trial_from_hash(study: str, number: int, row: Mapping[str, str]) -> Trial:
    """Trial `number` of `study` from its hash in the store."""
    return Trial.from_dict(
        {
            "study": study,
            "number": number,
            "round": row.get("round", "0"),
            "params": json.loads(row.get("params", "{}")),
            "status": row.get("status", TrialStatus.QUEUED),
            "attempt": row.get("attempt", "1"),
            "score": row.get("score"),
            "error": row.get("error") or None,
            "last_step": row.get("last_step"),
            "last_value": row.get("last_value"),
            "rungs": json.loads(row.get("rungs") or "[]"),
            "last_error": row.get("last_error") or None,
            "worker": row.get("worker"),
            "host": row.get("host"),
            "device": row.get("device"),
            "queued_at": row.get("queued_at"),
            "started_at": row.get("started_at"),
            "finished_at": row.get("finished_at"),
        }
    )


def event_from_entry(entry_id: str, fields: Mapping[str, str]) -> Event:
    """One entry of the event stream as an Event."""
    return Event(
        id=str(entry_id),
        type=fields.get("type", ""),
        trial=_optional_int(fields.get("trial")),
        attempt=_optional_int(fields.get("attempt")),
        fields=fields,
    )


def _optional_int(value: str | None) -> int | None:
    return None if value is None or value == "" else int(value)
