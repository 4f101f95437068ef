"""Where `coordinator dashboard` reads its study from, afresh at each read: a broker's record,
or a run folder's study.json.

- `BrokerSource` reads the record in two pipelined round trips (the spec, meta and counters;
  then the rounds, and each trial not yet finished with its reports), so a study of thousands
  of trials costs one read, not a request per trial. Finished trials are kept, since the store
  never changes them again; so is the parsed spec, parsed again if its text changes.
- `RunFolderSource` reads a run folder's study.json again whenever the file changes. The
  embedded default keeps its Redis password to itself, so while such a study runs, its
  study.json (rewritten after each round) is the only record a second process can read: it lags
  at most a round behind. A study on a broker is live to the trial.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from zoomtune.common.errors import ConfigError, StudyNotFound
from zoomtune.common.redis_client import call_redis
from zoomtune.common.store_keys import COUNTERS
from zoomtune.common.store_reads import StudyReader
from zoomtune.common.store_records import RoundRecord, trial_from_hash
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial
from zoomtune.coordinator.export import StudyRecord


class RecordSource(Protocol):
    """Reads a study's record as it is now."""

    def read(self) -> StudyRecord: ...

    def describe(self) -> str: ...


@dataclass
class BrokerSource:
    """A study's record on a broker, read with two pipelines per call.

    A finished trial (complete, failed or pruned) never changes again in the store once its
    round is final and it is not to be judged (only speculation changes a finished trial), so
    the trials and reports it has seen so are kept and only the others are read again: a read
    of a study of 1,000 finished trials asks for its meta, counters and rounds alone. The kept
    trials belong to the study's `epoch` (a study deleted and started afresh gets a new one) and
    are dropped with it.
    """

    reader: StudyReader
    where: str = "the broker"
    _spec: tuple[str, StudySpec] | None = None
    _epoch: str = ""
    _finished: dict[int, tuple[Trial, tuple[tuple[int, float], ...]]] = field(default_factory=dict)

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
        if meta.get("epoch", "") != self._epoch:
            self._epoch, self._finished = meta.get("epoch", ""), {}
        rounds = int(meta.get("rounds", "0"))
        unfinished = [n for n in range(int(meta.get("trials", "0"))) if n not in self._finished]
        pipe = self.reader.client.pipeline(transaction=False)
        for number in range(1, rounds + 1):
            pipe.hgetall(keys.round(number))
        for number in unfinished:
            pipe.hgetall(keys.trial(number))
            pipe.lrange(keys.reports(number), 0, -1)
        rows: list[Any] = call_redis(pipe.execute)
        round_rows, trial_rows = rows[:rounds], rows[rounds:]
        found = {
            number: (
                trial_from_hash(self.reader.study, number, row),
                tuple((int(step), float(value)) for step, value in map(json.loads, reports)),
            )
            for number, row, reports in zip(
                unfinished, trial_rows[0::2], trial_rows[1::2], strict=True
            )
            if row
        }
        # A finished trial of a round run ahead may still be sent again or settled until its
        # round is final and it is no longer to be judged (zoomtune.coordinator.speculation).
        ahead = {int(row["round"]) for row in round_rows if row.get("provisional") == "1"}
        settled = {
            number
            for number, row in zip(unfinished, trial_rows[0::2], strict=True)
            if row and row.get("rejudge") != "1" and int(row.get("round", "0")) not in ahead
        }
        self._finished.update(
            (number, entry)
            for number, entry in found.items()
            if entry[0].status.is_finished() and number in settled
        )
        trials = dict(sorted({**self._finished, **found}.items()))
        return StudyRecord(
            spec=self._parsed(spec_text),
            state=meta.get("state", "unknown"),
            rounds=tuple(RoundRecord.from_hash(row) for row in round_rows if row),
            trials=tuple(trial for trial, _ in trials.values()),
            counters={name: int(counters.get(name, "0")) for name in COUNTERS},
            message=meta.get("message", ""),
            reports={number: reports for number, (_, reports) in trials.items() if reports},
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
