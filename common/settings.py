"""Process-wide settings, read once from the environment and passed around explicitly.

| variable                    | meaning                                             | default    |
|-----------------------------|-----------------------------------------------------|------------|
| ZOOMTUNE_BROKER_URL         | redis:// or rediss:// URL of the broker and store   | (embedded) |
| ZOOMTUNE_PREFIX             | prefix of every Redis key zoomtune and Celery write | zoomtune:  |
| ZOOMTUNE_VISIBILITY_TIMEOUT | seconds before Redis redelivers an unacked message  | 86400      |
| ZOOMTUNE_TEST_CLOCK_OFFSET  | seconds added to this process's clock (tests only)  | 0          |

The visibility timeout is only the transport's last resort: zoomtune recovers a lost trial
from its own lease within seconds, so the timeout is set long enough never to redeliver a trial
that is still running (it must exceed the longest trial; the coordinator checks).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from common.errors import ConfigError

QUEUES: Mapping[str, str] = {"cpu": "trials.cpu", "gpu": "trials.gpu"}
"""Resource kind -> the Celery queue its trials go to."""

TASK_NAME = "zoomtune.run_trial"
"""The one Celery task; the coordinator sends it by name and never imports the workers."""

VISIBILITY_MARGIN = 300.0
"""Seconds the visibility timeout must exceed a study's trial time limit by."""

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}:$")


@dataclass(frozen=True)
class Settings:
    broker_url: str | None = None
    prefix: str = "zoomtune:"
    visibility_timeout: float = 86400.0
    clock_offset: float = 0.0

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigError(
                f"ZOOMTUNE_PREFIX must be 1-64 letters, digits, '_', '.', '-' and end with ':', "
                f"got {self.prefix!r}"
            )
        if not (math.isfinite(self.visibility_timeout) and self.visibility_timeout > 0):
            raise ConfigError(
                f"ZOOMTUNE_VISIBILITY_TIMEOUT must be a positive number of seconds, "
                f"got {self.visibility_timeout!r}"
            )
        if self.broker_url is not None:
            scheme = urlsplit(self.broker_url).scheme
            if scheme not in ("redis", "rediss", "redis+socket", "unix"):
                raise ConfigError(
                    f"the broker URL must start with redis://, rediss:// or unix://, "
                    f"got {redact_url(self.broker_url)!r}"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            visibility = float(env.get("ZOOMTUNE_VISIBILITY_TIMEOUT", "86400"))
            offset = float(env.get("ZOOMTUNE_TEST_CLOCK_OFFSET", "0"))
        except ValueError as exc:
            raise ConfigError(f"bad number in the environment: {exc}") from exc
        return cls(
            broker_url=env.get("ZOOMTUNE_BROKER_URL") or None,
            prefix=env.get("ZOOMTUNE_PREFIX", "zoomtune:"),
            visibility_timeout=visibility,
            clock_offset=offset,
        )

    def with_broker(self, url: str | None) -> Settings:
        """These settings with `url` as the broker when one is given."""
        return self if url is None else replace(self, broker_url=url)

    def now(self) -> float:
        """This process's clock. Only logs use it: leases and timestamps use Redis's clock."""
        return time.time() + self.clock_offset


def redact_url(url: str) -> str:
    """The URL with its password replaced by `**`, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:**@{host}"))
