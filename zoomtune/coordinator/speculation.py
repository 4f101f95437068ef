"""Speculation (`[search] speculate`): the next rounds run ahead while the last trials before
them still run, without changing the study.

With the round barrier, round r+1 waits for round r's slowest trial and the slots behind it
idle. Speculation writes round r+1 to the store as *provisional* once workers have taken every
message: sampled as if the reference trials still running ended with a guessed score
(`guess_scores`; failed when there is no guess), and sends it. Once workers have taken all of
its messages too, round r+2 follows the same way, narrowed from round r+1 as run ahead and the
guessed scores of its trials (up to `DEPTH` rounds ahead). Each result that comes in re-samples
them; trials whose parameters changed are sent again as their next attempt
(`StudyStore.revise_round`: a running attempt of such a trial loses it, its result and reports
are dropped), and trials whose rungs alone changed get them in place: queued ones keep their
message and their place in the queue and start on them, started ones are judged once finished
(`zoomtune.common.trial.judge`). Once every reference trial is finished the round is sampled
for real and made final the same way: the trials that came out the same are kept, finished or
running, and their results are told to the search only then.

Round r+1's parameters depend only on the seed and its box, so the study is exactly the one
without speculation; the guess only decides how much of the work done ahead is kept. Its
price is the compute of the trials sent again (BENCHMARKS.md measures both).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoomtune.common.errors import StoreError
from zoomtune.common.store import StudyStore
from zoomtune.common.store_records import CoordinatorLock, Revision, RoundRecord
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Rung, Trial, TrialStatus, judge, sorted_curve
from zoomtune.coordinator.dispatcher import TrialSender
from zoomtune.coordinator.progress import StudyProgress
from zoomtune.coordinator.pruning import ReferenceCurve
from zoomtune.coordinator.search import CoarseToFine, Provisional

DEPTH = 3
"""How many rounds may run ahead at once. With one, a round of as many trials as there are
slots leaves slots idle behind the last trial of the round two back, and with early stopping
every round waits on the one or two trials of the round before it that run to the end. Measured
(`python -m bench.training`, 8 slots, 3 seeds; BENCHMARKS.md): utilization at 8 x 12 0.84 /
0.91 / 0.92 / 0.93 with 1 / 2 / 3 / 5 rounds ahead, wall time with early stopping at 16 x 6
6.0 / 5.7 / 4.7 / 4.7 s. Deeper rounds are guessed from guesses, so more of their trials are
sent again: compute only, the study is the same."""

RESAMPLE_SECONDS = 0.1
"""While rounds run ahead, the loop samples them again this long after the last time even when
no result came in: the reports of the trials they depend on sharpen the guess (and, with early
stopping, their rungs) as they run, best before workers take their trials. Each time is a few
reads of the running trials' reports and one sampling per round; the store is written only for
a round that came out different (its trials whose params changed are then sent again; those
whose rungs alone changed get them in place)."""

Curve = tuple[Sequence[int], Sequence[float]]
"""A learning curve so far: steps (ascending) and the values reported at them."""


@dataclass(frozen=True)
class Ahead:
    """A provisional round in the store: what the loop wrote (or last revised) it with."""

    round: int
    batch: tuple[Mapping[str, Any], ...]
    rungs: tuple[Rung, ...]


def guess_scores(
    running: Mapping[int, Curve], finished: Sequence[ReferenceCurve], maximize: bool
) -> dict[int, float]:
    """A guess at the final score of each running trial that has reported: the score of the
    finished trial whose value at the running one's last reported step was nearest (ties: the
    worse score, then the lower trial number), shifted by how far the running trial is from it
    there, so that a trial ahead of every finished one at its step is guessed ahead of them at
    the end too (it is then the one the next box closes around). Trials without a comparable
    finished trial get no guess. Only a guess: it decides what runs ahead, never what the study
    is."""
    complete = [curve for curve in finished if curve.is_complete]
    guesses: dict[int, float] = {}
    for number, (steps, values) in running.items():
        if not steps:
            continue
        step, value = steps[-1], values[-1]
        best: tuple[float, float, int, float] | None = None
        for curve in complete:
            theirs = curve.at(step)
            if theirs is None or curve.score is None:
                continue
            worse_first = curve.score if maximize else -curve.score
            key = (abs(theirs - value), worse_first, curve.trial, value - theirs)
            if math.isfinite(key[0]) and (best is None or key < best):
                best = key
        if best is not None:
            guesses[number] = (best[1] if maximize else -best[1]) + best[3]
    return guesses


class Speculation:
    """The provisional rounds of one running study (up to `DEPTH`, in round order) and their
    finished trials, held until their round is final."""

    def __init__(
        self,
        spec: StudySpec,
        store: StudyStore,
        sender: TrialSender,
        progress: StudyProgress,
        rungs_of: Callable[[Sequence[Trial], Sequence[ReferenceCurve]], tuple[Rung, ...]],
        depth: int = DEPTH,
    ) -> None:
        """`rungs_of(finished, assumed)` gives the early-stopping rungs from finished reference
        trials and the curves of the others: running ones assumed complete (with a guessed
        score), and those of rounds run ahead as they finished."""
        self.spec = spec
        self.store = store
        self.sender = sender
        self.progress = progress
        self.rungs_of = rungs_of
        self.depth = depth
        self.ahead: list[Ahead] = []
        self.held: dict[int, Trial] = {}
        self.judging: set[int] = set()
        """Running trials of final rounds to judge when they finish (`settle_finished`)."""
        self.sampled_at = 0.0
        """When `advance` last ended (time.monotonic())."""
        self.awaiting_reports = False
        """`advance` last found no trial of the round before that completed or reported."""

    def reset(self) -> None:
        """Forget everything: the loop reads the study back from the store (`resume`)."""
        self.ahead, self.held, self.judging = [], {}, set()
        self.awaiting_reports = False

    def is_ahead(self, trial: Trial) -> bool:
        """Whether `trial` is of a provisional round (not shown, not told, until final)."""
        return bool(self.ahead) and trial.round >= self.ahead[0].round

    def written_ahead(self, number: int) -> bool:
        """Whether round `number`, the next to ask, is in the store as provisional."""
        return bool(self.ahead) and self.ahead[0].round == number

    def may_start(self, search: CoarseToFine) -> bool:
        """Whether a round could be written ahead once the queue is empty: fewer than `depth`
        are, and the study has a round after them."""
        if not self.spec.search.speculate or len(self.ahead) >= self.depth:
            return False
        return search.rounds_asked + len(self.ahead) < self.spec.search.rounds

    def resample_at(self) -> float | None:
        """When (time.monotonic()) `advance` is due again even without news of a result
        (`RESAMPLE_SECONDS` after it last ended): the rounds run ahead, or a round not yet run
        ahead because the one before it had no trial that completed or reported, may come out
        different with the reports since. None otherwise."""
        if not self.ahead and not self.awaiting_reports:
            return None
        return self.sampled_at + RESAMPLE_SECONDS

    def resume(
        self, record: RoundRecord, trials: Sequence[Trial], in_flight: dict[int, Trial]
    ) -> None:
        """Take over a provisional round found in the store, the one after those taken over
        before (`send_queued` sends it)."""
        self.ahead.append(Ahead(record.number, tuple(dict(t.params) for t in trials), record.rungs))
        self.held.update({t.number: t for t in trials if t.status.is_finished()})
        for trial in trials:
            if not trial.status.is_finished():
                in_flight[trial.number] = trial

    def send_queued(self, in_flight: Mapping[int, Trial]) -> None:
        if not self.ahead:
            return
        self.sender.send_all(
            [
                trial
                for _, trial in sorted(in_flight.items())
                if self.is_ahead(trial) and trial.status is TrialStatus.QUEUED
            ]
        )

    def advance(
        self,
        search: CoarseToFine,
        lock: CoordinatorLock,
        epoch: str,
        in_flight: dict[int, Trial],
        finished: Mapping[int, Trial],
        curves: dict[int, ReferenceCurve],
        news: bool = True,
    ) -> None:
        """Write one round more ahead once workers have taken every message, and bring those
        written ahead up to date with the results and reports so far. `finished` holds the
        trials told to the search by number; `curves` the learning curves already read (filled
        in here). Without `news` (a result read since the last call) the rounds ahead are
        sampled again only when `resample_at` is due or a round more can go out: a worker
        that took a message changes nothing they are sampled from."""
        deeper = self._may_go_deeper(search)
        if not (news or deeper) and time.monotonic() < self.sampled_at + RESAMPLE_SECONDS:
            return
        try:
            self.awaiting_reports = False
            if not self.spec.search.speculate or search.can_ask():
                return
            depth = len(self.ahead) + int(deeper)
            if depth == 0:
                return
            deepest = search.rounds_asked + depth
            untold = [n for n in search.reference(deepest) if n not in finished]
            running = self.store.trials([n for n in untold if n not in self.held])
            if any(t.status.is_finished() for t in running):
                return  # results the loop has not read yet: guess once it has
            # Guessed from every told and held trial, not only the reference of the deepest
            # round: with `lag` that grows with depth, and a guess must not depend on it.
            held = list(self.held.values())
            guesses, assumed = self._guesses(running, list(finished.values()), held, curves)
            scores: dict[int, float | None] = dict(guesses)
            scores.update({t.number: t.completed_score for t in held})
            pruned = [t.number for t in held if t.status is TrialStatus.PRUNED]
            ran_with = {
                search.first_trial(ahead.round) + i: params
                for ahead in self.ahead
                for i, params in enumerate(ahead.batch)
            }
            rounds = search.provisional_rounds(scores, depth, pruned, ran_with)
            changed = {
                number
                for ahead in rounds
                for number, params in enumerate(ahead.batch, search.first_trial(ahead.round))
                if number in ran_with and ran_with[number] != params
            }
            # Their curves so far are of other params: they are about to be sent again.
            assumed = [curve for curve in assumed if curve.trial not in changed]
            kept = {n: t for n, t in self.held.items() if n not in changed}
            guessed = {n: g for n, g in guesses.items() if n not in changed}
            if deeper and not _may_complete(search, deepest - 1, finished, kept, guessed):
                self.awaiting_reports = True  # a report makes no event: `resample_at` polls
                rounds = rounds[:-1]  # the study may yet fail at that round: not run ahead of
            for index, ahead in enumerate(rounds):
                reference = search.reference(ahead.round)
                self._bring_up_to_date(
                    index, ahead, reference, lock, epoch, in_flight, finished, assumed
                )
        finally:
            self.sampled_at = time.monotonic()

    def _may_go_deeper(self, search: CoarseToFine) -> bool:
        """Whether one more round may be written ahead: fewer than `depth` are, the study has
        one more, and workers have taken every message."""
        if not self.may_start(search):
            return False
        return self.sender.dispatcher.queue_length(self.sender.queue) == 0

    def _bring_up_to_date(
        self,
        index: int,
        ahead: Provisional,
        reference: range,
        lock: CoordinatorLock,
        epoch: str,
        in_flight: dict[int, Trial],
        finished: Mapping[int, Trial],
        assumed: Sequence[ReferenceCurve],
    ) -> None:
        """Write round `ahead` as the `index`-th provisional round, or revise it there if it
        came out different; send the trials that changed. `reference`: its reference trials;
        `assumed`: the curves of those not told (`_guesses`)."""
        rungs = self.rungs_of(
            [finished[n] for n in reference if n in finished],
            [curve for curve in assumed if curve.trial in reference],
        )
        wanted = Ahead(ahead.round, ahead.batch, rungs)
        if index < len(self.ahead) and wanted == self.ahead[index]:
            return
        batch = [dict(params) for params in ahead.batch]
        box = ahead.box.to_dict(self.spec.space)
        if index < len(self.ahead):
            revision = self.store.revise_round(
                lock, epoch, ahead.round, box, batch, rungs, provisional=True
            )
            self.ahead[index] = wanted
        else:
            record = self.store.write_round(
                lock, epoch, ahead.round, box, batch, rungs, provisional=True
            )
            self.ahead.append(wanted)
            waiting = sum(1 for n in ahead.missing if n not in self.held)
            self.progress.note(
                f"round {ahead.round}: {len(batch)} trials sent ahead while {waiting} "
                f"{'trial' if waiting == 1 else 'trials'} it depends on still "
                f"{'runs' if waiting == 1 else 'run'}"
            )
            revision = Revision(tuple(record.trial_numbers), ())
        judged = [t for t in self.store.trials(revision.judge) if t.status.is_finished()]
        self._send_again([*revision.again, *self._settle(lock, epoch, judged)], in_flight)

    def make_final(
        self,
        lock: CoordinatorLock,
        epoch: str,
        number: int,
        box: Mapping[str, Any],
        batch: Sequence[Mapping[str, Any]],
        rungs: tuple[Rung, ...],
        in_flight: dict[int, Trial],
    ) -> list[Trial]:
        """Make the first provisional round final with its real params and rungs: send again
        the trials that changed; return its finished trials that did not (to be told)."""
        revision = self.store.revise_round(lock, epoch, number, box, batch, rungs)
        numbers = self.store.round(number).trial_numbers
        trials = self.store.trials(numbers)
        if [dict(t.params) for t in trials] != [dict(p) for p in batch]:
            raise StoreError(f"round {number} in the store is not the one just made final")
        # Every trial that ran with other rungs (from this revision or earlier ones): the ones
        # finished in this read are judged now, the others when their finish is read.
        flagged = self.store.to_judge(numbers)
        finished = [t for t in trials if t.number in flagged and t.status.is_finished()]
        again = self._settle(lock, epoch, finished)
        self._send_again([*revision.again, *again], in_flight)
        sent = set(revision.again) | set(again)
        self.ahead = self.ahead[1:]  # the rounds further ahead stay provisional
        self.held = {n: t for n, t in self.held.items() if t.round != number}
        told: list[Trial] = []
        for trial in trials:
            if trial.number in sent:
                continue
            if trial.status.is_finished():
                in_flight.pop(trial.number, None)  # its event, when read, is no news
                told.append(trial)
            else:
                in_flight[trial.number] = trial
                if trial.number in flagged:
                    self.judging.add(trial.number)
        self.progress.note(
            f"round {number}: {len(batch) - len(sent)} of {len(batch)} trials run ahead kept, "
            f"{len(sent)} sent again"
        )
        self.progress.round_started(number, self.store.trials(numbers))
        return told

    def settle_finished(
        self, lock: CoordinatorLock, epoch: str, trial: Trial, in_flight: dict[int, Trial]
    ) -> Trial | None:
        """A trial of a final round that finished while it was to be judged (`judging`): the
        trial to tell the search, as judged; None when it was sent again."""
        self.judging.discard(trial.number)
        again = self._settle(lock, epoch, [trial])
        if again:
            self._send_again(again, in_flight)
            return None
        in_flight.pop(trial.number, None)
        return trial

    def _send_again(self, numbers: Sequence[int], in_flight: dict[int, Trial]) -> None:
        trials = self.store.trials(numbers)
        for trial in trials:
            self.held.pop(trial.number, None)
            in_flight[trial.number] = trial
        self.sender.send_all(trials)

    def resume_final(self, lock: CoordinatorLock, epoch: str, trials: list[Trial]) -> list[Trial]:
        """A final round once written ahead, found in the store: settle its finished trials
        still to be judged (a coordinator stopped before it did), and judge its running ones
        when they finish. Returns its trials as they are now (the caller sends QUEUED ones)."""
        flagged = self.store.to_judge(t.number for t in trials)
        finished = [t for t in trials if t.number in flagged and t.status.is_finished()]
        again = self._settle(lock, epoch, finished)
        self.judging |= {
            t.number for t in trials if t.number in flagged and not t.status.is_finished()
        }
        if not again:
            return trials
        requeued = {t.number: t for t in self.store.trials(again)}
        return [requeued.get(t.number, t) for t in trials]

    def _settle(self, lock: CoordinatorLock, epoch: str, trials: Sequence[Trial]) -> list[int]:
        """Judge the finished `trials`, which ran with other rungs than their round's (`judge`),
        and apply the verdicts. Returns those queued again, to be sent."""
        if not trials:
            return []
        reports = self.store.all_reports(t.number for t in trials)
        again: list[int] = []
        for trial in trials:
            steps, values = sorted_curve(reports.get(trial.number, []))
            verdict = judge(
                trial.rungs, trial.status, trial.last_step, steps, values, self.spec.maximize
            )
            applied = self.store.settle(lock, epoch, trial.number, trial.attempt, verdict)
            if applied and verdict.action == "again":
                again.append(trial.number)
        return again

    def _guesses(
        self,
        running: Sequence[Trial],
        done: Sequence[Trial],
        held: Sequence[Trial],
        curves: dict[int, ReferenceCurve],
    ) -> tuple[dict[int, float], list[ReferenceCurve]]:
        """Guessed scores of the reference trials still `running`, from their curves so far and
        those of the finished ones (`done`, told; `held`, of rounds run ahead); and the curves
        of the reference trials not told: the guessed running ones taken as COMPLETE with that
        score, the held ones as they finished. The provisional rungs use these: a running trial
        has already reported the values that the round's early rungs take their thresholds from
        (the best trials of a round run longest, and they raise those thresholds). A held
        trial's curve is read every time (it may yet be sent again), never kept in `curves`.

        A trial of round q is guessed from told trials and held ones of rounds up to q only, so
        that a round's guess does not depend on how many rounds run ahead of it (a round's own
        trials finishing ahead must not re-sample it, and then again once they are sent
        again)."""
        if not running and not held:
            return {}, []
        complete = [t for t in done if t.status is TrialStatus.COMPLETE]
        unread = [t for t in complete if t.number not in curves]
        numbers = [*(t.number for t in unread), *(t.number for t in running)]
        reports = self.store.all_reports([*numbers, *(t.number for t in held)])
        for trial in unread:
            curves[trial.number] = ReferenceCurve.of(trial, reports.get(trial.number, []))
        held_curves = {
            t.number: (t.round, ReferenceCurve.of(t, reports.get(t.number, [])))
            for t in held
            if t.status in (TrialStatus.COMPLETE, TrialStatus.PRUNED)
        }
        told = [curves[t.number] for t in complete]
        guesses: dict[int, float] = {}
        for q in sorted({t.round for t in running}):
            partial = {
                t.number: sorted_curve(reports[t.number])
                for t in running
                if t.round == q and t.number in reports
            }
            known = told + [curve for r, curve in held_curves.values() if r <= q]
            guesses.update(guess_scores(partial, known, self.spec.maximize))
        curves_of_untold = [curve for _, curve in held_curves.values()]
        for trial in running:
            if trial.number in guesses:
                steps, values = sorted_curve(reports[trial.number])
                curves_of_untold.append(
                    ReferenceCurve(
                        trial.number, TrialStatus.COMPLETE, steps, values, guesses[trial.number]
                    )
                )
        return guesses, sorted(curves_of_untold, key=lambda curve: curve.trial)


def _may_complete(
    search: CoarseToFine,
    number: int,
    finished: Mapping[int, Trial],
    held: Mapping[int, Trial],
    guesses: Mapping[int, float],
) -> bool:
    """Whether round `number` (asked, or run ahead) has a trial that completed (then it cannot
    fail) or one still running that reports like the finished ones (`guesses`). With early
    stopping a round often has one or two trials that run to the end, and the next round's box
    and rungs wait on exactly those; a round whose trials fail before reporting is not run
    ahead of."""
    numbers = range(search.first_trial(number), search.first_trial(number + 1))
    ended = [trial for n in numbers if (trial := finished.get(n) or held.get(n)) is not None]
    completed = any(trial.status is TrialStatus.COMPLETE for trial in ended)
    return completed or any(n in guesses for n in numbers)
