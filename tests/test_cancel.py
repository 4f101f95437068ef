"""Cancelling a study in the store: run on fakeredis and on a real redis-server alike."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from tests.test_store import open_study, start
from zoomtune.common.errors import StoreError, StudyCancelled, StudyNotFound
from zoomtune.common.store import CANCEL_BATCH, StudyStore
from zoomtune.common.store_records import CoordinatorLock
from zoomtune.common.trial import StudyState, TrialResult, TrialStatus

REASON = "cancelled by a test"


def three_trials(store: StudyStore, lease: float = 30.0) -> tuple[CoordinatorLock, str]:
    """A study with trials 0, 1, 2: trial 0 complete, trial 1 running, trial 2 queued."""
    lock, epoch = open_study(store)
    store.write_round(lock, epoch, 1, {"x": [0, 1]}, [{"x": 0.1}, {"x": 0.2}, {"x": 0.3}])
    assert start(store, 0, token="a")
    assert store.finish(0, 1, "a", TrialResult.complete(0.5)) == "ok"
    assert start(store, 1, token="b", lease=lease)
    return lock, epoch


def test_cancel_fails_the_queued_trials_and_leaves_the_running_one(store: StudyStore) -> None:
    three_trials(store)

    done = store.cancel(REASON)

    assert (done.trials_cancelled, done.trials_running, done.already) == (1, 1, False)
    assert store.meta()["state"] == "cancelled"
    assert store.meta()["message"] == REASON
    statuses = [(t.status, t.error) for t in store.trials()]
    assert statuses == [
        (TrialStatus.COMPLETE, None),
        (TrialStatus.RUNNING, None),
        (TrialStatus.FAILED, REASON),
    ]


def test_the_cancel_event_comes_before_the_trials_it_finished(store: StudyStore) -> None:
    three_trials(store)
    after = store.last_event_id()
    store.cancel(REASON)
    events = store.events(after, block=0.1)
    assert [(e.type, e.trial) for e in events] == [("study", None), ("finished", 2)]
    assert events[0].fields["state"] == "cancelled"


def test_a_worker_drops_the_message_of_a_cancelled_trial_without_counting_a_duplicate(
    store: StudyStore,
) -> None:
    three_trials(store)
    store.cancel(REASON)
    outcome = store.start(
        2,
        1,
        "late",
        payload={"params": {"x": 0.3}},
        worker="w",
        host="h",
        device="cpu",
        pid=9,
        lease=30,
    )
    assert (outcome.ok, outcome.reason) == (False, "study_cancelled")
    assert store.counters()["duplicate_deliveries"] == 0


def test_a_running_trial_may_finish_after_the_cancel(store: StudyStore) -> None:
    three_trials(store)
    store.cancel(REASON)
    assert store.finish(1, 1, "b", TrialResult.complete(0.25)) == "ok"
    assert store.trial(1).status is TrialStatus.COMPLETE
    assert store.trial(1).score == 0.25


def test_a_running_trial_handed_back_after_the_cancel_fails_instead_of_requeueing(
    store: StudyStore,
) -> None:
    three_trials(store)
    store.cancel(REASON)
    assert store.abandon(1, 1, "host", 1, "worker lost (signal 9)") == "failed"
    trial = store.trial(1)
    assert trial.status is TrialStatus.FAILED
    assert trial.error == "cancelled: the study was cancelled (worker lost (signal 9))"


def test_the_coordinator_cannot_write_to_a_cancelled_study(store: StudyStore) -> None:
    lock, epoch = three_trials(store)
    store.cancel(REASON)
    with pytest.raises(StudyCancelled, match=REASON):
        store.renew(lock, epoch)
    with pytest.raises(StudyCancelled):
        store.write_round(lock, epoch, 2, {}, [{"x": 0.5}])
    with pytest.raises(StudyCancelled):
        store.set_state(StudyState.COMPLETE, lock=lock)
    assert store.meta()["state"] == "cancelled"
    assert len(store.rounds()) == 1


def test_cancelling_again_cleans_up_a_running_trial_whose_lease_expired(
    store: StudyStore,
) -> None:
    # Given a cancelled study whose running trial's worker then vanished (its lease expired)
    three_trials(store, lease=0.2)
    store.cancel(REASON)
    time.sleep(0.4)

    # When it is cancelled again
    done = store.cancel("again")

    # Then the dead attempt is failed too, and nothing is left RUNNING
    assert (done.trials_cancelled, done.trials_running, done.already) == (1, 0, True)
    assert [t.status for t in store.trials()] == [
        TrialStatus.COMPLETE,
        TrialStatus.FAILED,
        TrialStatus.FAILED,
    ]
    assert store.client.scard(store.keys.running) == 0


def test_a_finished_or_unknown_study_cannot_be_cancelled(store: StudyStore) -> None:
    with pytest.raises(StudyNotFound):
        store.cancel(REASON)
    lock, _ = open_study(store)
    store.set_state(StudyState.COMPLETE, lock=lock)
    with pytest.raises(StoreError, match="already complete"):
        store.cancel(REASON)


def test_cancelling_many_queued_trials_runs_as_short_batches(fake_client: Any) -> None:
    # Given a study with 5,000 QUEUED trials
    store = StudyStore(fake_client, "zoomtune:", "big")
    lock, epoch = open_study(store)
    store.write_round(lock, epoch, 1, {"x": [0, 1]}, [{"x": i / 5000} for i in range(5000)])
    batches: list[tuple[int, int]] = []
    script = store._scripts.cancel_trials

    def counted(keys: list[str], args: list[Any]) -> Any:
        assert store.meta()["state"] == "cancelled"  # marked before the first batch
        batches.append((int(args[4]), int(args[5])))
        return script(keys=keys, args=args)

    store._scripts = replace(store._scripts, cancel_trials=counted)

    # When it is cancelled
    done = store.cancel(REASON)

    # Then no script call went through more than one batch of trials, together all of them
    assert CANCEL_BATCH == 500
    assert len(batches) == 10
    assert all(0 < last - first <= CANCEL_BATCH for first, last in batches)
    assert [n for first, last in batches for n in range(first, last)] == list(range(5000))
    # and the end result is that of one cancel: every trial failed with the reason
    assert (done.trials_cancelled, done.trials_running, done.already) == (5000, 0, False)
    trials = store.trials()
    assert {(t.status, t.error) for t in trials} == {(TrialStatus.FAILED, REASON)}
