"""Where `coordinator dashboard` reads its study from, afresh at each read: a broker's record,
or a run folder's study.json.

- `BrokerSource` reads the record in two pipelined round trips (the spec, meta and counters;
  then every round, trial and trial's reports), so a study of thousands of trials costs one
  snapshot, not a request per trial. Nothing is kept between reads except the parsed spec,
  which a study never changes (it is parsed again if its text does).
- `RunFolderSource` reads a run folder's study.json again whenever the file changes. The
  embedded default keeps its Redis password to itself, so while such a study runs, its
  study.json (rewritten after each round) is the only record a second process can read: it lags
  at most a round behind. A study on a broker is live to the trial.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.errors import ConfigError, StudyNotFound
from common.redis_client import call_redis
from common.store_keys import COUNTERS
from common.store_reads import StudyReader
from common.store_records import RoundRecord, trial_from_hash
from common.study import StudySpec
from coordinator.export import StudyRecord


class RecordSource(Protocol):
    """Reads a study's record as it is now."""

    def read(self) -> StudyRecord: ...

    def describe(self) -> str: ...


@dataclass
class BrokerSource:
    """A study's record on a broker, read with two pipelines per call."""

    reader: StudyReader
    where: str = "the broker"
    _spec: tuple[str, StudySpec] | None = None

    def describe(self) -> str:
        return f"study {self.reader.study!r} on {self.where}, live"

    def read(self) -> StudyRecord:
        keys = self.reader.keys
        pipe = self.reader.client.pipeline(transaction=False)
        pipe.get(keys.spec)
        pipe.hgetall(keys.meta)
        pipe.hgetall(keys.counters)
        spec_text, meta, counters = call_redis(pipe.execute)
        if spec_text is None or not meta:
            raise StudyNotFound(f"no study named {self.reader.study!r} in {self.where}")
        rounds = int(meta.get("rounds", "0"))
        trials = int(meta.get("trials", "0"))
        pipe = self.reader.client.pipeline(transaction=False)
        for number in range(1, rounds + 1):
            pipe.hgetall(keys.round(number))
        for number in range(trials):
            pipe.hgetall(keys.trial(number))
            pipe.lrange(keys.reports(number), 0, -1)
        rows: list[Any] = call_redis(pipe.execute)
        round_rows, trial_rows = rows[:rounds], rows[rounds:]
        study = self.reader.study
        return StudyRecord(
            spec=self._parsed(spec_text),
            state=meta.get("state", "unknown"),
            rounds=tuple(RoundRecord.from_hash(row) for row in round_rows if row),
            trials=tuple(
                trial_from_hash(study, number, row)
                for number, row in enumerate(trial_rows[0::2])
                if row
            ),
            counters={name: int(counters.get(name, "0")) for name in COUNTERS},
            message=meta.get("message", ""),
            reports={
                number: tuple((int(step), float(value)) for step, value in map(json.loads, found))
                for number, found in enumerate(trial_rows[1::2])
                if found
            },
        )

    def _parsed(self, text: str) -> StudySpec:
        if self._spec is None or self._spec[0] != text:
            source = f"study {self.reader.study!r} in Redis"
            self._spec = (text, StudySpec.from_dict(json.loads(text), source=source))
        return self._spec[1]


@dataclass
class RunFolderSource:
    """A run folder's study.json, read again when it changes."""

    folder: Path
    study: str | None = None
    """The study the user named: the folder must hold it."""
    _cached: tuple[tuple[int, int], StudyRecord] | None = None

    @property
    def path(self) -> Path:
        return self.folder / "study.json"

    def describe(self) -> str:
        return f"{self.path} (read again whenever the coordinator rewrites it, after each round)"

    def read(self) -> StudyRecord:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise ConfigError(
                f"{self.folder} has no study.json (yet: the coordinator writes it after each "
                "round): give the run folder of a study that has run a round, or the broker that "
                "holds it (--broker URL or ZOOMTUNE_BROKER_URL)"
            ) from None
        version = (stat.st_mtime_ns, stat.st_size)
        if self._cached is None or self._cached[0] != version:
            record = StudyRecord.from_json_file(self.path)
            if self.study is not None and record.spec.name != self.study:
                raise ConfigError(
                    f"{self.folder} holds study {record.spec.name!r}, not {self.study!r}"
                )
            self._cached = (version, record)
        return self._cached[1]
