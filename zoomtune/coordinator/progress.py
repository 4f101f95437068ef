"""What `coordinator start` shows while a study runs.

`LiveProgress` draws a rich display on a terminal:

```
study mlp-digits  ━━━━━━━━━━━━━━━╺━━━━━━━━━━━━━━━━━━━━━━━━  19/48
round 2/4         ━━━━━━━━━━━━━━━━━━━━━━━╺━━━━━━━━━━━━━━━━━  7/12  4 running, 1 failed
best so far 0.9685 (maximize)   elapsed 1:12   left ~2:55
```

Elapsed and estimated time left tick every second; the estimate is the trials left divided by
the pace of the trials finished since this coordinator started (so a resumed study does not
count the trials finished before). Notes (warnings, retries) are printed above the display and
stay in the scrollback. When stdout is not a terminal, `LogProgress` writes one plain,
timestamped line per event instead, so logs stay readable. Both receive the same calls from the
round loop (`zoomtune.coordinator.rounds`). Warnings the loop logs (a lease expired, a trial
re-sent) reach the display as notes too (`notes_from_logging`), so a log has one format.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from zoomtune.common.redact import RedactingFormatter, redact_url
from zoomtune.common.trial import Trial, TrialStatus


class StudyProgress(Protocol):
    def study_started(
        self, name: str, rounds: int, total_trials: int, resumed: bool, best: float | None = None
    ) -> None:
        """`best`: the best score of the rounds already finished, when the study resumes."""

    def round_started(self, number: int, trials: list[Trial]) -> None: ...
    def trial_changed(self, trial: Trial) -> None: ...
    def round_finished(self, number: int, best: tuple[Mapping[str, Any], float] | None) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class RoundTally:
    """Counts of one round's trials by state, kept from the events the loop sees."""

    states: dict[int, TrialStatus] = field(default_factory=dict)
    counts: Counter[TrialStatus] = field(default_factory=Counter)
    """How many trials are in each state, kept with `states` so a count costs no scan."""

    def update(self, trial: Trial) -> None:
        before = self.states.get(trial.number)
        if before is not None:
            self.counts[before] -= 1
        self.states[trial.number] = trial.status
        self.counts[trial.status] += 1

    def count(self, *statuses: TrialStatus) -> int:
        return sum(self.counts[status] for status in statuses)

    @property
    def total(self) -> int:
        return len(self.states)

    @property
    def finished(self) -> int:
        return self.count(TrialStatus.COMPLETE, TrialStatus.FAILED, TrialStatus.PRUNED)


@dataclass
class StudyClock:
    """Elapsed time, and the time left estimated from the pace of this run.

    `finished` counts every finished trial of the study, including those finished before a
    resume (`already_finished`); only the ones finished since `started` set the pace.
    """

    total_trials: int
    now: Callable[[], float] = time.monotonic
    started: float = 0.0
    already_finished: int | None = None
    finished: int = 0

    def __post_init__(self) -> None:
        self.started = self.now()

    def baseline(self, already_finished: int) -> None:
        """Trials that were finished when this run started (set once, at the first round)."""
        if self.already_finished is None:
            self.already_finished = already_finished
            self.finished = max(self.finished, already_finished)

    def elapsed(self) -> float:
        return self.now() - self.started

    def remaining(self) -> float | None:
        """Seconds left at the pace so far; None until a trial finished in this run."""
        finished_here = self.finished - (self.already_finished or 0)
        if finished_here <= 0:
            return None
        rate = finished_here / max(self.elapsed(), 1e-9)
        return max(0, self.total_trials - self.finished) / rate


@dataclass
class BestScore:
    """The best score so far, from the round loop's answer and from every finished trial."""

    maximize: bool
    score: float | None = None

    def offer(self, score: float | None) -> None:
        if score is None:
            return
        if self.score is None or (score > self.score if self.maximize else score < self.score):
            self.score = score

    def text(self) -> str:
        return "-" if self.score is None else f"{self.score:.6g}"


