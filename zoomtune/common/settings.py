"""Process-wide settings, read once from the environment and passed around explicitly.

| variable                      | meaning                                             | default    |
|-------------------------------|-----------------------------------------------------|------------|
| ZOOMTUNE_BROKER_URL           | redis:// or rediss:// URL of the broker and store   | (embedded) |
| ZOOMTUNE_PREFIX               | prefix of every Redis key zoomtune and Celery write | zoomtune:  |
| ZOOMTUNE_VISIBILITY_TIMEOUT   | seconds before Redis redelivers an unacked message  | 86400      |
| ZOOMTUNE_REMOTE_CONTROL       | 1: workers obey Celery remote control (see below)   | 0          |
| ZOOMTUNE_TLS_ALLOW_UNVERIFIED | 1: accept a rediss:// URL that skips verification   | 0          |
| ZOOMTUNE_TEST_CLOCK_OFFSET    | seconds added to this process's clock (tests only)  | 0          |

Security lives in the broker URL, so that one secret carries it everywhere:

- a password, or an ACL user and its password: `redis://USER:PASSWORD@HOST:6379/0`. zoomtune
  needs only the keys and channels under its prefix (`redis_acl_rules` gives the ACL rules);
- TLS: `rediss://USER:PASSWORD@HOST:6380/0?ssl_ca_certs=/etc/zoomtune/ca.pem` (and
  `ssl_certfile`, `ssl_keyfile` for client certificates). The server's certificate is always
  verified, by redis-py and by Celery alike; a URL that turns that off (`ssl_cert_reqs=none` or
  `optional`, `ssl_check_hostname=false`) is refused unless ZOOMTUNE_TLS_ALLOW_UNVERIFIED=1.

Remote control (Celery's `inspect`/`control` broadcasts: ping, stats, but also `shutdown`,
`pool_shrink`, `rate_limit`, `revoke`) is off on the workers: any client that can publish to
the broker could otherwise stop every worker of every study with one message. Nothing in
zoomtune needs it; Flower shows the workers and every trial from their events without it, and
only its worker detail pages and buttons need it. ZOOMTUNE_REMOTE_CONTROL=1 turns it on, for a
site whose broker only trusted clients can write to. It travels on a pub/sub channel under the
same prefix, so the ACL above grants it.
Credentials never reach a log or an output: print URLs through `redact_url`.

The visibility timeout is only the transport's last resort: zoomtune recovers a lost trial
from its own lease within seconds, so the timeout is set long enough never to redeliver a trial
that is still running (it must exceed the longest trial; the coordinator checks).
"""

from __future__ import annotations

import math
import os
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from zoomtune.common.errors import ConfigError
from zoomtune.common.names import KEY_PREFIX
from zoomtune.common.redact import redact_url as redact_url  # where the code has always found it

QueueKind = Literal["cpu", "gpu"]
"""The resource kinds a study runs on (`[resources] queue`) and a worker consumes (`--queues`)."""

QUEUES: Mapping[str, str] = {"cpu": "trials.cpu", "gpu": "trials.gpu"}
"""Resource kind -> the Celery queue its trials go to."""


def worker_command(*args: str) -> list[str]:
    """The `worker` command line run with this Python: the embedded default's workers, a GPU
    worker's slots and `worker gpus` run as subprocesses (the one place naming the module)."""
    return [sys.executable, "-m", "zoomtune.workers.cli", *args]


TASK_NAME = "zoomtune.run_trial"
"""The one Celery task; the coordinator sends it by name and never imports the workers."""

VISIBILITY_MARGIN = 300.0
"""Seconds the visibility timeout must exceed a study's trial time limit by."""

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
"""A URL's `ssl_cert_reqs` values (also spelled CERT_REQUIRED etc.), as redis-py reads them."""

_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")

_TLS_OPTIONS = (*_TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")
"""The query parameters a broker URL may have (rediss:// only): what `tls_options` reads."""


@dataclass(frozen=True)
class Settings:
    broker_url: str | None = None
    prefix: str = "zoomtune:"
    visibility_timeout: float = 86400.0
    clock_offset: float = 0.0
    remote_control: bool = False
    """Workers obey Celery's broadcast commands (inspect, ping, but also shutdown): off unless
    ZOOMTUNE_REMOTE_CONTROL=1, since any broker client could send them."""
    allow_unverified_tls: bool = False
    """Accept a rediss:// URL that turns certificate or host name checks off."""

    def __post_init__(self) -> None:
        if not KEY_PREFIX.fullmatch(self.prefix):
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
            check_broker_url(self.broker_url)
            if urlsplit(self.broker_url).scheme == "rediss" and not self.allow_unverified_tls:
                weakened = unverified_tls(self.broker_url)
                if weakened:
                    raise ConfigError(
                        f"the broker URL {redact_url(self.broker_url)!r} turns off TLS "
                        f"verification ({weakened}): anyone on the path could read the "
                        "credentials and forge trials. Give the CA with ssl_ca_certs=PATH "
                        "instead, or set ZOOMTUNE_TLS_ALLOW_UNVERIFIED=1 to accept the risk"
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
            remote_control=_flag(env, "ZOOMTUNE_REMOTE_CONTROL", default=False),
            allow_unverified_tls=_flag(env, "ZOOMTUNE_TLS_ALLOW_UNVERIFIED", default=False),
        )

    def with_broker(self, url: str | None) -> Settings:
        """These settings with `url` as the broker when one is given."""
        return self if url is None else replace(self, broker_url=url)

    def now(self) -> float:
        """This process's clock. Only logs use it: leases and timestamps use Redis's clock."""
        return time.time() + self.clock_offset

    def tls_options(self) -> dict[str, Any] | None:
        """For a rediss:// broker, the TLS options Celery must use (`broker_use_ssl`).

        Celery's Redis transport does not verify certificates unless told to, even for a
        rediss:// URL, so the options are always spelled out: verification on (unless the URL
        turns it off and ZOOMTUNE_TLS_ALLOW_UNVERIFIED allows it), plus the URL's files.
        """
        if self.broker_url is None or urlsplit(self.broker_url).scheme != "rediss":
            return None
        query = dict(parse_qsl(urlsplit(self.broker_url).query))
        options: dict[str, Any] = {
            "ssl_cert_reqs": _CERT_REQS[_cert_reqs_name(query.get("ssl_cert_reqs", "required"))],
            "ssl_check_hostname": query.get("ssl_check_hostname", "true").lower() != "false",
        }
        options.update({name: query[name] for name in _TLS_FILES if name in query})
        return options


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true or false), got {value!r}")


