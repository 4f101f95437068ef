"""The round loop's decisions (zoomtune/coordinator/decide.py), without Redis."""

from __future__ import annotations

from dataclasses import replace

from tests.harness import study_toml
from zoomtune.common.store_records import Event
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialStatus
from zoomtune.coordinator.decide import (
    empty_round,
    idle_too_long,
    lost_messages,
    must_resend,
    read_news,
)
from zoomtune.coordinator.search import CoarseToFine


def event(n: int, kind: str, trial: int | None = None, **fields: str) -> Event:
    return Event(f"{n}-0", kind, trial, 1, fields)


def queued(number: int, queued_at: float, attempt: int = 1) -> Trial:
    return Trial("demo", number, 1, {"x": 0.5}, attempt=attempt, queued_at=queued_at)


# -- what the events mean ----------------------------------------------------------------------


def test_events_of_trials_in_flight_are_sorted_into_starts_and_changes() -> None:
    news = read_news(
        [event(1, "started", 3), event(2, "finished", 4), event(3, "requeued", 3)], [3, 4]
    )
    assert [e.trial for e in news.started] == [3]
    assert news.changed == {3, 4}
    assert not news.cancelled
    assert news.rejected is None


def test_events_of_trials_not_in_flight_are_ignored() -> None:
    news = read_news([event(1, "finished", 9), event(2, "round"), event(3, "started", 8)], [3])
    assert news.started == ()
    assert news.changed == frozenset()


def test_a_cancel_or_a_rejection_stops_everything_else() -> None:
    cancelled = read_news(
        [event(1, "finished", 3), event(2, "study", state="cancelled"), event(3, "finished", 4)],
        [3, 4],
    )
    assert cancelled.cancelled
    assert cancelled.changed == frozenset()
    rejected = read_news([event(1, "rejected", 3, worker="w1", reason="unknown")], [3])
    assert rejected.rejected is not None
    assert rejected.rejected.fields["worker"] == "w1"


def test_a_study_event_other_than_cancel_is_no_news() -> None:
    assert not read_news([event(1, "study", state="complete")], []).cancelled


# -- what to send again ------------------------------------------------------------------------


def test_a_trial_back_in_the_queue_is_sent_again_once() -> None:
    running = replace(queued(0, 0.0), status=TrialStatus.RUNNING)
    requeued = replace(queued(0, 0.0), attempt=2)
    assert must_resend(running, requeued)  # the reaper or its worker handed it back
    assert must_resend(queued(0, 0.0), requeued)  # a new attempt while the loop saw it queued
    assert not must_resend(requeued, requeued)  # already sent for this attempt
    assert not must_resend(running, replace(running, status=TrialStatus.COMPLETE))


def test_a_message_is_lost_only_after_a_lease_of_waiting_and_a_lease_since_it_was_sent() -> None:
    trials = [queued(0, queued_at=100.0), queued(1, queued_at=125.0), queued(2, queued_at=100.0)]
    sent_at = {(0, 1): 10.0, (1, 1): 10.0, (2, 1): 38.0}
    lost = lost_messages(trials, redis_now=131.0, lease=30.0, sent_at=sent_at, now=41.0)
    # trial 1 waited only 6 s; trial 2 was sent again 3 s ago
    assert [t.number for t in lost] == [0]


def test_a_trial_never_sent_from_this_loop_counts_as_sent_long_ago() -> None:
    # (the monotonic clock counts from boot: a trial never sent counts as sent at its zero)
    lost = lost_messages([queued(0, 10.0)], redis_now=100.0, lease=30.0, sent_at={}, now=900.0)
    assert [t.number for t in lost] == [0]


# -- when a round failed -----------------------------------------------------------------------


def search_with(scores: list[float | None]) -> CoarseToFine:
    spec = StudySpec.from_toml(study_toml(rounds=2, trials_per_round=2))
    search = CoarseToFine(spec)
    search.ask_next()
    for number, score in enumerate(scores):
        search.tell_trial(number, score)
    return search


def test_a_told_round_without_a_completed_trial_fails_the_study() -> None:
    assert empty_round(search_with([None, None]), [1]) == 1
    assert empty_round(search_with([None, 0.3]), [1]) is None


def test_a_round_still_running_has_not_failed_yet() -> None:
    assert empty_round(search_with([None]), [1]) is None


# -- when to warn that no worker consumes the queue --------------------------------------------


def test_warn_when_trials_wait_and_nothing_started_for_the_limit() -> None:
    assert idle_too_long(True, now=100.0, last_start=30.0, last_warning=0.0, limit=60.0)
    assert not idle_too_long(False, now=100.0, last_start=30.0, last_warning=0.0, limit=60.0)
    assert not idle_too_long(True, now=100.0, last_start=50.0, last_warning=0.0, limit=60.0)
    # once warned, not again before another limit has passed
    assert not idle_too_long(True, now=100.0, last_start=0.0, last_warning=70.0, limit=60.0)