def duration_text(seconds: float | None) -> str:
    """`m:ss`, `h:mm:ss`, or `?` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Tracker:
    """What both displays keep: the rounds in flight and their tallies, the clock and the best
    score. With rolling rounds (`[search] lag`) several rounds run at once: `round` is the
    newest one started, and each trial counts in its own round's tally."""

    def __init__(self, maximize: bool) -> None:
        self.tallies: dict[int, RoundTally] = {}
        self.clock = StudyClock(0)
        self.best = BestScore(maximize)
        self.name = ""
        self.round = 0
        self.rounds = 0

    @property
    def tally(self) -> RoundTally:
        """The tally of the newest round started (an empty one before any)."""
        return self.tallies.get(self.round) or RoundTally()

    def study_started(self, name: str, rounds: int, total_trials: int, best: float | None) -> None:
        self.name, self.rounds = name, rounds
        self.clock = StudyClock(total_trials)
        self.best.offer(best)

    def round_started(self, number: int, trials: list[Trial]) -> None:
        first_started = not self.tallies
        self.round = number
        # A round that finished while it was the latest (the barrier) is done with now.
        for done in [n for n, t in self.tallies.items() if t.total and t.finished == t.total]:
            del self.tallies[done]
        tally = self.tallies[number] = RoundTally()
        for trial in trials:
            tally.update(trial)
            if trial.status is TrialStatus.COMPLETE:
                self.best.offer(trial.score)
        if first_started:
            # Trial numbers run on across rounds, and every trial of the rounds before the
            # first one started here is finished: that is what earlier runs did.
            earlier = min((t.number for t in trials), default=0)
            self.clock.baseline(earlier + tally.finished)
        else:
            self.clock.finished += tally.finished

    def round_finished(self, number: int) -> None:
        """A round whose every trial is finished is no longer shown (its tally is dropped)."""
        if number != self.round:
            self.tallies.pop(number, None)

    def trial_changed(self, trial: Trial) -> bool:
        """Record a trial's new state; True when it just finished."""
        tally = self.tallies.get(trial.round)
        if tally is None:
            return False
        before = tally.states.get(trial.number)
        tally.update(trial)
        if not trial.status.is_finished() or before == trial.status:
            return False
        self.clock.finished += 1
        if trial.status is TrialStatus.COMPLETE:
            self.best.offer(trial.score)
        return True

    def round_detail(self) -> str:
        running = sum(t.count(TrialStatus.RUNNING) for t in self.tallies.values())
        failed = sum(t.count(TrialStatus.FAILED) for t in self.tallies.values())
        pruned = sum(t.count(TrialStatus.PRUNED) for t in self.tallies.values())
        earlier = sorted(n for n in self.tallies if n != self.round)
        if not earlier:
            overlap = ""
        elif earlier[0] == self.round - 1:
            overlap = f", round {earlier[0]} finishing"
        else:
            overlap = f", rounds {earlier[0]}-{self.round - 1} finishing"
        shown_pruned = f", {pruned} pruned" if pruned else ""
        return f"{running} running, {failed} failed{shown_pruned}{overlap}"

    def times(self) -> str:
        return (
            f"elapsed {duration_text(self.clock.elapsed())}, "
            f"left ~{duration_text(self.clock.remaining())}"
        )


class LogProgress:
    """One plain, timestamped line per event, for logs and pipes."""

    def __init__(self, stream: TextIO | None = None, *, maximize: bool = False) -> None:
        self._stream = stream or sys.stdout
        self._track = _Tracker(maximize)

    def _say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {text}", file=self._stream, flush=True)

    def study_started(
        self, name: str, rounds: int, total_trials: int, resumed: bool, best: float | None = None
    ) -> None:
        self._track.study_started(name, rounds, total_trials, best)
        verb = "resuming" if resumed else "starting"
        so_far = "" if best is None else f"; best so far {self._track.best.text()}"
        self._say(f"{verb} study {name!r}: {rounds} rounds, {total_trials} trials{so_far}")

    def round_started(self, number: int, trials: list[Trial]) -> None:
        track = self._track
        track.round_started(number, trials)
        already = f", {track.tally.finished} already finished" if track.tally.finished else ""
        self._say(f"round {number}/{track.rounds}: {len(trials)} trials{already}")

    def trial_changed(self, trial: Trial) -> None:
        track = self._track
        if not track.trial_changed(trial):
            return
        if trial.status is TrialStatus.COMPLETE:
            outcome = f"score {trial.score:.6g}"
        elif trial.status is TrialStatus.PRUNED:
            value = "-" if trial.last_value is None else f"{trial.last_value:.6g}"
            outcome = f"pruned at step {trial.last_step} (value {value})"
        else:
            outcome = f"{trial.status.value}: {trial.error}"
        tally = track.tallies[trial.round]
        self._say(
            f"round {trial.round}/{track.rounds}: trial {trial.number} {outcome} "
            f"[{tally.finished}/{tally.total} done, {track.round_detail()}; "
            f"best {track.best.text()}; {track.times()}]"
        )

    def round_finished(self, number: int, best: tuple[Mapping[str, Any], float] | None) -> None:
        track = self._track
        track.best.offer(None if best is None else best[1])
        track.round_finished(number)
        self._say(
            f"round {number}/{track.rounds} done; best score so far {track.best.text()} "
            f"({track.times()})"
        )

    def note(self, text: str) -> None:
        self._say(redact_url(text))

    def close(self) -> None:
        return None