def _cert_reqs_name(value: str) -> str:
    name = value.lower().removeprefix("cert_")
    if name not in _CERT_REQS:
        raise ConfigError(
            "ssl_cert_reqs in the broker URL must be required (or, with "
            f"ZOOMTUNE_TLS_ALLOW_UNVERIFIED=1, optional or none), got {value!r}"
        )
    return name


def check_broker_url(url: str) -> None:
    """Refuse a broker URL that redis-py and Celery would not both read, or would read
    differently, with a message naming the problem (and never the password).

    Checked once, here, so that no command gets as far as a traceback: a scheme other than
    redis:// or rediss://, a port that is not a number, a database that is not one, query
    parameters that redis-py would pass on as keyword arguments (a TypeError at the first
    command) or that Celery ignores.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(_unreadable_url(shown)) from None
    if parts.scheme in ("unix", "redis+socket", "socket"):
        raise ConfigError(
            f"the broker URL {shown!r} names a Unix socket, which zoomtune does not support "
            "(redis-py and Celery spell it differently); let Redis listen on TCP and use "
            "redis://127.0.0.1:6379/0"
        )
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"the broker URL must start with redis:// or rediss://, got {shown!r}")
    if port == 0:
        raise ConfigError(f"the broker URL {shown!r} has port 0: expected 1 to 65535")
    database = parts.path.removeprefix("/")
    if database and not database.isdigit():
        raise ConfigError(
            f"the broker URL {shown!r} names the database {database!r}: expected a number, "
            "as in redis://host:6379/0"
        )
    if parts.fragment:
        raise ConfigError(_unreadable_url(shown))
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "password":
            raise ConfigError(
                f"the broker URL {shown!r} gives the password as ?password=, which Celery "
                "does not read: put it before the host, redis://:PASSWORD@host:6379/0"
            )
        if name not in _TLS_OPTIONS:
            raise ConfigError(
                f"the broker URL {shown!r} has an unknown parameter {name!r}; zoomtune reads "
                f"only {', '.join(_TLS_OPTIONS)} (for rediss://)"
            )
        if parts.scheme != "rediss":
            raise ConfigError(
                f"the broker URL {shown!r} has the TLS parameter {name!r}, but TLS needs "
                "a rediss:// URL"
            )
        if name == "ssl_cert_reqs":
            _cert_reqs_name(value)
        if name == "ssl_check_hostname" and value.lower() not in ("true", "false"):
            raise ConfigError(
                f"ssl_check_hostname in the broker URL must be true or false, got {value!r}"
            )


def _unreadable_url(shown: str) -> str:
    """Why a broker URL does not parse, from its redacted form only: the password may be what
    broke the parse (an unescaped '#', '?' or '/'), and must not show up in the message."""
    authority = shown.partition("://")[2].rpartition("@")[2].partition("/")[0]
    try:
        urlsplit(shown).port  # noqa: B018  (raises for a bad port or host)
    except ValueError:
        return (
            f"the broker URL {shown!r} has a bad host or port {authority!r}: expected "
            "HOST:PORT with a port from 1 to 65535 (redis://:PASSWORD@host:6379/0)"
        )
    return (
        f"the broker URL {shown!r} cannot be read: percent-encode special characters in the "
        "password ('%23' for '#', '%3F' for '?', '%2F' for '/', '%40' for '@')"
    )


def unverified_tls(url: str) -> str:
    """How `url` weakens TLS verification ('' when it does not), e.g. 'ssl_cert_reqs=none'."""
    query = dict(parse_qsl(urlsplit(url).query))
    reqs = query.get("ssl_cert_reqs", "required")
    if _cert_reqs_name(reqs) != "required":
        return f"ssl_cert_reqs={reqs}"
    if query.get("ssl_check_hostname", "true").lower() == "false":
        return "ssl_check_hostname=false"
    return ""


def redis_acl_rules(prefix: str) -> str:
    """The Redis ACL rules a zoomtune user needs: its own keys and channels, nothing dangerous.

    Every key and pub/sub channel zoomtune and Celery use starts with the prefix (Celery's
    `global_keyprefix`). Celery subscribes to its two broadcast channels with PSUBSCRIBE, which
    an ACL allows only for patterns it lists word for word: remote control (`celery.pidbox`,
    for `inspect` and Flower) and events (`celeryev/*`, for Flower). INFO is added back so that
    the coordinator notices a Redis restart at once; CONFIG stays forbidden (the coordinator
    then only warns that it cannot check AOF). `resetchannels` comes first because Redis 6.2
    grants every channel to a new user.

        user zoomtune on >PASSWORD resetchannels ~zoomtune:* &zoomtune:* ...
    """
    channels = f"&{prefix}* &{prefix}celery.pidbox &{prefix}celeryev/*"
    return f"resetchannels ~{prefix}* {channels} +@all -@dangerous +info"
