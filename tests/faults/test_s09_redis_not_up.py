"""S9: Redis is not up yet when the workers and the coordinator start, or is on another port.

Promise: workers retry with backoff and start working once Redis appears; the coordinator
retries for `--connect-timeout` seconds, then fails with "cannot reach broker at host:port" and
a non-zero exit code. It never reports success.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig
from tests.harness import REPO, study_toml
from zoomtune.common.broker import wait_for_broker
from zoomtune.common.errors import BrokerError
from zoomtune.coordinator.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.redis]


@pytest.mark.slow
def test_workers_and_coordinator_started_before_redis_run_the_study_once_it_appears(
    tmp_path: Path,
) -> None:
    # Given workers and a coordinator started against a port where Redis is not running yet
    server = RedisServer(tmp_path / "redis", port=free_port())
    rig = ProcessRig(server, tmp_path)
    try:
        workers = rig.workers(2, wait=False)
        toml = study_toml(rounds=1, trials_per_round=4, resources=FAST_RESOURCES)
        coordinator = rig.coordinator(
            rig.study_file(toml), extra_args=("--connect-timeout", "60", "--tick", "0.5")
        )

        # When Redis appears 5 s later
        time.sleep(5)
        assert all(w.alive() for w in workers)
        assert coordinator.process is not None
        assert coordinator.process.poll() is None
        server.start()

        # Then the study runs to the end, on both workers
        assert coordinator.wait(90) == 0, coordinator.log()[-3000:]
        assert len({t.worker for t in rig.trials()}) == 2
        rig.check(expected_trials=4)
    finally:
        rig.close()
        server.kill()


def test_a_coordinator_pointed_at_a_closed_port_fails_naming_the_address(
    tmp_path: Path,
) -> None:
    # Given a port where nothing listens
    port = free_port()
    study = tmp_path / "study.toml"
    study.write_text(study_toml(rounds=1, resources=FAST_RESOURCES))

    # When the coordinator is pointed at it with a 3 s connect timeout
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoomtune.coordinator.cli",
            "start",
            str(study),
            "--broker",
            f"redis://127.0.0.1:{port}/0",
            "--connect-timeout",
            "3",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then it fails, naming the address, and reports no result
    assert done.returncode == 1
    assert f"cannot reach broker at 127.0.0.1:{port} (tried for 3s)" in done.stderr
    assert "best score" not in done.stdout + done.stderr
    assert not (tmp_path / "run" / "study.json").exists()


def test_waiting_for_the_broker_gives_up_after_the_connect_timeout() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"cannot reach broker at 127\.0\.0\.1"):
        wait_for_broker(url, timeout=2.0)
    # Not much longer than asked: the probe itself does not retry for seconds per attempt
    assert 2.0 <= time.monotonic() - started < 6.0


def test_waiting_for_the_broker_ends_when_redis_appears(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    later = threading.Timer(1.5, server.start)
    later.start()
    try:
        wait_for_broker(server.url, timeout=30.0)
    finally:
        later.join()
        server.kill()