class _Screen:
    """The live display; rich renders it again on every refresh, so the clock ticks."""

    def __init__(self, track: _Tracker, bars: Progress) -> None:
        self._track, self._bars = track, bars

    def __rich__(self) -> RenderableType:
        track = self._track
        direction = "maximize" if track.best.maximize else "minimize"
        line = Table.grid(padding=(0, 3))
        line.add_row(
            f"best so far [bold green]{track.best.text()}[/] ({direction})",
            f"elapsed {duration_text(track.clock.elapsed())}",
            f"left ~{duration_text(track.clock.remaining())}",
        )
        return Group(self._bars, line)


class LiveProgress:
    """A live rich display on a terminal."""

    def __init__(self, console: Console | None = None, *, maximize: bool = False) -> None:
        self._console = console or Console()
        self._track = _Tracker(maximize)
        self._bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self._console,
        )
        self._study_task = self._bars.add_task("study", total=1, detail="")
        self._round_task = self._bars.add_task("round", total=1, detail="")
        self._live = Live(
            _Screen(self._track, self._bars),
            console=self._console,
            refresh_per_second=2,
            transient=False,
        )
        self._started = False

    def _refresh(self) -> None:
        track = self._track
        self._bars.update(
            self._round_task,
            description=f"round {track.round}/{track.rounds}",
            total=max(1, track.tally.total),
            completed=track.tally.finished,
            detail=track.round_detail(),
        )
        self._bars.update(self._study_task, completed=track.clock.finished)
        if self._started:
            self._live.refresh()

    def study_started(
        self, name: str, rounds: int, total_trials: int, resumed: bool, best: float | None = None
    ) -> None:
        self._track.study_started(name, rounds, total_trials, best)
        self._bars.update(self._study_task, description=f"study {name}", total=total_trials)
        if not self._started:
            self._live.start()
            self._started = True
        if resumed:
            self.note(f"resuming study {name!r}")
        self._refresh()

    def round_started(self, number: int, trials: list[Trial]) -> None:
        self._track.round_started(number, trials)
        self._refresh()

    def trial_changed(self, trial: Trial) -> None:
        self._track.trial_changed(trial)
        self._refresh()

    def round_finished(self, number: int, best: tuple[Mapping[str, Any], float] | None) -> None:
        self._track.best.offer(None if best is None else best[1])
        self._track.round_finished(number)
        self._refresh()

    def note(self, text: str) -> None:
        # Printed above the live display, so notes stay in the scrollback.
        self._console.print(redact_url(text), highlight=False, markup=False)

    def close(self) -> None:
        if self._started:
            self._refresh()
            self._live.stop()
            self._started = False


def make_progress(stream: TextIO | None = None, *, maximize: bool = False) -> StudyProgress:
    """A live display on a terminal, plain log lines otherwise."""
    stream = stream or sys.stdout
    if stream.isatty():
        return LiveProgress(Console(file=stream), maximize=maximize)
    return LogProgress(stream, maximize=maximize)


class NoteHandler(logging.Handler):
    """Log records shown as the display's notes (`warning: ...`), passwords hidden."""

    def __init__(self, progress: StudyProgress, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._progress = progress
        self.setFormatter(RedactingFormatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._progress.note(f"{record.levelname.lower()}: {self.format(record)}")
        except Exception:  # a broken display must not break the study: logging's own rule
            self.handleError(record)


@contextmanager
def notes_from_logging(progress: StudyProgress) -> Iterator[None]:
    """While the block runs, every warning logged in this process is a note of `progress`
    (Python's fallback handler would print it bare, without a timestamp, to stderr)."""
    handler = NoteHandler(progress)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
