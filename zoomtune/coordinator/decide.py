"""The round loop's decisions, as pure functions of what it read: no Redis, no clock of its own.

`zoomtune.coordinator.rounds` does the I/O around them (reading events and trials, sending messages,
writing states); these say what that I/O means and what to do about it, and are unit-tested
without Redis (tests/test_loop_decisions.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from zoomtune.common.store_records import Event
from zoomtune.common.trial import StudyState, Trial, TrialStatus
from zoomtune.coordinator.search import CoarseToFine


@dataclass(frozen=True)
class News:
    """What a batch of events from the study's stream means for the trials in flight."""

    cancelled: bool = False
    """The study was cancelled (`coordinator cancel`): stop at once."""
    rejected: Event | None = None
    """A worker refused a trial (its objective is not registered there): stop, resumable."""
    started: tuple[Event, ...] = ()
    """Trials in flight that a worker started: shown, nothing to decide."""
    changed: frozenset[int] = field(default_factory=frozenset)
    """Trials in flight whose record changed otherwise (finished, handed back): re-read them."""


def read_news(events: Sequence[Event], in_flight: Iterable[int]) -> News:
    """Sort `events` (in stream order) into what the loop acts on; the first cancel or
    rejection wins, and events of trials not in flight are ignored."""
    flying = set(in_flight)
    started: list[Event] = []
    changed: set[int] = set()
    for event in events:
        if event.type == "study" and event.fields.get("state") == StudyState.CANCELLED:
            return News(cancelled=True)
        if event.type == "rejected":
            return News(rejected=event)
        if event.trial is None or event.trial not in flying:
            continue
        if event.type == "started":
            started.append(event)
        else:
            changed.add(event.trial)
    return News(started=tuple(started), changed=frozenset(changed))


def must_resend(before: Trial, after: Trial) -> bool:
    """Whether a trial re-read as `after` went back to the queue (a new attempt, or handed back
    by its worker) since the loop last saw it as `before`: its message must be sent again."""
    return after.status is TrialStatus.QUEUED and (
        before.status is not TrialStatus.QUEUED or after.attempt != before.attempt
    )


def lost_messages(
    queued: Sequence[Trial],
    redis_now: float,
    lease: float,
    sent_at: Mapping[tuple[int, int], float],
    now: float,
) -> list[Trial]:
    """The QUEUED trials whose message was lost, to send again, when the queue is empty: those
    that waited longer than a lease (on Redis's clock, since `queued_at`) and were not sent in
    the last lease (on the loop's monotonic clock, `sent_at` by trial and attempt). A
    duplicate, should the message not have been lost after all, is dropped by the store."""
    lost = []
    for trial in queued:
        waited = redis_now - (trial.queued_at or redis_now)
        sent = sent_at.get((trial.number, trial.attempt), 0.0)
        if waited > lease and now - sent > lease:
            lost.append(trial)
    return lost


def empty_round(search: CoarseToFine, rounds: Iterable[int]) -> int | None:
    """The first of `rounds` that is fully told without one completed trial, or None. Such a
    round leaves nothing to narrow around: the study fails (docs/FAULTS.md S13)."""
    for number in sorted(set(rounds)):
        if not search.round_told(number):
            continue
        if all(t.score is None for t in search.history if t.round == number):
            return number
    return None


def idle_too_long(
    waiting: bool, now: float, last_start: float, last_warning: float, limit: float
) -> bool:
    """Whether to warn that no worker consumes the queue: trials wait, and neither a trial
    started nor this warning was given in the last `limit` seconds."""
    return waiting and now - max(last_start, last_warning) > limit


__all__ = ["News", "empty_round", "idle_too_long", "lost_messages", "must_resend", "read_news"]
