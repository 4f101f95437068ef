"""Shared fixtures: a real redis-server per test (free port, temp folder, stopped by its pid),
and fakeredis for fast unit tests of the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, settings

from zoomtune.common.redis_client import connect
from zoomtune.common.store import StudyStore
from zoomtune.coordinator.redis_server import RedisServer

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

PREFIX = "zoomtune:"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server with AOF, on a free port in a temp folder; stopped by its pid."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def real_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = connect(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def fake_client() -> redis.Redis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture(params=["fakeredis", "redis-server"])
def any_client(request: pytest.FixtureRequest) -> redis.Redis:
    """The store's contract holds on fakeredis and on a real redis-server alike."""
    if request.param == "fakeredis":
        return fakeredis.FakeRedis(decode_responses=True)
    return request.getfixturevalue("real_client")  # type: ignore[no-any-return]


@pytest.fixture
def store(any_client: redis.Redis) -> StudyStore:
    return StudyStore(any_client, PREFIX, "demo")
