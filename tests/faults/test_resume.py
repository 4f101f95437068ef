"""Resume semantics of `coordinator start` on a study that already exists in the broker.

- the same study file (same spec): the study resumes where it was (a finished study just
  reports its result again, running nothing);
- a different spec under the same name: refused with StudyExists (exit code 2, bad input),
  naming `coordinator delete`, and nothing is written;
- after `coordinator delete NAME --yes` the name is free for a new study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.faults.process_rig import FAST_LOOP, FAST_RESOURCES, ProcessRig, StudyRun
from tests.harness import REPO, study_toml, wait_until
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOML = study_toml(
    rounds=2, trials_per_round=4, options="{ duration = 0.5 }", resources=FAST_RESOURCES
)


def test_starting_an_existing_study_resumes_it_and_a_finished_one_is_not_run_again(
    rig: ProcessRig,
) -> None:
    # Given a study interrupted (Ctrl-C) during round 1
    rig.workers(1)
    study = rig.study_file(TOML)
    first = rig.coordinator(study, "first")
    wait_until(lambda: rig.running(), 60, what="a running trial")
    first.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
    assert first.wait(30) == 130
    assert "interrupted by SIGINT; run the same command again to resume the study" in first.log()

    # When the same command runs again
    second = rig.coordinator(study, "second")

    # Then it resumes the study and completes it: the reference study, each trial once
    assert second.wait(120) == 0, second.log()[-3000:]
    assert "resuming study 'demo'" in second.log()
    reference = StudyRun.reference(TOML)
    assert StudyRun.from_store(rig.store()) == reference
    events = rig.client.xlen(rig.store().keys.events)

    # And running it once more only reports the finished study
    third = rig.coordinator(study, "third")
    assert third.wait(60) == 0, third.log()[-3000:]
    assert "study 'demo' has already finished all its rounds" in third.log()
    best = min(score for _, score in reference.trials if score is not None)
    assert f"best score {best:.6g} (minimize)" in third.log()
    assert "round 1/2: 4 trials" not in third.log()
    assert rig.client.xlen(rig.store().keys.events) == events + 1  # the 'complete' state only
    rig.check(expected_trials=8)


def test_a_different_study_under_an_existing_name_is_refused_until_deleted(rig: ProcessRig) -> None:
    # Given a finished study named demo
    rig.workers(1)
    first = rig.coordinator(rig.study_file(TOML))
    assert first.wait(120) == 0, first.log()[-3000:]
    before = rig.client.dbsize()

    # When another study file uses the name demo (here: another seed)
    other = rig.study_file(TOML.replace("seed = 3", "seed = 4"), "other.toml")
    refused = rig.coordinator(other, "refused")

    # Then it is refused as bad input, naming how to free the name, and nothing is written
    assert refused.wait(60) == 2
    text = " ".join(refused.log().split())
    assert "a study named 'demo' with a different specification is already in this broker" in (text)
    assert "delete the old one: coordinator delete demo --yes" in text
    assert rig.client.dbsize() == before
    assert all(t.status is TrialStatus.COMPLETE for t in rig.trials())

    # When the old study is deleted, the new one starts afresh
    deleted = subprocess.run(
        [sys.executable, "-m", "zoomtune.coordinator.cli", "delete", "demo", "--yes"],
        cwd=REPO,
        env={**os.environ, "ZOOMTUNE_BROKER_URL": rig.redis.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert deleted.returncode == 0, deleted.stderr
    fresh = rig.coordinator(other, "fresh", extra_args=FAST_LOOP)
    assert fresh.wait(120) == 0, fresh.log()[-3000:]
    assert "starting study 'demo'" in fresh.log()
    assert StudyRun.from_store(rig.store()) == StudyRun.reference(other.read_text())
    rig.check(expected_trials=8)
