"""S2: the pool process running a trial is SIGKILLed (the OOM killer), its worker survives.

Promise: the worker's main process hands the attempt back at once (no waiting for the lease),
counted as an attempt. A trial whose process dies every time is FAILED with reason
"worker lost (signal 9)" after `max_attempts`; the round still completes, and nothing loops
forever (Celery alone requeues such a message without end).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import FAST_RESOURCES, LEASE, PREFIX, WorkerRig
from tests.harness import study_toml, wait_until
from tests.objectives import deterministic_score
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def transport_is_empty(worker_rig: WorkerRig) -> bool:
    """No message waits in the queue and none is delivered but unacknowledged."""
    queued = worker_rig.client.llen(f"{PREFIX}trials.cpu")
    unacked = worker_rig.client.hlen(f"{PREFIX}unacked")
    return int(queued) == 0 and int(unacked) == 0


def test_a_trial_whose_process_was_killed_once_is_retried_and_succeeds(
    worker_rig: WorkerRig,
) -> None:
    # Given two workers and a study of one 4 s trial
    worker_rig.start_workers(2, ["sleepy"])
    toml = study_toml(
        rounds=1, trials_per_round=1, options="{ duration = 4 }", resources=FAST_RESOURCES
    )
    coordinator = worker_rig.run_study(toml)
    store = worker_rig.store()

    # When the pool process running it is SIGKILLed, once
    worker_rig.running(store, 0)
    killed_at = worker_rig.redis_time()
    os.kill(worker_rig.child_pid(store, 0), signal.SIGKILL)

    # Then the worker hands the attempt back at once (well before the lease would expire)
    retried = worker_rig.running(store, 0, attempt=2)
    assert (retried.queued_at or 0) - killed_at < LEASE
    assert retried.last_error == "worker lost (signal 9)"

    # And attempt 2 completes with the right score; both workers are still up
    assert coordinator.wait(60).state == "complete"
    trial = store.trial(0)
    assert trial.status is TrialStatus.COMPLETE
    assert trial.attempt == 2
    assert trial.score == pytest.approx(deterministic_score(trial.params))
    counters = store.counters()
    assert counters["workers_lost"] == 1
    assert counters["leases_expired"] == 0
    assert all(worker.alive() for worker in worker_rig.workers)

    # And Celery's own requeue of the lost message is dropped, leaving nothing behind
    wait_until(lambda: transport_is_empty(worker_rig), 20, 0.2, what="an empty queue")
    assert store.trial(0) == trial

    worker_rig.stop()
    check_invariants(store, expected_trials=1, max_attempts=3, processes=list(worker_rig.workers))


def test_a_trial_whose_process_always_dies_fails_after_max_attempts(worker_rig: WorkerRig) -> None:
    # Given two workers and a study whose objective kills its own process every time
    worker_rig.start_workers(2, ["kills_itself"])
    toml = study_toml(
        objective="kills_itself", rounds=1, trials_per_round=2, resources=FAST_RESOURCES
    )

    # When the study runs
    coordinator = worker_rig.run_study(toml)

    # Then each trial is FAILED as "worker lost (signal 9)" after exactly max_attempts (3), the
    # round completes, and the study stops because no trial of the round completed
    outcome = coordinator.wait(45)
    assert outcome.state == "failed"
    assert outcome.message == "round 1: 0 completed trials"
    store = worker_rig.store()
    for trial in store.trials():
        assert trial.status is TrialStatus.FAILED
        assert trial.attempt == 3
        assert trial.error == "worker lost (signal 9)"
    assert store.counters()["workers_lost"] == 6

    # And nothing loops: the messages Celery requeued are dropped, the queue drains, no trial
    # starts again, and both workers are still up
    wait_until(lambda: transport_is_empty(worker_rig), 20, 0.2, what="an empty queue")
    assert all(worker.alive() for worker in worker_rig.workers)
    started = [
        fields
        for _, fields in store.client.xrange(store.keys.events)
        if fields.get("type") == "started"
    ]
    assert len(started) == 6

    worker_rig.stop()
    check_invariants(store, expected_trials=2, max_attempts=3, processes=list(worker_rig.workers))
