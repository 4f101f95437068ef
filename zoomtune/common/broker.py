"""Waiting for the broker before starting work, for the coordinator and the workers alike.

Two kinds of failure, told apart by `zoomtune.common.redis_client.is_refused`:

- Redis is not there (yet): not up, restarting, another port. Waiting can fix it (FAULTS.md
  S9). The coordinator waits `--connect-timeout` seconds; a worker waits for as long as it
  takes, as a daemon should.
- Redis refuses this client: a wrong or missing password, a certificate that fails
  verification. Waiting rarely fixes it, so the coordinator stops at once, and a worker gives
  up after `refused_timeout` seconds (long enough to ride out a password rotation) and exits
  1, so that systemd or Kubernetes show the failure instead of a worker retrying forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from zoomtune.common.errors import BrokerError
from zoomtune.common.redis_client import is_refused, refusal

PROBE_INTERVAL = 0.5
"""Seconds between two probes."""


def broker_address(url: str) -> str:
    """`host:port` of a broker URL, as redis-py reads it (localhost:6379 when it says none)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def wait_for_broker(
    url: str,
    timeout: float | None,
    *,
    refused_timeout: float = 0.0,
    on_retry: Callable[[str], None] | None = None,
    retry_note_every: float = 10.0,
) -> None:
    """Return once Redis answers PING; raise BrokerError naming the address and the reason
    after `timeout` seconds of not reaching it (None: never give up), or after
    `refused_timeout` seconds of being refused (0: at the first refusal).

    `on_retry` hears why, at the first failed probe and every `retry_note_every` seconds after.
    It probes with a client of its own that does not retry by itself (the store's client
    retries each command for about 9 s, which would stretch a short timeout).
    """
    probe = redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    started = time.monotonic()
    refused_since: float | None = None
    noted_at: float | None = None
    try:
        while True:
            try:
                probe.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                now = time.monotonic()
                if is_refused(exc):
                    refused_since = now if refused_since is None else refused_since
                    if now - refused_since >= refused_timeout:
                        tried = f", refused for {refused_timeout:g}s" if refused_timeout else ""
                        raise BrokerError(
                            f"{refusal(exc)} (broker at {broker_address(url)}{tried})"
                        ) from exc
                    why = refusal(exc)
                else:
                    refused_since = None
                    if timeout is not None and now - started >= timeout:
                        raise BrokerError(
                            f"cannot reach broker at {broker_address(url)} "
                            f"(tried for {timeout:g}s): {exc}"
                        ) from exc
                    why = f"cannot reach broker at {broker_address(url)}: {exc}"
                if on_retry is not None and (
                    noted_at is None or now - noted_at >= retry_note_every
                ):
                    noted_at = now
                    on_retry(f"{why}; retrying")
            left = [PROBE_INTERVAL]
            if timeout is not None:
                left.append(started + timeout - time.monotonic())
            time.sleep(max(0.0, min(left)))
    finally:
        probe.close()
