"""S12: a trial hangs (a deadlock or an endless loop), its heartbeat possibly still alive.

Promise: the hard time limit stops it and the trial is FAILED with a timeout reason (not retried
by default), so it never holds up a round for longer than time limit x attempts; the round and
the study go on. If instead the heartbeat stops while the trial runs on, the lease expires and
the reaper re-runs the trial; the first attempt's late result is dropped.
"""

from __future__ import annotations

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import WorkerRig
from tests.harness import study_toml
from tests.objectives import deterministic_score
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIME_LIMIT = 'heartbeat = "0.5s"\nlease = "3s"\ntimeout = "3s"\nmax_attempts = 3'
"""A 3 s trial time limit: the soft limit at 3 s, the hard limit (which kills) at 8 s."""


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        pytest.param(
            "{ hang = [0] }", "timeout: the trial ran past its time limit", id="soft-limit"
        ),
        pytest.param(
            "{ hang = [0], ignore_soft_limit = true }",
            "timeout: killed at the 8s hard time limit",
            id="hard-limit",
        ),
    ],
)
def test_a_hung_trial_is_failed_at_its_time_limit_and_the_study_goes_on(
    worker_rig: WorkerRig, options: str, reason: str
) -> None:
    # Given two workers and a study of two rounds whose trial 0 hangs forever
    worker_rig.start_workers(2, ["hangs"])
    toml = study_toml(
        objective="hangs", rounds=2, trials_per_round=2, options=options, resources=TIME_LIMIT
    )

    # When the study runs
    outcome = worker_rig.run_study(toml).wait(60)

    # Then trial 0 is FAILED with the timeout reason after one attempt, and the study completes
    assert outcome.state == "complete"
    store = worker_rig.store()
    hung = store.trial(0)
    assert hung.status is TrialStatus.FAILED
    assert hung.error == reason
    assert hung.attempt == 1
    others = store.trials(range(1, 4))
    assert all(t.status is TrialStatus.COMPLETE for t in others)
    assert all(t.score == pytest.approx(deterministic_score(t.params)) for t in others)
    assert all(worker.alive() for worker in worker_rig.workers)

    worker_rig.stop()
    check_invariants(store, expected_trials=4, max_attempts=3, processes=list(worker_rig.workers))


def test_a_trial_whose_heartbeat_stopped_is_reaped_and_run_again(worker_rig: WorkerRig) -> None:
    # Given two workers and a study of one trial whose first attempt stops its own heartbeat
    # thread and then runs on for 6 s
    worker_rig.start_workers(2, ["stops_heartbeat"])
    toml = study_toml(
        objective="stops_heartbeat",
        rounds=1,
        trials_per_round=1,
        options="{ duration = 6 }",
        resources='heartbeat = "0.5s"\nlease = "3s"\ntimeout = "60s"\nmax_attempts = 3',
    )

    # When the study runs
    coordinator = worker_rig.run_study(toml)
    store = worker_rig.store()
    first = worker_rig.running(store, 0)

    # Then the reaper finds the lease expired and the other worker runs attempt 2
    assert coordinator.wait(60).state == "complete"
    trial = store.trial(0)
    assert trial.status is TrialStatus.COMPLETE
    assert trial.attempt == 2
    assert trial.last_error == "lease expired (worker lost)"
    assert trial.worker != first.worker
    assert store.counters()["leases_expired"] == 1

    # And the first attempt's result, which comes later, is dropped as stale
    first_worker = worker_rig.owner(first)
    wait_for = "result of study 'demo' trial 0 attempt 1 dropped (stale)"
    worker_rig.wait_for_log(first_worker, wait_for)
    assert store.counters()["stale_results"] == 1
    assert store.trial(0) == trial

    worker_rig.stop()
    check_invariants(store, expected_trials=1, max_attempts=3, processes=list(worker_rig.workers))
