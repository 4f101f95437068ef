"""How the round loop rides out a Redis outage, and notices a Redis that restarted.

A Redis that crashed may come back from its AOF without its last second of writes (a result, a
round), so what the loop holds in memory may be ahead of the store. Whenever Redis restarted
(its run_id changed), was unreachable, or one command took far longer than asked (an outage
the client retried through, or this process was paused), the loop throws its state away and
resumes from the store: `Resync`. An outage longer than `outage_limit` stops the study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from common.errors import BrokerError
from common.redis_client import is_refused
from common.store import StudyStore
from coordinator.progress import StudyProgress

SLOW_ANSWER_SECONDS = 2.0
"""A single Redis command that takes this much longer than asked means an outage or a pause."""

REDIS_DOWN = (BrokerError, redis.ConnectionError, redis.TimeoutError)
"""What a Redis command raises while Redis cannot be reached."""


class Resync(Exception):
    """Redis restarted or was unreachable: what the loop holds may be ahead of the store."""


def check_answered_in_time(took: float, asked: float) -> None:
    """Resync when one Redis command took much longer than asked: Redis was unreachable
    meanwhile (the client retried until it answered), or this process was paused."""
    if took > asked + SLOW_ANSWER_SECONDS:
        raise Resync(f"Redis did not answer for {took:.0f}s")


@dataclass
class RedisWatch:
    """The loop's view of its Redis: since when it is unreachable, and which run of the
    server (its run_id) the loop's state was read from."""

    store: StudyStore
    progress: StudyProgress
    outage_limit: float
    tick: float
    run_id: str = ""
    outage_since: float | None = None

    def survive(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run `action(*args)`; None while Redis is unreachable (up to `outage_limit`, then
        BrokerError). When Redis answers again after an outage: Resync."""
        try:
            result = action(*args)
        except REDIS_DOWN as exc:
            now = time.monotonic()
            if self.outage_since is None:
                self.outage_since = now
                self.progress.note(f"lost Redis, retrying: {exc}")
            if now - self.outage_since > self.outage_limit:
                raise BrokerError(
                    f"Redis unreachable for {now - self.outage_since:.0f}s; giving up: {exc}"
                ) from exc
            return None
        if self.outage_since is not None:
            self.outage_since = None
            raise Resync("Redis is back")
        return result

    def wait_until_back(self, exc: Exception) -> None:
        """Wait until Redis answers again; give up after `outage_limit` (BrokerError), or at
        once when it refuses this coordinator (credentials or certificate)."""
        since = self.outage_since or time.monotonic()
        self.progress.note(f"lost Redis, retrying: {exc}")
        while True:
            try:
                self.store.ping()
                self.outage_since = None
                return
            except REDIS_DOWN as error:
                if is_refused(error):  # waiting will not help
                    raise BrokerError(f"Redis refused this coordinator: {error}") from error
                exc = error
            if time.monotonic() - since > self.outage_limit:
                raise BrokerError(
                    f"Redis unreachable for {time.monotonic() - since:.0f}s; giving up: {exc}"
                ) from exc
            time.sleep(min(1.0, self.tick))

    def current_run_id(self) -> str:
        """The server's run_id now (the last one known where INFO is forbidden by an ACL:
        restarts are then found by waiting)."""
        try:
            return self.store.server_run_id()
        except Exception:
            return self.run_id

    def restarted(self) -> bool:
        """Whether Redis restarted since the loop last read the study."""
        return self.current_run_id() != self.run_id


__all__ = ["REDIS_DOWN", "RedisWatch", "Resync", "check_answered_in_time"]
