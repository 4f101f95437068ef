"""The payload of a scikit-learn search: what the `sklearn-cv` objective needs besides a trial's
params (the estimator, X, y, the CV splits, the scorer), which a task message never carries.

`ZoomSearchCV.fit` pickles it ONCE per study and seals it with an HMAC-SHA256 over a magic
header, the study's name and the pickle, keyed with a secret that only the coordinator and the
workers hold (`ZOOMTUNE_PAYLOAD_KEY` or `ZOOMTUNE_PAYLOAD_KEY_FILE`, never in Redis; the
embedded default makes a new key per fit and hands it to its local workers in their
environment). The sealed payload is a file in the run folder (mode 0600) on the embedded
default, or the study's `payload` key in Redis on a cluster.

`open_payload` is the one place in zoomtune that unpickles, and it does so only after the HMAC
verifies (`hmac.compare_digest`): a payload that was forged, altered, sealed for another study
or with another key is refused before a single byte of it is unpickled. Only workers started
with `worker start --allow-sklearn-payloads` register the objective that calls it
(tests/test_untrusted_messages.py allows exactly this one load).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import pickle
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoomtune.common.errors import ConfigError, PayloadRefused

MAGIC = b"zoomtune-sklearn-payload-v1\n"
"""The first bytes of a sealed payload (covered by the HMAC too)."""

MAC_BYTES = hashlib.sha256().digest_size

KEY_ENV = "ZOOMTUNE_PAYLOAD_KEY"
"""The payload key as hex (at least `MIN_KEY_BYTES` bytes), for the coordinator and workers."""

KEY_FILE_ENV = "ZOOMTUNE_PAYLOAD_KEY_FILE"
"""A file holding the payload key as hex (keep it mode 0600), instead of `KEY_ENV`."""

MIN_KEY_BYTES = 32

FILE_SOURCE = "file:"
"""`trial.options["payload"]` of a payload in a file: "file:" followed by its absolute path."""

REDIS_SOURCE = "redis"
"""`trial.options["payload"]` of a payload stored under the study's `payload` key in Redis."""


@dataclass(frozen=True)
class CVPayload:
    """What every trial of one search shares. `choices` holds the candidates of parameters
    whose values are not JSON scalars (estimators, None, tuples): the trial's param is an
    index into them."""

    estimator: Any
    X: Any
    y: Any
    splits: tuple[tuple[Any, Any], ...]
    scorer: Any
    fit_params: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


def new_key() -> bytes:
    """A fresh random payload key."""
    return secrets.token_bytes(MIN_KEY_BYTES)


def parse_key(text: str, source: str) -> bytes:
    """A key from its hex form; ConfigError naming `source` when it is not one."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(f"{source}: the payload key must be hex digits") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{source}: the payload key must be at least {MIN_KEY_BYTES} bytes "
            f"({2 * MIN_KEY_BYTES} hex digits), got {len(key)} bytes; make one with "
            "`openssl rand -hex 32`"
        )
    return key


def key_from_env(env: Mapping[str, str]) -> bytes | None:
    """The payload key from `ZOOMTUNE_PAYLOAD_KEY` or the file `ZOOMTUNE_PAYLOAD_KEY_FILE`
    names; None when neither is set."""
    text, file = env.get(KEY_ENV), env.get(KEY_FILE_ENV)
    if text and file:
        raise ConfigError(f"set {KEY_ENV} or {KEY_FILE_ENV}, not both")
    if text:
        return parse_key(text, KEY_ENV)
    if file:
        try:
            return parse_key(Path(file).read_text(), f"{KEY_FILE_ENV} {file}")
        except OSError as exc:
            raise ConfigError(f"{KEY_FILE_ENV}: cannot read {file} ({exc.strerror})") from exc
    return None


def _mac(key: bytes, study: str, body: bytes) -> bytes:
    message = MAGIC + study.encode() + b"\0" + body
    return hmac.new(key, message, hashlib.sha256).digest()


def seal_payload(payload: CVPayload, study: str, key: bytes) -> bytes:
    """The payload pickled and signed for `study` with `key`."""
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + _mac(key, study, body) + body


def open_payload(sealed: bytes, study: str, key: bytes) -> CVPayload:
    """The payload, unpickled only once its HMAC for `study` verifies with `key`."""
    if not sealed.startswith(MAGIC) or len(sealed) <= len(MAGIC) + MAC_BYTES:
        raise PayloadRefused(f"study {study!r}: not a sealed zoomtune payload; nothing was loaded")
    mac = sealed[len(MAGIC) : len(MAGIC) + MAC_BYTES]
    body = sealed[len(MAGIC) + MAC_BYTES :]
    if not hmac.compare_digest(mac, _mac(key, study, body)):
        raise PayloadRefused(
            f"study {study!r}: the payload's HMAC does not verify (forged, altered, sealed for "
            "another study, or this worker holds another payload key); nothing was unpickled"
        )
    payload = pickle.loads(body)  # noqa: S301 - authenticated just above: our coordinator's
    if not isinstance(payload, CVPayload):
        raise PayloadRefused(f"study {study!r}: the payload is not a CVPayload")
    return payload


def to_text(sealed: bytes) -> str:
    """A sealed payload as text for Redis (whose client decodes replies to str)."""
    return base64.b64encode(sealed).decode("ascii")


def from_text(text: str, study: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PayloadRefused(f"study {study!r}: the stored payload is not base64") from None
