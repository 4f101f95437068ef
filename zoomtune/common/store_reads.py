"""Reading a study's record: its spec, meta, rounds, trials, reports, counters and events.

`StudyReader` only reads (and `delete`s); `zoomtune.common.store.StudyStore` adds the writes, each
one Lua script. Reads need no lock: the record is only ever changed by those scripts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, cast

import redis

from zoomtune.common.errors import StudyNotFound
from zoomtune.common.redis_client import call_redis
from zoomtune.common.store_keys import COUNTERS, Keys
from zoomtune.common.store_records import Event, RoundRecord, event_from_entry, trial_from_hash
from zoomtune.common.trial import Trial


class StudyReader:
    """Reads of the Redis record of one study. Stateless apart from the client: safe to share."""

    def __init__(self, client: redis.Redis, prefix: str, study: str) -> None:
        self.client = client
        self.keys = Keys(prefix, study)
        self.study = study

    # -- the server itself (no retries: the coordinator's outage handling decides on them) --

    def ping(self) -> None:
        self.client.ping()

    def server_run_id(self) -> str:
        """The run_id of the Redis server: it changes when the server restarts."""
        return str(self.client.info("server").get("run_id", ""))

    def server_time(self) -> float:
        """Redis's clock, in seconds (the clock leases and `queued_at` are on)."""
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    # -- the study's record --------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self._call(self.client.exists, self.keys.meta))

    def spec(self) -> dict[str, Any]:
        text = self._call(self.client.get, self.keys.spec)
        if text is None:
            raise StudyNotFound(f"no study named {self.study!r} in this broker")
        return cast(dict[str, Any], json.loads(text))

    def meta(self) -> dict[str, str]:
        meta = cast(dict[str, str], self._call(self.client.hgetall, self.keys.meta))
        if not meta:
            raise StudyNotFound(f"no study named {self.study!r} in this broker")
        return meta

    def rounds(self) -> list[RoundRecord]:
        """Every round written so far, in order."""
        count = int(self.meta().get("rounds", "0"))
        pipe = self.client.pipeline(transaction=False)
        for number in range(1, count + 1):
            pipe.hgetall(self.keys.round(number))
        return [RoundRecord.from_hash(row) for row in self._call(pipe.execute) if row]

    def trials(self, numbers: Iterable[int] | None = None) -> list[Trial]:
        """Trial records, in the order asked (default: all trials of the study)."""
        if numbers is None:
            numbers = range(int(self.meta().get("trials", "0")))
        numbers = list(numbers)
        pipe = self.client.pipeline(transaction=False)
        for n in numbers:
            pipe.hgetall(self.keys.trial(n))
        rows = self._call(pipe.execute)
        return [
            trial_from_hash(self.study, n, row) for n, row in zip(numbers, rows, strict=True) if row
        ]

    def trial(self, number: int) -> Trial:
        found = self.trials([number])
        if not found:
            raise StudyNotFound(f"study {self.study!r} has no trial {number}")
        return found[0]

    def reports(self, number: int) -> list[tuple[int, float]]:
        """Trial `number`'s intermediate values `(step, value)`, in the order reported."""
        return self.all_reports([number]).get(number, [])

    def all_reports(self, numbers: Iterable[int]) -> dict[int, list[tuple[int, float]]]:
        """The intermediate values of each trial in `numbers` that reported any (one pipeline),
        in report order (all its attempts')."""
        numbers = list(numbers)
        pipe = self.client.pipeline(transaction=False)
        for n in numbers:
            pipe.lrange(self.keys.reports(n), 0, -1)
        found = self._call(pipe.execute)
        return {
            n: [(int(step), float(value)) for step, value in map(json.loads, entries)]
            for n, entries in zip(numbers, found, strict=True)
            if entries
        }

    def payload(self) -> str | None:
        """The study's sealed scikit-learn payload as base64 text
        (`zoomtune.common.sklearn_payload`), or None. Data for `open_payload` to verify; never
        unpickled here."""
        return cast(str | None, self._call(self.client.get, self.keys.payload))

    def to_judge(self, numbers: Iterable[int]) -> set[int]:
        """Those of `numbers` whose trial is to be judged against rungs it did not run with
        (speculation: `StudyStore.revise_round`, `settle`); one pipelined read."""
        numbers = list(numbers)
        pipe = self.client.pipeline(transaction=False)
        for n in numbers:
            pipe.hget(self.keys.trial(n), "rejudge")
        found = self._call(pipe.execute)
        return {n for n, flag in zip(numbers, found, strict=True) if flag == "1"}

    def counters(self) -> dict[str, int]:
        raw = cast(dict[str, str], self._call(self.client.hgetall, self.keys.counters))
        return {name: int(raw.get(name, "0")) for name in COUNTERS}

    def last_event_id(self) -> str:
        entries = self._call(self.client.xrevrange, self.keys.events, count=1)
        return str(entries[0][0]) if entries else "0-0"

    def events(self, after: str, block: float) -> list[Event]:
        """Events after id `after`, waiting up to `block` seconds for the first one."""
        reply = self._call(
            self.client.xread, {self.keys.events: after}, count=1000, block=int(milliseconds(block))
        )
        return [
            event_from_entry(entry_id, fields)
            for _stream, entries in reply or []
            for entry_id, fields in entries
        ]

    def delete(self) -> int:
        """Remove every key of the study (used by `coordinator delete` and tests)."""
        removed = 0
        for key in self._call(self.client.scan_iter, match=self.keys.all_patterns(), count=1000):
            removed += int(self._call(self.client.delete, key))
        self._call(self.client.srem, Keys.studies(self.keys.prefix), self.study)
        return removed

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return call_redis(function, *args, **kwargs)


def list_studies(client: redis.Redis, prefix: str) -> list[str]:
    return sorted(call_redis(client.smembers, Keys.studies(prefix)))


def milliseconds(seconds: float) -> str:
    """`seconds` as whole milliseconds for Redis (rounded up, at least 1)."""
    return str(max(1, math.ceil(seconds * 1000)))
