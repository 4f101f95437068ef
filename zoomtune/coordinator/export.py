"""A study's record as files: `trials.csv` and `study.json`, in the run folder or on stdout.

`StudyRecord` is everything known about a study at one moment, read from the study store or
back from a `study.json`; `coordinator status`, `export` and `report` all start from one.
`RoundSummary` is one round of it as `status` and `report.html` show it.

study.json carries each trial's intermediate values (`trial.report(step, value)`) as
`"reports": [[step, value], ...]` in its trial entry (an empty list when it reported none).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zoomtune.common.errors import ConfigError, MessageError
from zoomtune.common.parameters import ChoiceParameter
from zoomtune.common.space import Box, Interval, SearchSpace
from zoomtune.common.store import StudyStore
from zoomtune.common.store_records import RoundRecord
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialStatus, rungs_from_json

TRIAL_COLUMNS = (
    "trial",
    "round",
    "status",
    "score",
    "attempts",
    "worker",
    "started_at",
    "finished_at",
    "duration",
)
"""The first columns of trials.csv; `params_<name>` per parameter follow, then EXTRA_COLUMNS."""

EXTRA_COLUMNS = ("device", "host", "error", "last_step", "last_value")
"""`last_step` and `last_value`: where a PRUNED trial stopped and the value it reported there
(its score stays empty: a value from an earlier step is not comparable with final scores)."""


@dataclass(frozen=True)
class RoundSummary:
    """One round: its trials by state, its best trial and the box it sampled."""

    number: int
    trials: tuple[Trial, ...]
    box: Box
    box_values: Mapping[str, Mapping[str, Any]]
    """The box as stored: per parameter `low`/`high` values, or the `values` kept."""
    best: Trial | None
    volume: float
    """The share of the whole search space (in unit coordinates) the box covers."""

    def count(self, status: TrialStatus) -> int:
        return sum(1 for t in self.trials if t.status is status)


def box_volume(space: SearchSpace, box: Box) -> float:
    """The share of the unit cube of `space` that `box` covers (choices count by value);
    the children of a pruned choice branch, which left the box, do not count."""
    volume = 1.0
    reachable = space.reachable(box)
    for param in space:
        if param.name not in reachable:
            continue
        region = box[param.name]
        if isinstance(region, Interval):
            volume *= region.width
        elif isinstance(param, ChoiceParameter):
            volume *= len(region) / len(param.values)
    return volume


@dataclass(frozen=True)
class StudyRecord:
    spec: StudySpec
    state: str
    rounds: tuple[RoundRecord, ...]
    trials: tuple[Trial, ...]
    counters: Mapping[str, int] = field(default_factory=dict)
    message: str = ""
    """Why the study failed or was cancelled (empty otherwise)."""
    reports: Mapping[int, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    """Intermediate values `(step, value)` by trial number, for the trials that reported any."""

    @classmethod
    def from_store(cls, store: StudyStore) -> StudyRecord:
        spec = StudySpec.from_dict(store.spec(), source=f"study {store.study!r} in Redis")
        meta = store.meta()
        trials = tuple(store.trials())
        reports = store.all_reports(t.number for t in trials)
        return cls(
            spec=spec,
            state=meta.get("state", "unknown"),
            rounds=tuple(store.rounds()),
            trials=trials,
            counters=store.counters(),
            message=meta.get("message", ""),
            reports={n: tuple(values) for n, values in reports.items()},
        )

    @classmethod
    def from_json_file(cls, path: Path) -> StudyRecord:
        """Read a `study.json` written by `write_run_dir`."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            spec = StudySpec.from_dict(data["spec"], source=str(path))
            rounds = tuple(
                RoundRecord(
                    number=int(r["round"]),
                    box=r["box"],
                    first_trial=int(r["first_trial"]),
                    trials=int(r["trials"]),
                    rungs=rungs_from_json(r.get("rungs", [])),
                    provisional=bool(r.get("provisional", False)),
                )
                for r in data["rounds"]
            )
            trials = tuple(Trial.from_dict(t) for t in data["trials"])
            reports = {
                int(t["number"]): tuple((int(step), float(value)) for step, value in found)
                for t in data["trials"]
                if (found := t.get("reports"))
            }
        except (OSError, ValueError, KeyError, TypeError, MessageError) as exc:
            raise ConfigError(f"{path}: not a readable study.json ({exc})") from exc
        return cls(
            spec,
            str(data.get("state", "unknown")),
            rounds,
            trials,
            dict(data.get("counters", {})),
            str(data.get("message", "")),
            reports,
        )

    def best(self) -> Trial | None:
        """The best COMPLETE trial (the earliest among equals), or None. Trials of a round
        run ahead (`provisional`) count once it is final: they may yet be sent again."""
        complete = self.completed()
        if not complete:
            return None
        sign = -1.0 if self.spec.maximize else 1.0
        return min(complete, key=lambda t: (sign * (t.score or 0.0), t.number))

    def box(self, round_record: RoundRecord) -> Box:
        return Box.from_dict(round_record.box)

    def completed(self) -> list[Trial]:
        """The COMPLETE trials with a score, in trial order, but those of a round run ahead
        that is not final yet."""
        ahead = {r.number for r in self.rounds if r.provisional}
        return [
            t
            for t in self.trials
            if t.status is TrialStatus.COMPLETE and t.score is not None and t.round not in ahead
        ]

    def round_summaries(self) -> list[RoundSummary]:
        """Every round written so far, in order."""
        summaries = []
        for round_record in self.rounds:
            trials = tuple(t for t in self.trials if t.round == round_record.number)
            sub = StudyRecord(self.spec, self.state, (round_record,), trials)
            box = self.box(round_record)
            summaries.append(
                RoundSummary(
                    number=round_record.number,
                    trials=trials,
                    box=box,
                    box_values=round_record.box,
                    best=sub.best(),
                    volume=box_volume(self.spec.space, box),
                )
            )
        return summaries

    def to_json(self) -> dict[str, Any]:
        best = self.best()
        return {
            "spec": self.spec.to_dict(),
            "state": self.state,
            "message": self.message,
            "rounds": [
                {
                    "round": r.number,
                    "box": dict(r.box),
                    "first_trial": r.first_trial,
                    "trials": r.trials,
                    "rungs": [rung.to_list() for rung in r.rungs],
                    "provisional": r.provisional,
                }
                for r in self.rounds
            ],
            "trials": [
                {**t.to_dict(), "reports": [list(r) for r in self.reports.get(t.number, ())]}
                for t in self.trials
            ],
            "best": None
            if best is None
            else {"trial": best.number, "params": dict(best.params), "score": best.score},
            "counters": dict(self.counters),
        }


def _time(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, tz=UTC).isoformat(timespec="milliseconds")


def _cell(value: object) -> object:
    return "" if value is None else value


def trials_csv(record: StudyRecord) -> str:
    names = record.spec.space.names
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*TRIAL_COLUMNS, *(f"params_{n}" for n in names), *EXTRA_COLUMNS])
    for t in record.trials:
        writer.writerow(
            [
                t.number,
                t.round,
                t.status.value,
                _cell(t.score),
                t.attempt,
                _cell(t.worker),
                _time(t.started_at),
                _time(t.finished_at),
                _cell(t.duration),
                *(_cell(t.params.get(n)) for n in names),
                _cell(t.device),
                _cell(t.host),
                _cell(t.error),
                _cell(t.last_step),
                _cell(t.last_value),
            ]
        )
    return out.getvalue()


def study_json(record: StudyRecord) -> str:
    return json.dumps(record.to_json(), indent=2, allow_nan=False) + "\n"


def write_run_dir(record: StudyRecord, directory: Path) -> None:
    """Write trials.csv and study.json atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("trials.csv", trials_csv(record)), ("study.json", study_json(record))):
        partial = directory / f".{name}.partial"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, directory / name)
