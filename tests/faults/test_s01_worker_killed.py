"""S1: a worker's main process is SIGKILLed mid-trial (node loss).

Promise: within the lease (grace) plus a reaper tick the attempt is found dead and the trial runs
again, once, as attempt 2 on the other worker; the study ends with exactly N trials. Celery's
own redelivery of the dead worker's message, which comes later (after the visibility timeout),
is recognised as a stale attempt and dropped, counted and logged.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.invariants import check_invariants, process_alive
from tests.faults.worker_rig import FAST_RESOURCES, LEASE, TICK, WorkerRig
from tests.harness import study_toml, wait_until
from tests.objectives import deterministic_score
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VISIBILITY = 10.0
"""Short enough to see Celery redeliver the dead worker's message within the test."""


def test_a_killed_workers_trial_runs_again_as_attempt_2_on_the_other_worker(
    worker_rig: WorkerRig,
) -> None:
    # Given two workers and a study of one 6 s trial
    worker_rig.start_workers(2, ["sleepy"], visibility_timeout=VISIBILITY)
    toml = study_toml(
        rounds=1, trials_per_round=1, options="{ duration = 6 }", resources=FAST_RESOURCES
    )
    coordinator = worker_rig.run_study(toml, visibility_timeout=VISIBILITY)
    store = worker_rig.store()

    # When the main process of the worker running it is SIGKILLed
    victim = worker_rig.owner(worker_rig.running(store, 0))
    survivor = next(w for w in worker_rig.workers if w is not victim)
    orphan = worker_rig.child_pid(store, 0)
    killed_at = worker_rig.redis_time()
    victim.signal(signal.SIGKILL)

    # Then its orphaned pool process notices and exits by itself (nobody would ack its work)
    wait_until(lambda: not process_alive(orphan), 10, what=f"orphan {orphan} to exit")

    # And the reaper finds the lease expired within lease + tick (+ slack for a loaded machine)
    outcome = coordinator.wait(60)
    assert outcome.state == "complete"
    detected = worker_rig.requeued_at(store, 0) - killed_at
    assert detected < LEASE + TICK + 2.0, f"detected after {detected:.2f}s"

    # And the trial ran again, once, as attempt 2 on the other worker, with the right score
    trial = store.trial(0)
    assert trial.status is TrialStatus.COMPLETE
    assert trial.attempt == 2
    assert worker_rig.owner(trial) is survivor
    assert trial.score == pytest.approx(deterministic_score(trial.params))
    assert trial.last_error == "lease expired (worker lost)"
    assert store.counters()["leases_expired"] == 1

    # And Celery's redelivery of the dead worker's message (after the visibility timeout) is
    # dropped as a stale attempt: counted, logged, and the record does not change
    def redelivery_dropped() -> bool:
        counters = store.counters()
        return counters["duplicate_deliveries"] + counters["stale_deliveries"] >= 1

    wait_until(redelivery_dropped, VISIBILITY + 20, 0.2, what="the stale redelivery")
    wait_until(
        lambda: "dropped a delivery of study 'demo' trial 0 attempt 1" in survivor.log(),
        10,
        what="the dropped delivery in the worker log",
    )
    assert store.trial(0) == trial

    worker_rig.stop()
    check_invariants(store, expected_trials=1, max_attempts=3, processes=list(worker_rig.workers))
