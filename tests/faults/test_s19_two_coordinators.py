"""S19: two coordinators on one study.

Promise: a study lock (SET NX with a TTL, plus the name of the last coordinator that took it,
checked by every write) admits one active coordinator. A second one exits at once with "study
locked by <host:pid>". A coordinator that lost the lock (it was paused past the lock's TTL and
another took the study over) notices at its next renewal and stops without writing.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
from click.testing import CliRunner

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig, StudyRun
from tests.harness import study_toml, wait_until
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.cli import main

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOML = study_toml(
    rounds=2, trials_per_round=4, options="{ duration = 1.5 }", resources=FAST_RESOURCES
)


def test_a_second_coordinator_is_refused_at_once_naming_the_first(rig: ProcessRig) -> None:
    # Given a coordinator running a study
    rig.workers(1)
    study = rig.study_file(TOML)
    first = rig.coordinator(study, "first")
    wait_until(lambda: rig.running(), 60, what="a running trial")

    # When a second coordinator starts the same study (in this process, so that the time
    # measured is the coordinator's, not the interpreter's start on a loaded machine)
    started = time.monotonic()
    run_dir = rig.folder / "run-refused"
    result = CliRunner().invoke(
        main, ["start", str(study), "--broker", rig.redis.url, "--run-dir", str(run_dir)]
    )
    elapsed = time.monotonic() - started

    # Then it exits non-zero within 3 s, naming who holds the study
    assert result.exit_code == 1, result.output
    assert f"study 'demo' is locked by {socket.gethostname()}:{first.pid}" in result.output
    assert elapsed < 3.0
    assert not run_dir.exists()  # it wrote nothing, not even its run folder
    # And the first carries on undisturbed
    assert first.wait(120) == 0, first.log()[-3000:]
    rig.check(expected_trials=8)


def test_a_coordinator_paused_past_its_lock_stops_without_writing(rig: ProcessRig) -> None:
    # Given two workers and a coordinator with a 2 s study lock
    rig.workers(2)
    study = rig.study_file(TOML)
    fast = ("--tick", "0.5", "--lock-ttl", "2")
    first = rig.coordinator(study, "first", extra_args=fast)
    wait_until(lambda: len(rig.running()) == 2, 60, what="2 running trials")
    lock_key = rig.store().keys.lock

    # When it is paused (SIGSTOP) until its lock expired, and a second coordinator takes over
    first.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        wait_until(lambda: not rig.client.exists(lock_key), 30, what="the lock to expire")
        second = rig.coordinator(study, "second", extra_args=fast)
        wait_until(
            lambda: f":{second.pid}" in (rig.client.get(lock_key) or ""),
            60,
            what="the second coordinator to hold the lock",
        )
        held_by_second = rig.client.get(lock_key)
    finally:
        # ... and the first one is resumed (SIGCONT)
        first.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    # Then the first notices it lost the study and stops, non-zero, without writing
    assert first.wait(30) != 0
    assert "lost the lock on study 'demo' to another one; stopping without writing" in (first.log())
    assert rig.client.get(lock_key) == held_by_second  # it did not release another's lock
    assert rig.store().meta()["coordinator"] == held_by_second
    # And the second runs the study to the end: the reference study, each trial once
    assert second.wait(120) == 0, second.log()[-3000:]
    assert StudyRun.from_store(rig.store()) == StudyRun.reference(TOML)
    states = [f["state"] for _, f in rig.client.xrange(rig.store().keys.events) if "state" in f]
    assert states == ["complete"]
    assert all(t.status is TrialStatus.COMPLETE for t in rig.trials())
    rig.check(expected_trials=8)
