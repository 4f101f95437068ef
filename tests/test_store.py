"""The study store's contract, run on fakeredis and on a real redis-server alike."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any

import pytest
import redis

from zoomtune.common.errors import LeaseLost, StoreError, StudyExists, StudyLocked, StudyWiped
from zoomtune.common.store import StudyStore
from zoomtune.common.store_records import CoordinatorLock, Reported, Revision, StartOutcome
from zoomtune.common.trial import Rung, TrialResult, TrialStatus, Verdict

SPEC = {"study": {"name": "demo"}, "space": {"x": {"type": "float", "low": 0, "high": 1}}}


def open_study(store: StudyStore, max_attempts: int = 3) -> tuple[CoordinatorLock, str]:
    lock = store.acquire(ttl=30)
    epoch = store.create(lock, SPEC, max_attempts=max_attempts)
    return lock, epoch


def write_round(store: StudyStore, number: int = 1, n: int = 3) -> list[int]:
    lock, epoch = open_study(store)
    record = store.write_round(
        lock, epoch, number, {"x": [0, 1]}, [{"x": i / 10} for i in range(n)]
    )
    return list(record.trial_numbers)


def start(
    store: StudyStore,
    trial: int,
    attempt: int = 1,
    token: str = "t1",
    pid: int = 1,
    lease: float = 30.0,
) -> bool:
    outcome = store.start(
        trial,
        attempt,
        token,
        payload=honest_payload(store, trial),
        worker="w1@host",
        host="host",
        device="cpu",
        pid=pid,
        lease=lease,
    )
    return outcome.ok


def honest_payload(store: StudyStore, trial: int) -> dict[str, Any]:
    """What the coordinator's message for `trial` says about it: its stored params."""
    found = store.trials([trial])
    return {"params": dict(found[0].params) if found else {}}


class RepliesLost(StudyStore):
    """The same study through a store whose every script runs twice and answers the second
    time: what redis-py does when a script's reply was lost (it sends the call again)."""

    def __init__(self, store: StudyStore) -> None:
        super().__init__(store.client, store.keys.prefix, store.study)

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        super()._run(script, keys, args)
        return super()._run(script, keys, args)


def start_with(store: StudyStore, trial: int, params: dict[str, Any], token: str) -> StartOutcome:
    return store.start(
        trial,
        1,
        token,
        payload={"params": params},
        worker="w1@host",
        host="host",
        device="cpu",
        pid=1,
        lease=30.0,
    )


