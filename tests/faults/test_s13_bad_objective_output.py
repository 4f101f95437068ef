"""S13: an objective raises, or returns NaN, inf, a non-number, a mapping without a score, the
wrong type, or a 10 MB payload.

Promise: the trial is FAILED with a reason that says what came back (cut to a bounded length),
is not retried (such errors are deterministic), and never ranks among the top-k. A round with no
completed trial stops the study with "round r: 0 completed trials" and a non-zero exit. Nothing
crashes, and Redis memory stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import FAST_RESOURCES, WorkerRig
from tests.harness import CoordinatorProcess, study_toml
from tests.objectives import BAD_OUTPUTS, deterministic_score
from zoomtune.common.trial import MAX_ERROR_CHARS, TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXPECTED_REASONS = {
    "raises": "RuntimeError: boom: the model diverged (at ",
    "nan": "objective returned NaN",
    "inf": "objective returned inf",
    "-inf": "objective returned -inf",
    "string": "objective returned str '0.5', expected a number",
    "no_score_key": "objective returned a mapping without a 'score' key (keys: ['loss'])",
    "wrong_type": "objective returned list [0.5], expected a number",
    "huge_return": "objective returned str '1111",
    "huge_error": "ValueError: xxxx",
}
"""How each kind of bad output is reported (the start of the reason)."""

MEMORY_BOUND = 2 * 1024 * 1024
"""Redis may grow by at most 2 MB over a study that returned two 10 MB payloads."""


def used_memory(worker_rig: WorkerRig) -> int:
    return int(worker_rig.client.info("memory")["used_memory"])


def test_bad_outputs_fail_their_trials_with_the_reason_and_never_rank(
    worker_rig: WorkerRig,
) -> None:
    # Given two workers and a study of 2 rounds x 10 trials: in each round one trial of every
    # kind of bad output, and one good trial
    worker_rig.start_workers(2, ["bad_output"])
    toml = study_toml(
        objective="bad_output", rounds=2, trials_per_round=10, resources=FAST_RESOURCES
    )
    memory_before = used_memory(worker_rig)

    # When the study runs
    outcome = worker_rig.run_study(toml).wait(60)

    # Then every bad trial is FAILED after one attempt, with a reason naming what came back
    store = worker_rig.store()
    trials = store.trials()
    for trial in trials:
        kind = BAD_OUTPUTS[trial.number % len(BAD_OUTPUTS)]
        if kind == "good":
            assert trial.status is TrialStatus.COMPLETE
            assert trial.score == pytest.approx(deterministic_score(trial.params))
            continue
        assert trial.status is TrialStatus.FAILED, (kind, trial)
        assert trial.attempt == 1
        assert trial.score is None
        assert (trial.error or "").startswith(EXPECTED_REASONS[kind]), (kind, trial.error)
        assert len(trial.error or "") <= MAX_ERROR_CHARS

    # And only the good trials rank: the best is the better of the two, and round 2's box was
    # narrowed around round 1's good trial
    assert outcome.state == "complete"
    good = [t for t in trials if t.status is TrialStatus.COMPLETE]
    assert [t.number for t in good] == [9, 19]
    best = min(good, key=lambda t: t.score or 0.0)
    assert outcome.best == (dict(best.params), best.score)
    second_box = store.rounds()[1].box
    for name, value in good[0].params.items():
        assert second_box[name]["low"] <= value <= second_box[name]["high"], name

    # And the 10 MB payloads never reached Redis; the workers are still up
    assert used_memory(worker_rig) - memory_before < MEMORY_BOUND
    assert all(worker.alive() for worker in worker_rig.workers)

    worker_rig.stop()
    check_invariants(store, expected_trials=20, max_attempts=3, processes=list(worker_rig.workers))


def test_a_round_without_a_completed_trial_stops_the_study_with_a_clear_exit(
    worker_rig: WorkerRig, tmp_path: Path
) -> None:
    # Given two workers and a study whose every trial returns a bad output
    worker_rig.start_workers(2, ["bad_output"])
    study_file = tmp_path / "study.toml"
    bad_kinds = [kind for kind in BAD_OUTPUTS if kind != "good"]
    kinds = ", ".join(f'"{kind}"' for kind in bad_kinds)
    study_file.write_text(
        study_toml(
            objective="bad_output",
            rounds=3,
            trials_per_round=len(bad_kinds),
            options=f"{{ kinds = [{kinds}] }}",
            resources=FAST_RESOURCES,
        )
    )

    # When `coordinator start` runs it
    coordinator = CoordinatorProcess(
        study_file, tmp_path / "run", worker_rig.redis.url, tmp_path / "coordinator.log"
    ).start()

    # Then it stops after round 1 with the reason and exit code 1, and records the study failed
    assert coordinator.wait(60) == 1
    assert "round 1: 0 completed trials" in coordinator.log()
    store = worker_rig.store()
    assert store.meta()["state"] == "failed"
    assert store.meta()["rounds"] == "1"
    assert all(t.status is TrialStatus.FAILED for t in store.trials())

    worker_rig.stop()
    check_invariants(
        store,
        expected_trials=len(bad_kinds),
        max_attempts=3,
        processes=[*worker_rig.workers, coordinator],
    )
