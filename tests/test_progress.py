"""What `coordinator start` shows while a study runs: a live display on a terminal, plain log
lines otherwise."""

from __future__ import annotations

import io
import re

from rich.console import Console

from tests.harness import wait_until
from zoomtune.common.trial import Trial, TrialStatus
from zoomtune.coordinator.progress import (
    LiveProgress,
    LogProgress,
    RoundTally,
    StudyClock,
    make_progress,
)


def trial(
    number: int,
    status: TrialStatus = TrialStatus.QUEUED,
    score: float | None = None,
    round_number: int = 1,
) -> Trial:
    error = "objective returned NaN" if status is TrialStatus.FAILED else None
    return Trial("demo", number, round_number, {"x": 0.5}, status, score=score, error=error)


class TerminalBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def play_round_one(progress: LogProgress | LiveProgress) -> None:
    """Round 1 of 2 with 3 trials: one scores 0.8, one 0.5, one fails."""
    progress.study_started("demo", rounds=2, total_trials=6, resumed=False)
    progress.round_started(1, [trial(0), trial(1), trial(2)])
    progress.trial_changed(trial(0, TrialStatus.RUNNING))
    progress.trial_changed(trial(1, TrialStatus.RUNNING))
    progress.trial_changed(trial(0, TrialStatus.COMPLETE, 0.8))
    progress.trial_changed(trial(2, TrialStatus.RUNNING))
    progress.trial_changed(trial(2, TrialStatus.FAILED))
    progress.trial_changed(trial(1, TrialStatus.COMPLETE, 0.5))


def test_log_lines_say_the_round_the_counts_the_best_score_and_the_times() -> None:
    out = io.StringIO()
    progress = LogProgress(out, maximize=False)

    play_round_one(progress)
    progress.round_finished(1, ({"x": 0.5}, 0.5))

    lines = out.getvalue().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    assert "\x1b" not in out.getvalue()  # no terminal escapes in logs
    assert lines[0].endswith("starting study 'demo': 2 rounds, 6 trials")
    assert lines[1].endswith("round 1/2: 3 trials")
    assert "trial 0 score 0.8 [1/3 done, 1 running, 0 failed; best 0.8;" in lines[2]
    assert "trial 2 failed: objective returned NaN [2/3 done, 1 running, 1 failed;" in lines[3]
    # minimizing: the later 0.5 beats the earlier 0.8
    assert "trial 1 score 0.5 [3/3 done, 0 running, 1 failed; best 0.5;" in lines[4]
    assert re.search(r"elapsed \d+:\d\d, left ~\d+:\d\d\]$", lines[4])
    assert re.search(
        r"round 1/2 done; best score so far 0.5 \(elapsed \d+:\d\d, left ~\d+:\d\d\)$", lines[5]
    )


def test_the_best_score_follows_the_direction() -> None:
    out = io.StringIO()
    play_round_one(LogProgress(out, maximize=True))
    assert "best 0.8;" in out.getvalue().splitlines()[-1]


def test_a_resumed_round_counts_what_had_finished_before() -> None:
    out = io.StringIO()
    progress = LogProgress(out)
    progress.study_started("demo", rounds=2, total_trials=6, resumed=True)
    progress.round_started(
        2,
        [
            trial(3, TrialStatus.COMPLETE, 0.1, 2),
            trial(4, round_number=2),
            trial(5, round_number=2),
        ],
    )
    progress.trial_changed(trial(4, TrialStatus.COMPLETE, 0.3, 2))
    text = out.getvalue()
    assert "resuming study 'demo'" in text
    assert "round 2/2: 3 trials, 1 already finished" in text
    assert "[2/3 done, 0 running, 0 failed; best 0.1;" in text


def test_time_left_is_paced_by_the_trials_finished_in_this_run_only() -> None:
    # Given a resumed study: 10 trials, 4 finished before this coordinator started
    now = [100.0]
    clock = StudyClock(total_trials=10, now=lambda: now[0])
    clock.baseline(4)
    assert clock.remaining() is None  # no pace yet

    # When 2 more finish in the first 10 seconds
    now[0] = 110.0
    clock.finished += 2

    # Then 4 trials are left at 1 trial per 5 s
    assert clock.remaining() == 20.0
    clock.baseline(99)  # the baseline is taken once
    assert clock.remaining() == 20.0


