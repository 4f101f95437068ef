"""Connecting to Redis: a client that retries outages, and Redis's refusals in words.

A dropped connection or a timeout is retried with backoff (`TransientRetry`); a refusal (wrong
or missing credentials, a TLS certificate that fails verification) is not, since trying again
cannot fix it. `call_redis` turns both into `BrokerError` with a message for people.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from zoomtune.common.errors import BrokerError
from zoomtune.common.settings import redact_url


def connect(url: str) -> redis.Redis:
    """A client that decodes to str and retries dropped connections with backoff."""
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=30,
            socket_keepalive=True,
            health_check_interval=15,
            retry=TransientRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    except ValueError as exc:
        raise BrokerError(f"bad broker URL {redact_url(url)!r}: {exc}") from exc


def is_refused(exc: BaseException) -> bool:
    """True for connection errors that trying again cannot fix: Redis refused the credentials,
    or its TLS certificate failed verification (redis-py reports both as ConnectionError)."""
    return isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError) or (
        isinstance(exc, redis.ConnectionError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


MISSING_CREDENTIALS = (
    "the broker needs a password: put it in the URL (redis://:PASSWORD@host:port/0) "
    "or ZOOMTUNE_BROKER_URL"
)

_NO_CREDENTIALS = ("NOAUTH", "Authentication required", "HELLO must be called with the client")
"""What Redis answers a client that sent no password (redis-py's HELLO gets the last one)."""


def refusal(exc: BaseException) -> str:
    """Why Redis refused this client, in words for people (for an `is_refused` error)."""
    if any(text in str(exc) for text in _NO_CREDENTIALS):
        return MISSING_CREDENTIALS
    reason = str(exc).rstrip(".")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return f"the broker's TLS certificate failed verification: {reason}"
    return f"the broker refused the credentials: {reason}"


class _Refused(Exception):
    def __init__(self, error: redis.ConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


class TransientRetry(Retry):
    """redis-py's Retry, except that refused connections (`is_refused`) fail at once."""

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            try:
                return do()
            except redis.ConnectionError as exc:
                if is_refused(exc):
                    raise _Refused(exc) from exc
                raise

        try:
            return super().call_with_retry(once, fail, *args, **kwargs)
        except _Refused as refused:
            raise refused.error from None


def call_redis(function: Any, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, with Redis's refusals and outages as BrokerError."""
    try:
        return function(*args, **kwargs)
    except redis.AuthenticationError as exc:
        raise BrokerError(refusal(exc)) from exc
    except redis.ConnectionError as exc:
        raise BrokerError(f"cannot reach Redis: {exc}") from exc
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc):
            raise BrokerError(MISSING_CREDENTIALS) from exc
        if "NOPERM" in str(exc):
            raise BrokerError(f"Redis refused the command: {exc}") from exc
        raise
