"""S5: a worker is shut down cold (SIGQUIT), or preempted (SIGTERM with REMAP_SIGTERM=SIGQUIT,
Celery's switch for platforms where SIGTERM means "going away now", such as spot instances).

Promise: the running trial goes back to the queue at once and runs again on another worker as
the next attempt; exactly one result is recorded.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.invariants import check_invariants, process_alive
from tests.faults.worker_rig import FAST_RESOURCES, LEASE, WorkerRig
from tests.harness import study_toml
from tests.objectives import deterministic_score
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.parametrize(
    ("sig", "env"),
    [
        pytest.param(signal.SIGQUIT, {}, id="SIGQUIT"),
        pytest.param(signal.SIGTERM, {"REMAP_SIGTERM": "SIGQUIT"}, id="SIGTERM-remapped"),
    ],
)
def test_a_cold_shutdown_hands_the_running_trial_back_at_once(
    worker_rig: WorkerRig, sig: signal.Signals, env: dict[str, str]
) -> None:
    # Given two workers and a study of one 6 s trial
    worker_rig.start_workers(2, ["sleepy"], env=env)
    toml = study_toml(
        rounds=1, trials_per_round=1, options="{ duration = 6 }", resources=FAST_RESOURCES
    )
    coordinator = worker_rig.run_study(toml)
    store = worker_rig.store()

    # When the worker running it is shut down cold
    stopping = worker_rig.owner(worker_rig.running(store, 0))
    other = next(w for w in worker_rig.workers if w is not stopping)
    child = worker_rig.child_pid(store, 0)
    stopped_at = worker_rig.redis_time()
    stopping.signal(sig)

    # Then the trial is handed back at once (not after the lease) and restarts on the other
    # worker as attempt 2
    retried = worker_rig.running(store, 0, attempt=2)
    assert (retried.queued_at or 0) - stopped_at < LEASE
    assert (retried.started_at or 0) - stopped_at < 5.0
    assert retried.last_error == "worker shut down (cold)"
    assert worker_rig.owner(retried) is other
    assert stopping.process is not None
    stopping.process.wait(30)
    assert not process_alive(child)

    # And exactly one result is recorded, from attempt 2
    assert coordinator.wait(60).state == "complete"
    trial = store.trial(0)
    assert trial.status is TrialStatus.COMPLETE
    assert trial.attempt == 2
    assert trial.score == pytest.approx(deterministic_score(trial.params))
    assert store.counters()["workers_lost"] == 1
    assert store.counters()["leases_expired"] == 0

    worker_rig.stop()
    check_invariants(store, expected_trials=1, max_attempts=3, processes=list(worker_rig.workers))