class TestStudyLock:
    def test_a_second_coordinator_is_refused_with_the_holder_named(self, store: StudyStore) -> None:
        store.acquire(ttl=30, owner="node-a:4242")
        with pytest.raises(StudyLocked, match="node-a:4242"):
            store.acquire(ttl=30, owner="node-b:77")

    def test_a_released_lock_can_be_taken_again(self, store: StudyStore) -> None:
        lock = store.acquire(ttl=30)
        store.release(lock)
        store.acquire(ttl=30, owner="node-b:77")

    def test_a_lock_left_by_a_dead_local_process_is_taken_over(self, store: StudyStore) -> None:
        dead = subprocess.Popen(["true"])
        dead.wait()
        store.acquire(ttl=30, owner=f"{socket.gethostname()}:{dead.pid}")
        store.acquire(ttl=30)

    def test_a_lock_held_by_a_live_local_process_is_not_taken_over(self, store: StudyStore) -> None:
        store.acquire(ttl=30, owner=f"{socket.gethostname()}:{os.getpid()}")
        with pytest.raises(StudyLocked):
            store.acquire(ttl=30, owner="elsewhere:1")

    def test_a_coordinator_whose_lock_was_taken_cannot_write(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        store.client.set(store.keys.lock, "other-token other:1")
        with pytest.raises(LeaseLost):
            store.renew(lock, epoch)
        with pytest.raises(LeaseLost):
            store.write_round(lock, epoch, 1, {}, [{"x": 0.5}])
        with pytest.raises(LeaseLost):
            store.reap(lock, epoch)

    def test_renewing_retakes_an_expired_lock_nobody_else_took(self, store: StudyStore) -> None:
        lock = store.acquire(ttl=0.05)
        epoch = store.create(lock, SPEC, max_attempts=3)
        time.sleep(0.1)
        store.renew(lock, epoch)
        with pytest.raises(StudyLocked):
            store.acquire(ttl=30, owner="other:1")

    def test_a_paused_coordinator_learns_another_ran_the_study_meanwhile(
        self, store: StudyStore
    ) -> None:
        # Given a coordinator whose lock expired while it was paused
        lock = store.acquire(ttl=0.05, owner="node-a:1")
        epoch = store.create(lock, SPEC, max_attempts=3)
        time.sleep(0.1)
        # When another coordinator took the study over, and finished and released it
        other = store.acquire(ttl=30, owner="node-b:2")
        assert store.create(other, SPEC, max_attempts=3) == epoch
        store.release(other)
        # Then the first one cannot take the lock back by renewing it, nor write
        with pytest.raises(LeaseLost):
            store.renew(lock, epoch)
        with pytest.raises(LeaseLost):
            store.write_round(lock, epoch, 1, {}, [{"x": 0.5}])
        assert store.meta()["coordinator"] == other.value


class TestStudyRecord:
    def test_opening_the_same_study_again_keeps_its_epoch(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        assert store.create(lock, SPEC, max_attempts=3) == epoch

    def test_a_different_spec_under_the_same_name_is_refused(self, store: StudyStore) -> None:
        lock, _ = open_study(store)
        with pytest.raises(StudyExists, match="different specification"):
            store.create(lock, {**SPEC, "search": {"rounds": 9}}, max_attempts=3)

    def test_a_wiped_study_is_detected(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        store.client.flushall()
        with pytest.raises(StudyWiped):
            store.reap(lock, epoch)
        with pytest.raises(StudyWiped):
            store.renew(lock, epoch)


class TestRounds:
    def test_trials_are_numbered_consecutively_across_rounds(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        first = store.write_round(lock, epoch, 1, {"x": [0, 1]}, [{"x": 0.1}, {"x": 0.2}])
        second = store.write_round(lock, epoch, 2, {"x": [0, 0.5]}, [{"x": 0.3}])
        assert list(first.trial_numbers) == [0, 1]
        assert list(second.trial_numbers) == [2]
        assert [r.number for r in store.rounds()] == [1, 2]
        assert second.box == {"x": [0, 0.5]}

    def test_new_trials_are_queued_as_attempt_one(self, store: StudyStore) -> None:
        numbers = write_round(store)
        trials = store.trials(numbers)
        assert [t.status for t in trials] == [TrialStatus.QUEUED] * 3
        assert [t.attempt for t in trials] == [1, 1, 1]
        assert [t.params for t in trials] == [{"x": 0.0}, {"x": 0.1}, {"x": 0.2}]
        assert all(t.queued_at is not None for t in trials)

    def test_a_written_round_tells_when_its_trials_were_queued(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        record = store.write_round(lock, epoch, 1, {}, [{"x": 0.1}, {"x": 0.2}])
        assert [t.queued_at for t in store.trials(record.trial_numbers)] == [record.queued_at] * 2

    def test_a_round_is_written_once_and_never_resampled(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        first = store.write_round(lock, epoch, 1, {}, [{"x": 0.1}])
        again = store.write_round(lock, epoch, 1, {}, [{"x": 0.9}, {"x": 0.8}])
        assert (again.number, again.trial_numbers, again.box) == (1, range(0, 1), {})
        assert first.queued_at is not None
        assert again.queued_at is None  # not written now: the caller reads its trials back
        assert store.trial(0).params == {"x": 0.1}
        assert store.meta()["trials"] == "1"

    def test_a_rounds_rungs_are_stored_with_each_trial_as_canonical_json(
        self, store: StudyStore
    ) -> None:
        lock, epoch = open_study(store)
        rungs = (Rung(1, 0.25), Rung(3, 0.5))
        record = store.write_round(lock, epoch, 1, {}, [{"x": 0.1}, {"x": 0.2}], rungs)
        assert record.rungs == rungs
        assert [t.rungs for t in store.trials(record.trial_numbers)] == [rungs, rungs]
        assert store.client.hget(store.keys.trial(0), "rungs") == "[[1,0.25],[3,0.5]]"
        assert store.round(1).rungs == rungs
        plain = store.write_round(lock, epoch, 2, {}, [{"x": 0.3}])
        assert (plain.rungs, store.trial(2).rungs, store.round(2).rungs) == ((), (), ())


class TestAttempts:
    def test_the_first_delivery_starts_the_trial(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        assert start(store, n)
        trial = store.trial(n)
        assert trial.status is TrialStatus.RUNNING
        assert (trial.worker, trial.host, trial.device) == ("w1@host", "host", "cpu")
        assert trial.started_at is not None

    def test_a_second_delivery_of_a_running_attempt_is_dropped(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        assert start(store, n, token="first")
        assert not start(store, n, token="second")
        assert store.counters()["duplicate_deliveries"] == 1

    def test_starting_is_idempotent_for_the_same_token(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        assert start(store, n, token="same")
        assert start(store, n, token="same")
        assert store.counters()["duplicate_deliveries"] == 0

    def test_unknown_trials_and_future_attempts_are_refused(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        assert not start(store, 999)
        assert not start(store, n, attempt=2)
        assert store.counters()["forged_messages"] == 2

    def test_a_message_with_other_params_is_a_forgery_and_changes_nothing(
        self, store: StudyStore
    ) -> None:
        [n, *_] = write_round(store)  # trial n stores x = 0.0
        after = store.last_event_id()
        outcome = start_with(store, n, {"x": 0.3}, token="forger")
        assert (outcome.ok, outcome.reason, outcome.mismatch) == (False, "forged", "params")
        trial = store.trial(n)
        assert (trial.status, trial.attempt, trial.started_at) == (TrialStatus.QUEUED, 1, None)
        assert store.events(after, block=0.01) == []
        assert store.counters()["forged_messages"] == 1
        # The honest message still starts it
        assert start_with(store, n, {"x": 0.0}, token="honest").ok

    def test_a_forged_message_for_a_running_trial_leaves_the_attempt_alone(
        self, store: StudyStore
    ) -> None:
        [_, n, *_] = write_round(store)  # trial n stores x = 0.1
        assert start(store, n, token="honest")
        assert start_with(store, n, {"x": 0.2}, token="honest").reason == "forged"
        counters = store.counters()
        assert (counters["forged_messages"], counters["duplicate_deliveries"]) == (1, 0)
        assert store.trial(n).status is TrialStatus.RUNNING
        assert store.finish(n, 1, "honest", TrialResult.complete(0.5)) == "ok"

    def test_params_are_compared_as_canonical_json(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        store.write_round(lock, epoch, 1, {}, [{"y": 3, "x": 0.1, "c": "relu", "b": True}])
        reordered = {"b": True, "c": "relu", "x": 0.1, "y": 3}
        assert start_with(store, 0, reordered, token="t").ok
        store.write_round(lock, epoch, 2, {}, [{"x": 0.1, "y": 3}])
        for other in ({"x": 0.1 + 1e-12, "y": 3}, {"x": 0.1, "y": "3"}, {"x": 0.1}):
            assert start_with(store, 1, other, token="t").reason == "forged", other

    def test_a_start_without_a_payload_is_refused(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        with pytest.raises(StoreError, match="payload"):
            store.start(
                n, 1, "t", payload={}, worker="w", host="h", device="cpu", pid=1, lease=30.0
            )
        assert store.trial(n).status is TrialStatus.QUEUED

    def test_the_result_of_the_current_attempt_is_recorded(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        assert store.finish(n, 1, "tok", TrialResult.complete(0.75)) == "ok"
        trial = store.trial(n)
        assert (trial.status, trial.score) == (TrialStatus.COMPLETE, 0.75)
        assert trial.finished_at is not None
        assert trial.duration is not None
        assert trial.duration >= 0

    def test_a_result_with_a_wrong_token_is_dropped(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        assert store.finish(n, 1, "forged", TrialResult.complete(99.0)) == "forged"
        assert store.trial(n).status is TrialStatus.RUNNING
        assert store.counters()["forged_results"] == 1

    def test_the_first_terminal_state_wins(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        store.finish(n, 1, "tok", TrialResult.complete(0.5))
        assert store.finish(n, 1, "other", TrialResult.failed("late")) == "finished"
        assert store.finish(n, 1, "tok", TrialResult.complete(0.5)) == "ok"  # a retried call
        trial = store.trial(n)
        assert (trial.status, trial.score, trial.error) == (TrialStatus.COMPLETE, 0.5, None)
        assert store.counters()["late_results"] == 1

    def test_a_result_for_an_unknown_trial_changes_nothing(self, store: StudyStore) -> None:
        write_round(store)
        assert store.finish(42, 1, "tok", TrialResult.complete(1.0)) == "unknown_trial"
        assert store.meta()["trials"] == "3"

    def test_a_result_for_a_study_redis_lost_writes_nothing(self, store: StudyStore) -> None:
        # Given a worker still running a trial of a study that a volatile Redis lost
        write_round(store)
        store.client.flushall()
        # Then its result is refused without creating any key of the study
        assert store.finish(0, 1, "tok", TrialResult.complete(1.0)) == "unknown_study"
        assert list(store.client.scan_iter()) == []

    def test_intermediate_values_are_kept_only_from_the_owner(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        assert store.report(n, 1, "tok", 1, 0.5).owned
        assert not store.report(n, 1, "forged", 2, 9.0).owned
        assert store.reports(n) == [(1, 0.5)]

    def test_a_pruned_result_records_its_last_step_and_value_without_a_score(
        self, store: StudyStore
    ) -> None:
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        assert store.finish(n, 1, "tok", TrialResult.pruned((3, 0.125)), retry=True) == "ok"
        trial = store.trial(n)
        assert (trial.status, trial.score, trial.error) == (TrialStatus.PRUNED, None, None)
        assert (trial.last_step, trial.last_value, trial.attempt) == (3, 0.125, 1)

    def test_a_pruned_result_is_fenced_like_any_other(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        assert store.finish(n, 1, "forged", TrialResult.pruned((1, 0.0))) == "forged"
        assert store.finish(n, 2, "tok", TrialResult.pruned((1, 0.0))) == "stale"
        store.finish(n, 1, "tok", TrialResult.complete(0.5))
        assert store.finish(n, 1, "late", TrialResult.pruned((1, 0.0))) == "finished"
        trial = store.trial(n)
        assert (trial.status, trial.last_step) == (TrialStatus.COMPLETE, None)

    def test_curves_of_many_trials_are_read_at_once_in_report_order(
        self, store: StudyStore
    ) -> None:
        [a, b, c] = write_round(store)
        for n, token in ((a, "ta"), (b, "tb")):
            start(store, n, token=token)
            store.report(n, 1, token, 2, 0.5)
            store.report(n, 1, token, 1, 0.25)
        assert store.all_reports([c, a]) == {a: [(2, 0.5), (1, 0.25)]}
        assert store.all_reports([]) == {}


class TestLeases:
    def test_an_expired_lease_sends_the_trial_back_as_the_next_attempt(
        self, store: StudyStore
    ) -> None:
        lock, epoch = open_study(store)
        [n] = store.write_round(lock, epoch, 1, {}, [{"x": 0.1}]).trial_numbers
        start(store, n, token="tok", lease=0.05)
        time.sleep(0.15)
        [requeued] = store.reap(lock, epoch)
        assert (requeued.trial, requeued.outcome, requeued.attempt) == (n, "requeued", 2)
        trial = store.trial(n)
        assert (trial.status, trial.attempt) == (TrialStatus.QUEUED, 2)
        # The dead attempt's late result is dropped, the new attempt's counts.
        assert store.finish(n, 1, "tok", TrialResult.complete(1.0)) == "stale"
        assert start(store, n, attempt=2, token="tok2")
        assert store.finish(n, 2, "tok2", TrialResult.complete(2.0)) == "ok"
        assert store.trial(n).score == 2.0

    def test_a_heartbeat_keeps_the_lease_alive(self, store: StudyStore) -> None:
        lock, epoch = open_study(store)
        [n] = store.write_round(lock, epoch, 1, {}, [{"x": 0.1}]).trial_numbers
        start(store, n, token="tok", lease=0.2)
        for _ in range(4):
            time.sleep(0.08)
            assert store.heartbeat(n, 1, "tok", lease=0.2)
        assert store.reap(lock, epoch) == []
        assert not store.heartbeat(n, 1, "other", lease=0.2)

    def test_the_last_attempt_that_dies_fails_the_trial(self, store: StudyStore) -> None:
        lock = store.acquire(ttl=30)
        epoch = store.create(lock, SPEC, max_attempts=2)
        [n] = store.write_round(lock, epoch, 1, {}, [{"x": 0.1}]).trial_numbers
        for attempt in (1, 2):
            assert start(store, n, attempt=attempt, token=f"t{attempt}", lease=0.05)
            time.sleep(0.15)
            store.reap(lock, epoch)
        trial = store.trial(n)
        assert (trial.status, trial.attempt) == (TrialStatus.FAILED, 2)
        assert trial.error == "lease expired (worker lost)"
        assert store.counters()["leases_expired"] == 2


class TestHandBack:
    def test_a_worker_hands_back_the_attempt_its_process_ran(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, pid=123)
        assert store.abandon(n, 1, "host", 999, "worker lost") == "ignored"
        assert store.abandon(n, 1, "host", 123, "worker lost (signal 9)") == "requeued"
        trial = store.trial(n)
        assert (trial.status, trial.attempt) == (TrialStatus.QUEUED, 2)

    def test_a_failure_is_retried_only_when_asked(self, store: StudyStore) -> None:
        [a, b, _] = write_round(store)
        start(store, a, token="ta")
        start(store, b, token="tb")
        assert store.finish(a, 1, "ta", TrialResult.failed("boom")) == "ok"
        assert store.finish(b, 1, "tb", TrialResult.failed("boom"), retry=True) == "requeued"
        assert store.trial(a).status is TrialStatus.FAILED
        assert (store.trial(b).status, store.trial(b).attempt) == (TrialStatus.QUEUED, 2)

    def test_a_timed_out_attempt_fails_without_retry(self, store: StudyStore) -> None:
        [n, *_] = write_round(store)
        start(store, n, pid=7)
        assert store.fail_attempt(n, 1, "host", 7, "timeout after 3s") == "ok"
        trial = store.trial(n)
        assert (trial.status, trial.error) == (TrialStatus.FAILED, "timeout after 3s")


class TestRejection:
    def test_a_worker_without_the_objective_marks_the_queued_attempt_and_leaves_it_queued(
        self, store: StudyStore
    ) -> None:
        [n, *_] = write_round(store)
        after = store.last_event_id()
        payload = honest_payload(store, n)
        reason = "objective 'obj' is not registered"
        assert store.reject(n, 1, "w1@host", reason, payload=payload) == "ok"
        trial = store.trial(n)
        assert (trial.status, trial.attempt) == (TrialStatus.QUEUED, 1)
        assert trial.last_error == "objective 'obj' is not registered"
        [event] = store.events(after, block=0.1)
        assert (event.type, event.trial, event.attempt) == ("rejected", n, 1)
        assert event.fields["worker"] == "w1@host"
        assert event.fields["reason"] == "objective 'obj' is not registered"
        assert start(store, n)  # a worker that has the objective may still run it

    def test_only_the_current_queued_attempt_of_a_running_study_can_be_rejected(
        self, store: StudyStore
    ) -> None:
        [a, b, c] = write_round(store)
        start(store, a)
        after = store.last_event_id()

        def reject(n: int, attempt: int) -> str:
            return store.reject(n, attempt, "w", "no objective", payload=honest_payload(store, n))

        assert reject(a, 1) == "ignored"  # running
        assert reject(b, 2) == "ignored"  # not its attempt
        assert reject(99, 1) == "ignored"  # no such trial
        store.cancel("stop")
        assert reject(c, 1) == "ignored"  # cancelled study
        events = store.events(after, block=0.05)
        assert [e.type for e in events] == ["study", "finished", "finished"]
        assert store.trial(b).last_error is None

    def test_a_forged_message_cannot_reject_the_trial(self, store: StudyStore) -> None:
        # Given a queued trial; a message for its attempt with params it does not have
        [n, *_] = write_round(store)
        after = store.last_event_id()

        # When a worker without the objective rejects it
        outcome = store.reject(n, 1, "w", "no objective", payload={"params": {"evil": "yes"}})

        # Then nothing is recorded and no event stops the coordinator; the forgery is counted
        assert outcome == "forged"
        assert store.trial(n).last_error is None
        assert store.events(after, block=0.05) == []
        assert store.counters()["forged_messages"] == 1


class TestEvents:
    def test_every_transition_is_an_event_in_order(self, store: StudyStore) -> None:
        start_id = store.last_event_id()
        [n, *_] = write_round(store)
        start(store, n, token="tok")
        store.finish(n, 1, "tok", TrialResult.complete(1.0))
        events = store.events(start_id, block=0.1)
        assert [(e.type, e.trial) for e in events] == [
            ("round", None),
            ("started", n),
            ("finished", n),
        ]
        assert store.events(events[-1].id, block=0.05) == []


def test_a_real_redis_keeps_every_key_under_the_prefix(real_client: redis.Redis) -> None:
    store = StudyStore(real_client, "zoomtune:", "demo")
    [n, *_] = write_round(store)
    start(store, n, token="tok")
    store.finish(n, 1, "tok", TrialResult.complete(1.0))
    assert all(key.startswith("zoomtune:") for key in real_client.keys("*"))


class TestRoundsWrittenAhead:
    """Speculation: a provisional round is revised, trial by trial, until it is made final."""

    def write_ahead(self, store: StudyStore, max_attempts: int = 3) -> tuple[Any, str, list[int]]:
        lock, epoch = open_study(store, max_attempts=max_attempts)
        params = [{"x": 0.1}, {"x": 0.2}, {"x": 0.3}]
        record = store.write_round(lock, epoch, 1, {"x": [0, 1]}, params, provisional=True)
        assert record.provisional
        assert store.round(1).provisional
        return lock, epoch, list(record.trial_numbers)

    def test_only_the_trials_that_changed_are_queued_again_as_their_next_attempt(
        self, store: StudyStore
    ) -> None:
        # Given a round written ahead: trial a finished, trial b running, trial c queued
        lock, epoch, [a, b, c] = self.write_ahead(store)
        start(store, a, token="ta")
        store.report(a, 1, "ta", 1, 0.5)
        assert store.finish(a, 1, "ta", TrialResult.complete(0.5)) == "ok"
        start(store, b, token="tb")
        store.report(b, 1, "tb", 1, 0.7)

        # When it is revised: a and b get other params, c keeps its own
        revised = store.revise_round(
            lock, epoch, 1, {"x": [0, 0.5]}, [{"x": 0.01}, {"x": 0.02}, {"x": 0.3}]
        )

        # Then a and b are queued again as attempt 2, without their results or reports
        assert (revised.again, revised.judge) == ((a, b), ())
        for n, x in ((a, 0.01), (b, 0.02)):
            trial = store.trial(n)
            assert (trial.status, trial.attempt, dict(trial.params)) == (
                TrialStatus.QUEUED,
                2,
                {"x": x},
            )
            assert (trial.score, trial.started_at, trial.finished_at) == (None, None, None)
            assert store.reports(n) == []
        assert store.trial(c).attempt == 1
        assert store.round(1).box == {"x": [0, 0.5]}
        assert store.counters()["revised_trials"] == 2
        # And b's running attempt lost the trial: no heartbeat, report or result of it counts
        assert not store.heartbeat(b, 1, "tb", lease=30)
        assert not store.report(b, 1, "tb", 2, 0.8).owned
        assert store.finish(b, 1, "tb", TrialResult.complete(0.8)) != "ok"
        assert store.trial(b).status is TrialStatus.QUEUED

    def test_a_message_sent_before_a_revision_is_stale_not_forged(self, store: StudyStore) -> None:
        lock, epoch, [a, *_] = self.write_ahead(store)
        store.revise_round(lock, epoch, 1, {}, [{"x": 0.9}, {"x": 0.2}, {"x": 0.3}])

        outcome = start_with(store, a, {"x": 0.1}, token="old")  # attempt 1's payload

        assert not outcome.ok
        assert store.trial(a).status is TrialStatus.QUEUED
        assert (store.counters()["stale_deliveries"], store.counters()["forged_messages"]) == (1, 0)

    def test_other_rungs_alone_change_queued_and_started_trials_in_place(
        self, store: StudyStore
    ) -> None:
        lock, epoch, [a, b, c] = self.write_ahead(store)
        params = [dict(t.params) for t in store.trials([a, b, c])]
        start(store, a, token="ta")
        assert store.revise_round(lock, epoch, 1, {}, params, provisional=True).again == ()

        # Other rungs: no trial is sent again; each gets them in place
        new = (Rung(1, 0.5),)
        revised = store.revise_round(lock, epoch, 1, {}, params, new)
        assert (revised.again, revised.judge) == ((), (a, b, c))
        assert store.trial(a).status is TrialStatus.RUNNING
        assert [t.rungs for t in store.trials([a, b, c])] == [new] * 3
        assert [t.attempt for t in store.trials([a, b, c])] == [1, 1, 1]
        # ... the started one's worker learns them with its next report, and is to be judged
        assert store.report(a, 1, "ta", 1, 0.4) == Reported(True, new)
        assert a in store.to_judge([a, b, c])

        # When a worker takes a queued one's message, sent with the old rungs (a message's
        # rungs are not part of what the start compares: TrialMessage.payload)
        started = start_with(store, b, params[1], token="tb")

        # Then it starts on the new rungs from its first step: nothing left to judge
        assert (started.ok, started.rungs) == (True, new)
        assert store.to_judge([b]) == set()
        assert store.report(b, 1, "tb", 1, 0.6) == Reported(True, None)
        # ... and once b finished, its old message again is a duplicate, not a forgery
        assert store.finish(b, 1, "tb", TrialResult.complete(0.6)) == "ok"
        assert start_with(store, b, params[1], token="tb2").reason == "finished"
        assert store.counters()["forged_messages"] == 0

    def test_a_revision_run_again_after_its_reply_was_lost_gives_the_first_answer(
        self, store: StudyStore
    ) -> None:
        # Given a round run ahead, and a store whose scripts run twice and answer the second
        # time: redis-py sends a call again when its reply was lost
        lock, epoch, [a, b, c] = self.write_ahead(store)
        lossy = RepliesLost(store)
        start(store, b, token="tb")

        # When the round is revised (a's params change, b's rungs) and made final
        revised = [{"x": 0.9}, {"x": 0.2}, {"x": 0.3}]
        provisional = lossy.revise_round(lock, epoch, 1, {}, revised, (Rung(1, 0.5),), True)
        final = lossy.revise_round(lock, epoch, 1, {}, revised, (Rung(1, 0.5),))

        # Then the loop hears what the first runs did: a sent again (once), b and c given the
        # new rungs in place
        assert provisional == Revision(again=(a,), judge=(b, c))
        assert final == Revision((), ())
        assert store.trial(a).attempt == 2
        assert not store.round(1).provisional

    def test_a_verdict_run_again_after_its_reply_was_lost_gives_the_first_answer(
        self, store: StudyStore
    ) -> None:
        # Given finished trials a and b of a round whose rungs changed since they ran
        lock, epoch, [a, b, _c] = self.write_ahead(store)
        for n, token in ((a, "ta"), (b, "tb")):
            start(store, n, token=token)
            store.report(n, 1, token, 1, 0.1)
            assert store.finish(n, 1, token, TrialResult.complete(0.1)) == "ok"
        params = [dict(t.params) for t in store.trials([a, b, _c])]
        store.revise_round(lock, epoch, 1, {}, params, (Rung(1, 0.5),))
        lossy = RepliesLost(store)

        # When verdicts are applied through a store whose scripts run twice
        kept = lossy.settle(lock, epoch, a, 1, Verdict("keep"))
        again = lossy.settle(lock, epoch, b, 1, Verdict("again"))

        # Then both read as applied, and b was sent again once
        assert (kept, again) == (True, True)
        assert (store.trial(b).status, store.trial(b).attempt) == (TrialStatus.QUEUED, 2)

    def test_runs_of_other_params_do_not_use_up_the_new_params_attempts(
        self, store: StudyStore
    ) -> None:
        # Given a study allowing 2 runs, a trial run ahead whose first params lost a worker
        lock, epoch, [a, *_] = self.write_ahead(store, max_attempts=2)
        assert start(store, a, attempt=1, token="t1", lease=0.05)
        time.sleep(0.15)
        store.reap(lock, epoch)
        # When it is sent again with other params, and their first run loses a worker too
        store.revise_round(lock, epoch, 1, {}, [{"x": 0.9}, {"x": 0.2}, {"x": 0.3}])
        assert start(store, a, attempt=3, token="t3", lease=0.05)
        time.sleep(0.15)
        [requeued] = store.reap(lock, epoch)
        # Then the new params get their second run, as without speculation
        assert requeued.outcome == "requeued"

    def test_revisions_are_not_runs_that_max_attempts_limits(self, store: StudyStore) -> None:
        # Given a study allowing 2 runs of a trial, and a trial revised twice
        lock, epoch, [a, *_] = self.write_ahead(store, max_attempts=2)
        for x in (0.5, 0.6):
            params = [{"x": x}, {"x": 0.2}, {"x": 0.3}]
            store.revise_round(lock, epoch, 1, {}, params, provisional=True)
        assert store.trial(a).attempt == 3

        # When its worker is lost once, then again
        assert start(store, a, attempt=3, token="t3", lease=0.05)
        time.sleep(0.15)
        [first] = store.reap(lock, epoch)
        assert start(store, a, attempt=4, token="t4", lease=0.05)
        time.sleep(0.15)
        [second] = store.reap(lock, epoch)

        # Then it ran twice before it failed, as without the revisions
        assert (first.outcome, second.outcome) == ("requeued", TrialStatus.FAILED)

    def test_a_final_round_is_revised_no_more(self, store: StudyStore) -> None:
        lock, epoch, numbers = self.write_ahead(store)
        params = [dict(t.params) for t in store.trials(numbers)]
        store.revise_round(lock, epoch, 1, {}, params)  # made final
        assert not store.round(1).provisional
        with pytest.raises(StoreError, match="not a provisional round"):
            store.revise_round(lock, epoch, 1, {}, [{"x": 0.9}, *params[1:]])
        with pytest.raises(StoreError, match="not a provisional round"):
            store.revise_round(lock, epoch, 1, {}, params, provisional=True)
        plain = store.write_round(lock, epoch, 2, {}, [{"x": 0.5}])
        with pytest.raises(StoreError, match="not a provisional round"):
            store.revise_round(lock, epoch, plain.number, {}, [{"x": 0.6}])

    def test_a_coordinator_that_lost_the_lock_cannot_revise(self, store: StudyStore) -> None:
        lock, epoch, _numbers = self.write_ahead(store)
        store.release(lock)
        store.acquire(ttl=30, owner="other:1")
        with pytest.raises(LeaseLost):
            store.revise_round(lock, epoch, 1, {}, [{"x": 0.0}] * 3)

    def test_a_verdict_settles_a_finished_trial_to_judge(self, store: StudyStore) -> None:
        # Given a round run ahead whose trials a, b, c ran with no rungs: a and b finished, c
        # still runs; then the round's rungs changed
        lock, epoch, [a, b, c] = self.write_ahead(store)
        for n, token in ((a, "ta"), (b, "tb"), (c, "tc")):
            start(store, n, token=token)
            for step in (1, 2, 3):
                store.report(n, 1, token, step, step / 10)
        assert store.finish(a, 1, "ta", TrialResult.complete(0.3)) == "ok"
        assert store.finish(b, 1, "tb", TrialResult.complete(0.3)) == "ok"
        params = [dict(t.params) for t in store.trials([a, b, c])]
        revised = store.revise_round(lock, epoch, 1, {}, params, (Rung(2, 0.5),))
        assert revised.judge == (a, b, c)

        # When the coordinator keeps a and runs b again; c, running, cannot be settled yet
        assert store.settle(lock, epoch, a, 1, Verdict("keep"))
        assert store.settle(lock, epoch, b, 1, Verdict("again"))
        assert not store.settle(lock, epoch, c, 1, Verdict("again"))

        # Then a is as it was, no longer to judge; b is queued again as attempt 2, with a fresh
        # budget of max_attempts, the new rungs and no reports; c runs on, still to judge
        assert (store.trial(a).status, store.trial(a).score) == (TrialStatus.COMPLETE, 0.3)
        trial = store.trial(b)
        assert (trial.status, trial.attempt, trial.rungs) == (
            TrialStatus.QUEUED,
            2,
            (Rung(2, 0.5),),
        )
        assert store.reports(b) == []
        assert store.trial(c).status is TrialStatus.RUNNING
        assert store.to_judge([a, b, c]) == {c}
        # And a verdict on a trial that is no longer to judge changes nothing
        assert not store.settle(lock, epoch, a, 1, Verdict("again"))
        assert store.trial(a).status is TrialStatus.COMPLETE
