"""S8: a Redis without persistence is wiped by a restart while a study runs.

Promise: the coordinator notices that the study's records (its epoch) vanished and stops with a
clear message and a non-zero exit code within 10 s. It never starts the study again silently
and never waits forever. At start it warns when Redis runs without AOF or may evict keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.process_rig import FAST_RESOURCES, PREFIX, ProcessRig
from tests.harness import study_toml, wait_until
from zoomtune.common.redis_client import connect
from zoomtune.coordinator.launch import persistence_warnings
from zoomtune.coordinator.redis_server import RedisServer

pytestmark = [pytest.mark.redis]


@pytest.fixture
def volatile_rig(tmp_path: Path) -> Iterator[ProcessRig]:
    """The rig around a redis-server with neither AOF nor snapshots."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    rig = ProcessRig(server, tmp_path)
    try:
        yield rig
    finally:
        rig.close()
        server.kill()


@pytest.mark.slow
def test_a_wiped_redis_stops_the_coordinator_with_a_clear_error(volatile_rig: ProcessRig) -> None:
    rig = volatile_rig
    # Given a study running against a Redis without persistence (the coordinator warns)
    rig.workers(2)
    toml = study_toml(
        rounds=2, trials_per_round=4, options="{ duration = 2 }", resources=FAST_RESOURCES
    )
    coordinator = rig.coordinator(rig.study_file(toml))
    wait_until(lambda: len(rig.running()) == 2, 60, what="2 running trials")

    # When Redis is SIGKILLed and started again, empty
    rig.redis.kill()
    rig.redis.start()
    restarted = time.monotonic()

    # Then the coordinator stops within 10 s, non-zero, saying what happened
    code = coordinator.wait(30)
    assert time.monotonic() - restarted < 10
    log = coordinator.log()
    assert code != 0
    assert "warning: Redis runs without AOF persistence (appendonly no)" in log
    assert "vanished from Redis" in log
    assert "best score" not in log
    # And it did not start the study again: Redis holds nothing of it
    assert list(rig.client.scan_iter(match=f"{PREFIX}{{demo}}:*")) == []
    assert not rig.client.sismember(f"{PREFIX}studies", "demo")
    rig.stop_all()


def test_persistence_warnings_name_the_setting_to_change(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    # Given the rig's Redis: AOF on, noeviction
    assert persistence_warnings(client) == []

    # When AOF is off and keys may be evicted
    client.config_set("appendonly", "no")
    client.config_set("maxmemory-policy", "allkeys-lru")

    # Then both are named, with the setting that fixes them
    warnings = persistence_warnings(client)
    assert len(warnings) == 2
    assert "appendonly no" in warnings[0]
    assert "set appendonly yes" in warnings[0]
    assert "'allkeys-lru'" in warnings[1]
    assert "set it to noeviction" in warnings[1]


def test_persistence_that_cannot_be_checked_is_a_warning_too(redis_server: RedisServer) -> None:
    # Given a user that may not run CONFIG (a typical managed or ACL-restricted Redis)
    admin = connect(redis_server.url)
    admin.acl_setuser(
        "tuner", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all", "-config"]
    )
    limited = redis.Redis(
        host="127.0.0.1", port=redis_server.port, username="tuner", password="secret"
    )
    # Then the check says it could not check, and what to make sure of
    assert persistence_warnings(limited) == [
        "cannot check Redis persistence (CONFIG is not allowed); make sure AOF is on "
        "(appendonly yes) and maxmemory-policy is noeviction"
    ]
