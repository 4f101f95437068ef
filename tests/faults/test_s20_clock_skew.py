"""S20: the clocks of worker hosts are an hour off.

Promise: lease and heartbeat expiry depend only on Redis's clock (key TTLs, TIME), so a worker
clock +1 h or -1 h causes no false reaping of healthy trials and no lease that never expires:
a SIGKILLed skewed worker is recovered as in S1.

The skew is real: each worker's interpreter starts with a `sitecustomize` that adds
ZOOMTUNE_TEST_CLOCK_OFFSET seconds to `time.time()` before anything (Celery, kombu, redis-py,
zoomtune) is imported. The visibility timeout stays at zoomtune's default (a day): kombu
stamps deliveries with the worker's clock, so the timeout must exceed the skew as well as the
longest trial.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.worker_rig import FAST_RESOURCES, LEASE, TICK, WorkerRig
from tests.harness import study_toml
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SKEWED_CLOCK = """\
import os
import time

_offset = float(os.environ.get("ZOOMTUNE_TEST_CLOCK_OFFSET", "0"))
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + _offset
time.time_ns = lambda: _time_ns() + int(_offset * 1e9)
"""
DEFAULT_VISIBILITY = 86400.0
HOUR = 3600.0


def skewed_env(tmp_path: Path, offset: float) -> dict[str, str]:
    folder = tmp_path / "skewed-clock"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(SKEWED_CLOCK)
    return {"PYTHONPATH": str(folder), "ZOOMTUNE_TEST_CLOCK_OFFSET": f"{offset:g}"}


def log_clock_offset(log: str) -> float:
    """How far the worker's clock (its first log timestamp) is from ours."""
    match = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ", log, re.MULTILINE)
    if match is None:
        raise AssertionError(f"no timestamp in the log:\n{log[:500]}")
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() - time.time()


def test_skewed_worker_clocks_cause_no_false_reaping_and_a_lost_worker_is_recovered(
    worker_rig: WorkerRig, tmp_path: Path
) -> None:
    # Given one worker whose clock is an hour ahead and one whose clock is an hour behind
    ahead = worker_rig.start_workers(
        1, ["sleepy"], visibility_timeout=DEFAULT_VISIBILITY, env=skewed_env(tmp_path, HOUR)
    )[0]
    behind = worker_rig.start_workers(
        1, ["sleepy"], visibility_timeout=DEFAULT_VISIBILITY, env=skewed_env(tmp_path, -HOUR)
    )[0]
    assert log_clock_offset(ahead.log()) == pytest.approx(HOUR, abs=120)
    assert log_clock_offset(behind.log()) == pytest.approx(-HOUR, abs=120)

    # And a study of three 4 s trials (longer than the 3 s lease, so only heartbeats keep them)
    toml = study_toml(
        rounds=1, trials_per_round=3, options="{ duration = 4 }", resources=FAST_RESOURCES
    )
    coordinator = worker_rig.run_study(toml, visibility_timeout=DEFAULT_VISIBILITY)
    store = worker_rig.store()

    # When the first two trials run on both workers, and the worker that takes the third is
    # SIGKILLed
    worker_rig.running(store, 0)
    worker_rig.running(store, 1)
    victim = worker_rig.owner(worker_rig.running(store, 2))
    survivor = ahead if victim is behind else behind
    killed_at = worker_rig.redis_time()
    victim.signal(signal.SIGKILL)

    # Then the healthy trials were never reaped (one attempt each), and the lost one was found
    # within lease + tick and ran again as attempt 2 on the other skewed worker
    assert coordinator.wait(60).state == "complete"
    trials = store.trials()
    assert [t.status for t in trials] == [TrialStatus.COMPLETE] * 3
    assert [t.attempt for t in trials] == [1, 1, 2]
    assert worker_rig.owner(trials[2]) is survivor
    assert store.counters()["leases_expired"] == 1
    detected = worker_rig.requeued_at(store, 2) - killed_at
    assert detected < LEASE + TICK + 2.0, f"detected after {detected:.2f}s"

    worker_rig.stop()
    check_invariants(store, expected_trials=3, max_attempts=3, processes=list(worker_rig.workers))
