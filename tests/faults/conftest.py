"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.process_rig import ProcessRig
from tests.faults.worker_rig import WorkerRig
from zoomtune.common.redis_client import connect
from zoomtune.coordinator.redis_server import RedisServer


@pytest.fixture
def worker_rig(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerRig]:
    """Worker daemons and the coordinator's round loop around a real redis-server; every
    process and thread it started is stopped at the end."""
    client = connect(redis_server.url)
    rig = WorkerRig(redis_server, tmp_path, client)
    try:
        yield rig
    finally:
        rig.stop()
        client.close()


@pytest.fixture
def rig(redis_server: RedisServer, tmp_path: Path) -> Iterator[ProcessRig]:
    """`worker start` and `coordinator start` processes around a real redis-server with AOF;
    all stopped by pid at the end."""
    rig = ProcessRig(redis_server, tmp_path)
    try:
        yield rig
    finally:
        rig.close()
