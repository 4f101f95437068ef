"""The worker's Redis transport: kombu's, except that a queue entry that is not a message
envelope is dropped with one log line instead of stopping the worker.

kombu's Redis transport trusts what it reads from Redis. A worker BRPOPs an entry from its
queue and decodes it as JSON before anything of Celery's or zoomtune's runs; an entry that is
not UTF-8 or not JSON raises out of the event loop and the worker exits ("Unrecoverable
error"). JSON that is not an envelope (`[1]`, `null`, an object without `properties`, a
`delivery_tag` that is not a string, a `delivery_info` that is not an object, a body that is
not base64) fails as kombu builds its Message: some of these stop the worker too, the others
make it drop its connection and reconnect. An entry of the unacked hash (`unacked`, where a
delivered message waits for its ack) is decoded the same way by the sweep that puts expired
deliveries back: a forged one stops every worker that starts while it is there. So whoever can
LPUSH onto a trial queue, or HSET the unacked hash, could stop every worker with one entry.

`TrialQueueTransport` reads the same entries but checks them before kombu uses them
(`envelope_problem`, `unacked_problem`): a malformed entry is dropped (it is already off the
queue; a forged unacked entry is removed from the hash) with one line, "refused a queue entry
that is not a message envelope", that says why without echoing the entry, and the worker goes
on with the next one. Refused entries are not counted in the study store: an entry that is not
an envelope names no study, and the store's counters are per study.

A well-formed envelope still goes through `zoomtune.workers.intake` (task name, compression, size)
and then the trial message checks. The worker's Celery app uses this transport through
`broker_transport` (see `trial_queue_transport`); the coordinator, which only publishes, keeps
kombu's own.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections.abc import Mapping
from queue import Empty
from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger("zoomtune.worker")

REFUSED = "refused a queue entry that is not a message envelope"
"""The start of the one log line written for each entry dropped here."""

BODY_ENCODINGS = (None, "base64")
"""The body encodings kombu's Redis channel can decode (it writes base64)."""

_UNREADABLE = (UnicodeDecodeError, json.JSONDecodeError)
"""What kombu's `loads(bytes_to_str(entry))` raises for an entry that is not JSON text."""


def _kind(value: object) -> str:
    """The JSON name of a decoded value's type, for a refusal that does not echo the value."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def envelope_problem(entry: object) -> str | None:
    """Why a decoded queue entry cannot be a kombu message envelope; None if it can.

    The checks are those kombu and Celery rely on without checking: an object whose
    `properties` hold a `delivery_tag` string and a `delivery_info` object with `exchange` and
    `routing_key` strings, a `headers` object (or none), a `body` string (or none) in an
    encoding kombu can decode, and string content type and encoding (or none).
    """
    if not isinstance(entry, Mapping):
        return f"a JSON {_kind(entry)}, not an object"
    properties = entry.get("properties")
    if not isinstance(properties, Mapping):
        return "no 'properties' object"
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        return "no 'delivery_tag' string in its properties"
    info = properties.get("delivery_info")
    if not isinstance(info, Mapping) or not all(
        isinstance(info.get(field), str) for field in ("exchange", "routing_key")
    ):
        return "no 'delivery_info' object with 'exchange' and 'routing_key' strings"
    headers = entry.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        return f"'headers' is a JSON {_kind(headers)}, not an object"
    for field in ("content-type", "content-encoding"):
        value = entry.get(field)
        if value is not None and not isinstance(value, str):
            return f"'{field}' is a JSON {_kind(value)}, not a string"
    return _body_problem(entry.get("body"), properties.get("body_encoding"))


def _body_problem(body: object, encoding: object) -> str | None:
    if body is None:
        return None
    if not isinstance(body, str):
        return f"'body' is a JSON {_kind(body)}, not a string"
    if encoding not in BODY_ENCODINGS:
        shown = str(encoding)[:32] if isinstance(encoding, str) else _kind(encoding)
        return f"'body_encoding' {shown!r} is not one kombu decodes (base64)"
    if encoding == "base64" and body:
        try:
            binascii.a2b_base64(body.encode("ascii"))  # what kombu's base64 decode runs
        except (UnicodeEncodeError, binascii.Error):
            return "its body is not base64"
    return None


def read_unacked(raw: bytes | str) -> tuple[dict[str, Any], str, str] | str:
    """An entry of the unacked hash as (envelope, exchange, routing key), as kombu stores it
    (`[message, exchange, routing_key]` in JSON), or the reason it is not one."""
    try:
        decoded = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except _UNREADABLE as exc:
        return unreadable(exc)
    if not isinstance(decoded, list) or len(decoded) != 3:
        return "an unacked entry that is not [message, exchange, routing key]"
    message, exchange, routing_key = decoded
    if not isinstance(exchange, str) or not isinstance(routing_key, str):
        return "an unacked entry whose exchange or routing key is not a string"
    problem = envelope_problem(message)
    if problem is not None:
        return f"an unacked entry whose message is not an envelope: {problem}"
    return message, exchange, routing_key


def unreadable(exc: UnicodeDecodeError | json.JSONDecodeError) -> str:
    """Why an entry did not decode, without the entry itself."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    return f"not JSON ({exc.msg} at character {exc.pos})"


