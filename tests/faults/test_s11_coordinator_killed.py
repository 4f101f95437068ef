"""S11: the coordinator is SIGKILLed and started again with the same study.

Promise: it resumes. Completed trials are never sampled again, results that came in while it
was down are picked up, and with the same seed the bounds after every round equal those of an
uninterrupted run. A lock left by a killed coordinator on the same host is taken over at once
(its pid is dead); a second live coordinator is refused (S19).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig, StudyRun
from tests.harness import study_toml, wait_until
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOML = study_toml(
    rounds=3,
    trials_per_round=4,
    options="{ duration = 1.0 }",
    resources=FAST_RESOURCES,
    extra="top_k = 2",
)
RESTART_ARGS = ("--tick", "0.5")  # the default 15 s lock: a restart must not wait for it


def complete(rig: ProcessRig) -> int:
    return sum(t.status is TrialStatus.COMPLETE for t in rig.trials())


KILL_AT: dict[str, Callable[[ProcessRig], bool]] = {
    # mid-round 2: some of its results in, some of its trials running
    "mid-round": lambda rig: complete(rig) >= 5 and len(rig.running()) >= 1,
    # round 2 just written (often ahead of round 1's last trials: provisional)
    "round-written": lambda rig: len(rig.trials()) == 8,
}


@pytest.mark.parametrize("moment", list(KILL_AT))
def test_a_killed_coordinator_resumes_where_it_was(rig: ProcessRig, moment: str) -> None:
    # Given two workers and a study of 3 rounds x 4 trials, top_k 2
    rig.workers(2)
    study = rig.study_file(TOML)
    first = rig.coordinator(study, "first", extra_args=RESTART_ARGS)

    # When the coordinator is SIGKILLed at the chosen moment (and reaped, as a shell would)
    wait_until(lambda: KILL_AT[moment](rig), 60, interval=0.02, what=moment)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    before = {t.number: t for t in rig.trials()}
    final = {r.number for r in rig.store().rounds() if not r.provisional}

    # ... and started again with the same study file
    second = rig.coordinator(study, "second", extra_args=RESTART_ARGS)

    # Then it resumes (taking over the dead coordinator's lock at once) and completes
    assert second.wait(120) == 0, second.log()[-3000:]
    assert "resuming study 'demo'" in second.log()
    after = {t.number: t for t in rig.trials()}
    # And no trial of a final round was sampled again or re-run: the trials written before
    # the kill are the same trials, none run again, those in flight finished where they ran (a
    # round run ahead is made final from the real results, as without the kill: S24)
    for number, trial in before.items():
        if trial.round not in final:
            continue
        assert after[number].params == trial.params
        assert after[number].attempt == trial.attempt
        if trial.status is TrialStatus.RUNNING:
            assert after[number].worker == trial.worker
    # And every round's bounds, params and scores are those of an uninterrupted run
    run = StudyRun.from_store(rig.store())
    reference = StudyRun.reference(TOML)
    assert run.boxes == reference.boxes
    assert run.trials == reference.trials
    rig.check(expected_trials=12)
