"""A study whose objective no worker of the cluster has.

Promise: the worker that takes a trial it cannot run records why on the trial (the trial stays
QUEUED: a worker that has the objective may still run it), and the coordinator stops the study
with that reason and exit code 1 instead of re-sending the trial forever. Once a worker has the
objective, the same `coordinator start` resumes the study.
"""

from __future__ import annotations

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig
from tests.harness import study_toml
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOML = study_toml(rounds=1, trials_per_round=3, resources=FAST_RESOURCES)


def test_a_trial_no_worker_can_run_stops_the_study_naming_why(rig: ProcessRig) -> None:
    # Given a worker with only the built-in objectives, and a study of the objective 'sleepy'
    [lacking] = rig.workers(1, objectives=())
    study = rig.study_file(TOML)

    # When the coordinator runs the study on the cluster
    refused = rig.coordinator(study, "refused")

    # Then it stops within seconds with exit code 1, saying which worker refused and why
    assert refused.wait(60) == 1, refused.log()[-3000:]
    text = " ".join(refused.log().split())
    assert "study 'demo' failed" not in text  # nothing is failed for good...
    assert "was refused by worker zoomtune-" in text
    assert "objective 'sleepy' is not registered on worker zoomtune-" in text
    assert "worker start --objective sleepy=module:function" in text
    assert "no worker has started a trial" not in text
    # ... the refusal is on the trial, which stays queued, and the study can go on
    trials = rig.trials()
    assert all(t.status is TrialStatus.QUEUED and t.attempt == 1 for t in trials)
    assert any("is not registered on worker" in (t.last_error or "") for t in trials)
    assert rig.store().meta()["state"] == "running"

    # When that worker is replaced by one with the objective and the same command runs again
    lacking.stop()
    rig.workers(1)
    resumed = rig.coordinator(study, "resumed")

    # Then the study resumes and completes
    assert resumed.wait(120) == 0, resumed.log()[-3000:]
    rig.check(expected_trials=3)
