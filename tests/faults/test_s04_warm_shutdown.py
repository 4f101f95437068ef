"""S4: a worker gets SIGTERM (warm shutdown) in the middle of a trial.

Promise: the worker takes no new trial, finishes the one it runs and records its result (no
re-run: the attempt stays 1), then exits 0; the next trial runs on the other worker.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import FAST_RESOURCES, WorkerRig
from tests.harness import study_toml
from tests.objectives import deterministic_score
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_sigterm_finishes_the_running_trial_and_stops_the_worker(worker_rig: WorkerRig) -> None:
    # Given two workers and a study of three 4 s trials
    worker_rig.start_workers(2, ["sleepy"])
    toml = study_toml(
        rounds=1, trials_per_round=3, options="{ duration = 4 }", resources=FAST_RESOURCES
    )
    coordinator = worker_rig.run_study(toml)
    store = worker_rig.store()

    # When the worker running trial 0 gets SIGTERM while both workers are busy
    stopping = worker_rig.owner(worker_rig.running(store, 0))
    other = next(w for w in worker_rig.workers if w is not stopping)
    worker_rig.running(store, 1)
    stopping.signal(signal.SIGTERM)

    # Then it finishes trial 0, records it as attempt 1, and exits 0
    assert stopping.process is not None
    assert stopping.process.wait(30) == 0
    first = store.trial(0)
    assert first.status is TrialStatus.COMPLETE
    assert first.attempt == 1
    assert worker_rig.owner(first) is stopping
    assert first.score == pytest.approx(deterministic_score(first.params))

    # And the next trial runs on the other worker; nothing was re-run or handed back
    assert coordinator.wait(60).state == "complete"
    assert worker_rig.owner(store.trial(2)) is other
    assert [t.attempt for t in store.trials()] == [1, 1, 1]
    assert sum(store.counters().values()) == 0
    assert "Warm shutdown" in stopping.log()

    worker_rig.stop()
    check_invariants(store, expected_trials=3, max_attempts=3, processes=list(worker_rig.workers))
