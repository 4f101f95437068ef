"""Determinism under a worker fault: with a deterministic objective, a study whose worker is
SIGKILLed mid-trial gives the same trials (params), scores and boxes, trial by trial, as the
same study undisturbed.

Round r's params depend only on the seed, r and round r's box, and the box only on the scores
of earlier rounds, told in trial order; a re-run attempt changes neither.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import FAST_RESOURCES, WorkerRig
from tests.harness import study_toml
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def study(name: str) -> str:
    return study_toml(
        name=name,
        seed=11,
        rounds=2,
        trials_per_round=4,
        options="{ duration = 1.0 }",
        resources=FAST_RESOURCES,
    )


def test_a_study_is_the_same_when_a_worker_is_killed_mid_trial(worker_rig: WorkerRig) -> None:
    # Given two workers, and a reference run of a study with seed 11, undisturbed
    worker_rig.start_workers(2, ["sleepy"])
    assert worker_rig.run_study(study("reference")).wait(60).state == "complete"

    # When the same study runs again and the worker running its trial 1 is SIGKILLed
    coordinator = worker_rig.run_study(study("faulted"))
    faulted = worker_rig.store("faulted")
    worker_rig.owner(worker_rig.running(faulted, 1)).signal(signal.SIGKILL)
    assert coordinator.wait(90).state == "complete"

    # Then trial 1 ran twice, yet every trial has the same params and score as in the
    # reference run, and every round sampled the same box
    reference = worker_rig.store("reference")
    assert faulted.trial(1).attempt == 2
    expected = [(t.number, dict(t.params), t.score) for t in reference.trials()]
    assert [(t.number, dict(t.params), t.score) for t in faulted.trials()] == expected
    assert all(t.status is TrialStatus.COMPLETE for t in faulted.trials())
    assert [r.box for r in faulted.rounds()] == [r.box for r in reference.rounds()]

    worker_rig.stop()
    for store in (reference, faulted):
        check_invariants(store, expected_trials=8, max_attempts=3, processes=worker_rig.workers)