def test_the_live_display_shows_round_counts_best_and_times_on_a_terminal() -> None:
    out = TerminalBuffer()
    progress = LiveProgress(Console(file=out, force_terminal=True, width=100), maximize=True)
    play_round_one(progress)
    progress.note("warning: a note for the scrollback")
    progress.round_finished(1, ({"x": 0.5}, 0.8))
    progress.close()

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    last = text[text.rindex("study demo") :]
    assert re.search(r"study demo\s.*3/6", last)
    assert re.search(r"round 1/2\s.*3/3\s+0 running, 1 failed", last)
    assert "best so far 0.8 (maximize)" in last
    assert re.search(r"elapsed \d+:\d\d\s+left ~\d+:\d\d", last)
    assert "warning: a note for the scrollback" in text


def test_the_live_clock_ticks_without_events() -> None:
    out = TerminalBuffer()
    progress = LiveProgress(Console(file=out, force_terminal=True, width=100))
    progress.study_started("demo", rounds=1, total_trials=2, resumed=False)
    try:
        wait_until(lambda: "elapsed 0:01" in out.getvalue(), timeout=10, what="the clock")
    finally:
        progress.close()


def test_make_progress_draws_live_only_on_a_terminal() -> None:
    assert isinstance(make_progress(io.StringIO()), LogProgress)
    live = make_progress(TerminalBuffer())
    assert isinstance(live, LiveProgress)
    live.close()


def test_a_round_tally_counts_each_trial_in_its_latest_state_only() -> None:
    tally = RoundTally()
    for number in range(4):
        tally.update(trial(number))
    tally.update(trial(0, TrialStatus.RUNNING))
    tally.update(trial(1, TrialStatus.RUNNING))
    tally.update(trial(0, TrialStatus.COMPLETE, 0.8))
    tally.update(trial(0, TrialStatus.COMPLETE, 0.8))  # the same news twice
    tally.update(trial(1, TrialStatus.QUEUED))  # handed back

    assert tally.total == 4
    assert tally.count(TrialStatus.QUEUED) == 3
    assert tally.count(TrialStatus.RUNNING) == 0
    assert tally.finished == 1
    assert tally.count(TrialStatus.QUEUED, TrialStatus.COMPLETE) == 4


def test_after_a_barrier_the_next_round_counts_only_its_own_trials() -> None:
    # Given round 1 finished (with a failure) before round 2 started, as with lag 0
    out = io.StringIO()
    progress = LogProgress(out, maximize=False)
    play_round_one(progress)
    progress.round_finished(1, ({"x": 0.5}, 0.5))

    # When round 2 runs
    progress.round_started(2, [trial(3, round_number=2), trial(4, round_number=2)])
    progress.trial_changed(trial(3, TrialStatus.COMPLETE, 0.4, round_number=2))

    # Then its lines neither count round 1's failure nor call round 1 still finishing
    line = out.getvalue().splitlines()[-1]
    assert "trial 3 score 0.4 [1/2 done, 0 running, 0 failed; best 0.4;" in line
    assert "finishing" not in line


def test_with_rolling_rounds_an_earlier_round_still_running_is_shown_finishing() -> None:
    out = io.StringIO()
    progress = LogProgress(out, maximize=False)
    progress.study_started("demo", rounds=2, total_trials=4, resumed=False)
    progress.round_started(1, [trial(0), trial(1)])
    progress.trial_changed(trial(0, TrialStatus.COMPLETE, 0.8))
    progress.round_started(2, [trial(2, round_number=2), trial(3, round_number=2)])
    progress.trial_changed(trial(2, TrialStatus.COMPLETE, 0.7, round_number=2))
    assert "round 1 finishing" in out.getvalue().splitlines()[-1]
