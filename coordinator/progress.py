"""What `coordinator start` shows while a study runs.

`LiveProgress` draws a rich display on a terminal: round r of R, trials done / running / failed
in this round, the best score so far, elapsed time and an estimate of the time left. When stdout
is not a terminal, `LogProgress` writes one plain line per event instead, so logs stay readable.
Both receive the same calls from the round loop (`coordinator.rounds`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from common.trial import Trial, TrialStatus


class StudyProgress(Protocol):
    def study_started(self, name: str, rounds: int, total_trials: int, resumed: bool) -> None: ...
    def round_started(self, number: int, trials: list[Trial]) -> None: ...
    def trial_changed(self, trial: Trial) -> None: ...
    def round_finished(self, number: int, best: tuple[Mapping[str, Any], float] | None) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class RoundTally:
    """Counts of one round's trials by state, kept from the events the loop sees."""

    states: dict[int, TrialStatus] = field(default_factory=dict)

    def update(self, trial: Trial) -> None:
        self.states[trial.number] = trial.status

    def count(self, *statuses: TrialStatus) -> int:
        return sum(1 for status in self.states.values() if status in statuses)

    @property
    def total(self) -> int:
        return len(self.states)

    @property
    def finished(self) -> int:
        return self.count(TrialStatus.COMPLETE, TrialStatus.FAILED, TrialStatus.PRUNED)


@dataclass
class _Clock:
    """Elapsed time, and time left estimated from the pace of finished trials so far."""

    total_trials: int
    started: float = field(default_factory=time.monotonic)
    done_before: int = 0
    done: int = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float | None:
        finished_here = self.done - self.done_before
        if finished_here <= 0:
            return None
        rate = finished_here / max(self.elapsed(), 1e-9)
        return max(0, self.total_trials - self.done) / rate


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _score(best: tuple[Mapping[str, Any], float] | None) -> str:
    return "-" if best is None else f"{best[1]:.6g}"


class LogProgress:
    """One plain line per event, for logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._tally = RoundTally()
        self._clock = _Clock(0)
        self._round = 0
        self._rounds = 0
        self._best: tuple[Mapping[str, Any], float] | None = None
        self._maximize = True

    def _say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {text}", file=self._stream, flush=True)

    def study_started(self, name: str, rounds: int, total_trials: int, resumed: bool) -> None:
        self._rounds = rounds
        self._clock = _Clock(total_trials)
        verb = "resuming" if resumed else "starting"
        self._say(f"{verb} study {name!r}: {rounds} rounds, {total_trials} trials")

    def round_started(self, number: int, trials: list[Trial]) -> None:
        self._round = number
        self._tally = RoundTally()
        for trial in trials:
            self._tally.update(trial)
        self._say(f"round {number}/{self._rounds}: {len(trials)} trials")

    def trial_changed(self, trial: Trial) -> None:
        before = self._tally.states.get(trial.number)
        self._tally.update(trial)
        if trial.status.is_finished() and before != trial.status:
            self._clock.done += 1
            outcome = (
                f"score {trial.score:.6g}"
                if trial.status is TrialStatus.COMPLETE
                else f"{trial.status.value}: {trial.error}"
            )
            self._say(
                f"round {self._round}: trial {trial.number} {outcome} "
                f"[{self._tally.finished}/{self._tally.total} done, "
                f"{self._tally.count(TrialStatus.RUNNING)} running, "
                f"{self._tally.count(TrialStatus.FAILED)} failed; "
                f"elapsed {_duration(self._clock.elapsed())}, "
                f"left ~{_duration(self._clock.remaining())}]"
            )

    def round_finished(self, number: int, best: tuple[Mapping[str, Any], float] | None) -> None:
        self._best = best
        self._say(f"round {number}/{self._rounds} done; best score so far {_score(best)}")

    def note(self, text: str) -> None:
        self._say(text)

    def close(self) -> None:
        return None


class LiveProgress:
    """A live rich display on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self._console,
        )
        self._study_task = self._bars.add_task("study", total=1, detail="")
        self._round_task = self._bars.add_task("round", total=1, detail="")
        self._tally = RoundTally()
        self._clock = _Clock(0)
        self._round = 0
        self._rounds = 0
        self._best: tuple[Mapping[str, Any], float] | None = None
        self._notes: list[str] = []
        self._started = False
        self._live = Live(self._render(), console=self._console, refresh_per_second=4)

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        table.add_row(
            f"best so far: [bold green]{_score(self._best)}[/]",
            f"elapsed {_duration(self._clock.elapsed())}",
            f"left ~{_duration(self._clock.remaining())}",
        )
        return Group(self._bars, table, *self._notes[-3:])

    def _refresh(self) -> None:
        tally = self._tally
        self._bars.update(
            self._round_task,
            description=f"round {self._round}/{self._rounds}",
            total=max(1, tally.total),
            completed=tally.finished,
            detail=(
                f"{tally.count(TrialStatus.RUNNING)} running, "
                f"{tally.count(TrialStatus.FAILED)} failed"
            ),
        )
        self._bars.update(self._study_task, completed=self._clock.done)
        self._live.update(self._render())

    def study_started(self, name: str, rounds: int, total_trials: int, resumed: bool) -> None:
        self._rounds = rounds
        self._clock = _Clock(total_trials)
        self._bars.update(self._study_task, description=f"study {name}", total=total_trials)
        if not self._started:
            self._live.start()
            self._started = True
        if resumed:
            self.note(f"resuming study {name!r}")
        self._refresh()

    def round_started(self, number: int, trials: list[Trial]) -> None:
        self._round = number
        self._tally = RoundTally()
        for trial in trials:
            self._tally.update(trial)
        self._refresh()

    def trial_changed(self, trial: Trial) -> None:
        before = self._tally.states.get(trial.number)
        self._tally.update(trial)
        if trial.status.is_finished() and before != trial.status:
            self._clock.done += 1
        self._refresh()

    def round_finished(self, number: int, best: tuple[Mapping[str, Any], float] | None) -> None:
        self._best = best
        self._refresh()

    def note(self, text: str) -> None:
        self._notes.append(text)
        self._refresh()

    def close(self) -> None:
        if self._started:
            self._refresh()
            self._live.stop()
            self._started = False


def make_progress(stream: TextIO | None = None) -> StudyProgress:
    """A live display on a terminal, plain log lines otherwise."""
    stream = stream or sys.stdout
    if stream.isatty():
        return LiveProgress(Console(file=stream))
    return LogProgress(stream)