class TrialQueueQoS(kombu_redis.QoS):
    """kombu's ack emulation, whose restore of unacked deliveries drops forged entries, and
    whose ack forgets a delivery even when Redis is unreachable."""

    def ack(self, delivery_tag: Any) -> None:
        """kombu's ack, but the delivery leaves the prefetch window even when removing it from
        Redis's unacked index fails (Redis down between a trial's result and its ack): kombu
        leaves it counted, so a worker with prefetch 1 never consumed again (S7). The entry
        left in Redis is restored after the visibility timeout, a duplicate the store drops."""
        try:
            self._remove_from_indices(delivery_tag).execute()  # type: ignore[no-untyped-call]
        finally:
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        """kombu's `restore_by_tag` (in one transaction: read the entry, remove it from the
        unacked hash and index, push it back onto its queue), but a malformed entry is only
        removed, with one line."""

        def restore_transaction(pipe: Any) -> None:
            raw = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)  # type: ignore[no-untyped-call]
            if raw:
                self.channel.restore_entry(raw, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as connection:
            connection.transaction(restore_transaction, self.unacked_key)


class TrialQueueChannel(kombu_redis.Channel):
    """kombu's Redis channel, whose reads drop entries that do not decode as JSON."""

    QoS = TrialQueueQoS

    def _brpop_read(self, **options: Any) -> bool:
        # kombu pops the entry, then decodes it: an entry that is not JSON text is gone from
        # the queue by the time `loads` raises, so dropping it is only not delivering it.
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except _UNREADABLE as exc:
            self.refuse(unreadable(exc))
            raise Empty() from None

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        try:
            return super()._get(queue)  # type: ignore[no-untyped-call]
        except _UNREADABLE as exc:
            self.refuse(unreadable(exc), queue)
            raise Empty() from None

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        """kombu's `_restore` (a delivery this worker holds goes back to its queue, in one
        transaction), but a malformed unacked entry is only removed, with one line."""
        if not self.ack_emulation:
            super()._restore(message)  # type: ignore[no-untyped-call]
            return
        tag = message.delivery_tag

        def restore_transaction(pipe: Any) -> None:
            raw = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            pipe.hdel(self.unacked_key, tag)
            if raw:
                self.restore_entry(raw, pipe, leftmost)

        with self.conn_or_acquire() as client:
            client.transaction(restore_transaction, self.unacked_key)

    def restore_entry(self, raw: bytes | str, pipe: Any, leftmost: bool) -> None:
        """Queue the message of unacked entry `raw` on `pipe`, or refuse the entry."""
        entry = read_unacked(raw)
        if isinstance(entry, str):
            self.refuse(entry, self.unacked_key)
            return
        message, exchange, routing_key = entry
        self._do_restore_message(  # type: ignore[no-untyped-call]
            message, exchange, routing_key, pipe, leftmost
        )

    def refuse(self, problem: str, where: str | None = None) -> None:
        """Log one line for an entry dropped unused."""
        queues = where or ", ".join(sorted(self.active_queues)) or "?"
        log.warning("%s (%s): %s; dropped", REFUSED, queues, problem)


class _ShownAsScheme(type):
    """kombu writes the transport it was given into the broker URL it logs ("Connected to
    redis://..."), with str(): a transport class shows as the URL scheme it stands for."""

    scheme: str

    def __str__(cls) -> str:
        return cls.scheme


class TrialQueueTransport(kombu_redis.Transport, metaclass=_ShownAsScheme):
    """kombu's Redis transport with `TrialQueueChannel`, delivering envelopes only."""

    Channel = TrialQueueChannel
    scheme = "redis"

    def _deliver(self, message: Any, queue: str) -> None:
        problem = envelope_problem(message)
        if problem is not None:
            log.warning("%s (%s): %s; dropped", REFUSED, queue or "?", problem)
            return
        super()._deliver(message, queue)  # type: ignore[no-untyped-call]


class TlsTrialQueueTransport(TrialQueueTransport):
    """`TrialQueueTransport` for a rediss:// broker (named so in logs; TLS is configured as
    for kombu's own transport)."""

    scheme = "rediss"


def trial_queue_transport(broker_url: str) -> type[TrialQueueTransport]:
    """The transport class a worker's app uses for `broker_url` (`broker_transport`).

    Given a class, kombu still reads the host, port, password, database and `ssl_*`
    parameters from the URL, and takes `broker_use_ssl`, exactly as for its own transport; the
    class only decides which transport reads them.
    """
    if urlsplit(broker_url).scheme == "rediss":
        return TlsTrialQueueTransport
    return TrialQueueTransport


__all__ = [
    "REFUSED",
    "TlsTrialQueueTransport",
    "TrialQueueChannel",
    "TrialQueueQoS",
    "TrialQueueTransport",
    "envelope_problem",
    "read_unacked",
    "trial_queue_transport",
    "unreadable",
]
