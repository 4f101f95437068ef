"""Early stopping with real workers: the pruned set is a function of the seed, whatever the
number of workers, and survives a lost worker and a lease that expires mid-trial.

The `prunable` test objective reports a predictive learning curve at every step and asks
`trial.should_prune()` after a step's work; `PrunedRun.reference` is the same study run in this
process (rungs from the earlier rounds' curves, each trial stopped where `prunable` stops).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.process_rig import FAST_RESOURCES, ProcessRig, PrunedRun
from tests.faults.worker_rig import WorkerRig
from tests.harness import study_toml, wait_until
from tests.objectives import learning_curve
from zoomtune.common.trial import Rung, Trial, TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_one_worker_and_four_workers_prune_the_same_trials(rig: ProcessRig) -> None:
    def toml(name: str) -> str:
        return study_toml(
            name=name,
            objective="prunable",
            rounds=3,
            trials_per_round=8,
            seed=11,
            options="{ jitter = 0.02 }",
            resources=FAST_RESOURCES,
        )

    expected = PrunedRun.reference(toml("demo"))
    assert expected.pruned, "the test needs a study that prunes"

    # Given one worker, then four, running the same study (under two names)
    rig.workers(1, objectives=("prunable",))
    one = rig.coordinator(rig.study_file(toml("one"), "one.toml"), "one")
    assert one.wait(120) == 0, one.log()[-3000:]
    rig.workers(3, objectives=("prunable",))
    four = rig.coordinator(rig.study_file(toml("four"), "four.toml"), "four")
    assert four.wait(120) == 0, four.log()[-3000:]

    # Then both pruned the reference's trials at the reference's steps, with its rungs
    assert PrunedRun.from_store(rig.store("one")) == expected
    assert PrunedRun.from_store(rig.store("four")) == expected
    assert len({t.worker for t in rig.store("four").trials()}) == 4
    rig.check(expected_trials=24, study="one")
    rig.check(expected_trials=24, study="four")


def test_a_pruned_trial_whose_worker_is_killed_is_pruned_again_at_the_same_step(
    worker_rig: WorkerRig,
) -> None:
    # Given two workers and a study whose round 2 prunes trials (4 steps of 0.4 s each)
    toml = study_toml(
        objective="prunable",
        rounds=2,
        trials_per_round=8,
        seed=11,
        options="{ steps = 4, step_seconds = 0.4 }",
        resources=FAST_RESOURCES,
    )
    expected = PrunedRun.reference(toml, steps=4)
    victim = next(n for n in expected.pruned if n >= 8)
    worker_rig.start_workers(2, ["prunable"])
    coordinator = worker_rig.run_study(toml)
    store = worker_rig.store()

    # When the machine running it is lost mid-trial, before it is pruned, once its round is
    # final (a round run ahead may send it again first): its worker and the worker's trial
    # process are SIGKILLed together
    def running_for_real() -> Trial | None:
        found = store.trials([victim])
        if not found or found[0].status is not TrialStatus.RUNNING:
            return None
        return None if store.round(2).provisional else found[0]

    running = wait_until(running_for_real, 60, 0.02, what=f"trial {victim} to run, final")
    owner = worker_rig.owner(running)
    os.killpg(owner.pid, signal.SIGKILL)
    assert store.trial(victim).status is TrialStatus.RUNNING, "killed too late: already pruned"

    # Then after the lease expires it runs again as the next attempt, on the other worker,
    # with the same rungs, and is pruned at the same step with the same value
    assert coordinator.wait(90).state == "complete"
    trial = store.trial(victim)
    assert (trial.status, trial.attempt) == (TrialStatus.PRUNED, running.attempt + 1)
    assert worker_rig.owner(trial) is not owner
    assert trial.rungs == tuple(Rung(*pair) for pair in expected.rungs[1])
    assert (trial.last_step, trial.last_value) == expected.trials[victim][3:]
    assert trial.score is None
    # And the whole study is the reference study
    assert PrunedRun.from_store(store) == expected
    worker_rig.stop()
    check_invariants(store, expected_trials=16, max_attempts=3, processes=worker_rig.workers)


def test_a_lease_that_expires_before_should_prune_drops_the_result(
    worker_rig: WorkerRig,
) -> None:
    # Given one trial of a round with no rungs (round 1), which works 1 s between reporting a
    # step and asking should_prune
    toml = study_toml(
        objective="prunable",
        rounds=1,
        trials_per_round=1,
        options="{ steps = 3, step_seconds = 1.0 }",
        resources=FAST_RESOURCES,
    )
    worker_rig.start_workers(2, ["prunable"])
    coordinator = worker_rig.run_study(toml)
    store = worker_rig.store()
    first = worker_rig.owner(worker_rig.running(store, 0))
    wait_until(lambda: store.reports(0), 10, 0.02, what="trial 0's first report")

    # When its process freezes right after the report, past its lease (a frozen VM), so that
    # the reaper hands the trial to the other worker, and then wakes up
    child = worker_rig.child_pid(store, 0)
    os.kill(child, signal.SIGSTOP)
    try:
        wait_until(lambda: store.trial(0).attempt == 2, 20, 0.1, what="trial 0's requeue")
    finally:
        os.kill(child, signal.SIGCONT)

    # Then the woken attempt's should_prune() says True (it lost the trial) and its result is
    # dropped as stale; the next attempt decided by itself: no rungs, so it completed
    assert coordinator.wait(60).state == "complete"
    worker_rig.wait_for_log(first, "trial 0 attempt 1 dropped (stale): pruned at step")
    trial = store.trial(0)
    assert (trial.status, trial.attempt) == (TrialStatus.COMPLETE, 2)
    assert trial.score == pytest.approx(learning_curve(trial.params, 3))
    assert store.counters()["stale_results"] == 1
    worker_rig.stop()
    check_invariants(store, expected_trials=1, max_attempts=3, processes=worker_rig.workers)
