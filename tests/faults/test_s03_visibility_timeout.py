"""S3: a trial runs longer than the broker's visibility timeout.

Promise: `coordinator start` refuses a visibility timeout that is not longer than the trial
time limit plus a margin, before it writes anything. Forced past that check, Redis hands the
running trial to a second worker; the duplicate is dropped (only the lease holder's result
counts) and counted as a duplicate delivery.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import FAST_RESOURCES, WorkerRig
from tests.harness import CoordinatorProcess, study_toml
from tests.objectives import deterministic_score
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VISIBILITY = 4.0


def coordinator(worker_rig: WorkerRig, tmp_path: Path, *args: str) -> CoordinatorProcess:
    study_file = tmp_path / "study.toml"
    study_file.write_text(
        study_toml(
            rounds=1, trials_per_round=1, options="{ duration = 8 }", resources=FAST_RESOURCES
        )
    )
    return CoordinatorProcess(
        study_file,
        tmp_path / "run",
        worker_rig.redis.url,
        tmp_path / "coordinator.log",
        extra_args=args,
        env={"ZOOMTUNE_VISIBILITY_TIMEOUT": f"{VISIBILITY:g}"},
    )


def test_a_visibility_timeout_shorter_than_a_trial_is_refused(
    worker_rig: WorkerRig, tmp_path: Path
) -> None:
    # Given a broker whose visibility timeout (4 s) is shorter than the trial time limit (60 s)
    # When the coordinator starts the study
    refused = coordinator(worker_rig, tmp_path).start()

    # Then it refuses with an error naming the setting, and writes nothing to Redis
    assert refused.wait(60) == 2
    assert "visibility timeout is 4s (ZOOMTUNE_VISIBILITY_TIMEOUT)" in refused.log()
    assert worker_rig.client.dbsize() == 0


def test_forced_past_the_check_a_redelivered_trial_is_dropped_as_a_duplicate(
    worker_rig: WorkerRig, tmp_path: Path
) -> None:
    # Given two workers on a broker with a 4 s visibility timeout, and a study of one 8 s trial
    worker_rig.start_workers(2, ["sleepy"], visibility_timeout=VISIBILITY)

    # When the coordinator is forced to start it anyway
    forced = coordinator(worker_rig, tmp_path, "--force").start()

    # Then Redis redelivers the running trial to the other worker, which drops it, and exactly
    # one result is recorded, from the first (and only) attempt
    assert forced.wait(60) == 0, forced.log()[-3000:]
    store = worker_rig.store()
    trial = store.trial(0)
    assert trial.status is TrialStatus.COMPLETE
    assert trial.attempt == 1
    assert trial.score == pytest.approx(deterministic_score(trial.params))
    assert store.counters()["duplicate_deliveries"] >= 1
    other = next(w for w in worker_rig.workers if w is not worker_rig.owner(trial))
    assert "dropped a delivery of study 'demo' trial 0 attempt 1: duplicate" in other.log()

    worker_rig.stop()
    check_invariants(
        store, expected_trials=1, max_attempts=3, processes=[*worker_rig.workers, forced]
    )
