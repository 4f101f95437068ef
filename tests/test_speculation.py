"""Speculation, the pure parts: the rounds a search would ask next if the trials still running
ended with a guessed score (`CoarseToFine.provisional_rounds`), the guess itself, and the verdict
on a trial that ran with other rungs than its round's final ones (`judge`)."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from tests.harness import study_toml
from tests.records import simulate
from tests.test_search import bowl, make_spec
from zoomtune.common.store import StudyStore
from zoomtune.common.store_records import CoordinatorLock
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Rung, TrialMessage, TrialResult, TrialStatus, Verdict, judge
from zoomtune.coordinator.dispatcher import TrialSender
from zoomtune.coordinator.progress import LogProgress
from zoomtune.coordinator.pruning import ReferenceCurve
from zoomtune.coordinator.report import Findings
from zoomtune.coordinator.search import CoarseToFine, explore_count
from zoomtune.coordinator.speculation import Ahead, Speculation, guess_scores
from zoomtune.coordinator.views import status_view


def told_but(search: CoarseToFine, running: set[int]) -> list[dict[str, Any]]:
    """Ask round 1 and tell every trial of it except `running`; returns round 1's batch."""
    batch = search.ask_next()
    for number, params in enumerate(batch):
        if number not in running:
            search.tell_trial(number, bowl(params))
    return batch


def test_with_every_reference_trial_told_it_is_the_next_round() -> None:
    search = CoarseToFine(make_spec())
    told_but(search, set())
    ahead = search.provisional_next()

    assert ahead is not None
    assert ahead.missing == ()
    assert list(ahead.batch) == search.ask_next()
    assert ahead.box == search.boxes[-1]


def test_it_is_the_round_the_search_asks_when_the_running_trials_end_as_assumed() -> None:
    # Given round 1 told but for two trials still running
    search = CoarseToFine(make_spec())
    batch = told_but(search, {3, 9})

    # When the next round is asked ahead, assuming trial 3 ends with 7.0 and trial 9 fails
    ahead = search.provisional_next({3: 7.0})

    # Then it is exactly what the search asks once they do
    assert ahead is not None
    assert (ahead.round, ahead.missing) == (2, (3, 9))
    search.tell_trial(3, 7.0)
    search.tell_trial(9, None)
    assert list(ahead.batch) == search.ask_next()
    assert search.history[3].params == batch[3]


def test_asking_ahead_changes_nothing() -> None:
    search = CoarseToFine(make_spec())
    told_but(search, {0})
    search.provisional_next({0: -100.0})
    search.provisional_next()
    search.tell_trial(0, 1.0)

    untouched = CoarseToFine(make_spec())
    told_but(untouched, {0})
    untouched.tell_trial(0, 1.0)
    assert search.ask_next() == untouched.ask_next()
    assert search.rounds_asked == untouched.rounds_asked == 2


def test_a_result_from_other_params_counts_as_failed_two_rounds_deep() -> None:
    # Given round 1 told but for trial 3, whose score decides round 2's box
    search = CoarseToFine(make_spec(rounds=3))
    told_but(search, {3})
    best, worst = -1e6, 1e6  # minimize
    first = search.provisional_rounds({3: best}, 2)
    other = search.provisional_rounds({3: worst}, 2)
    assert first[0].batch[0] != other[0].batch[0], "trial 3 must move round 2's box"

    # When trial 16 (round 2) finished with the params of the first guess, and round 3 is asked
    # under the other one
    ran_with = {16: first[0].batch[0]}
    result = {16: -1e5}  # better than all of round 1: round 3 narrows around it
    assert search.provisional_rounds({3: worst, **result}, 2)[1] != other[1]

    # Then its result is not round 2's trial 16 any more: it counts as failed, and with the
    # params it ran with it counts as it is
    assert search.provisional_rounds({3: worst, **result}, 2, (), ran_with) == other
    assert search.provisional_rounds({3: best, **result}, 2, (), ran_with) == (
        search.provisional_rounds({3: best, **result}, 2)
    )


def test_nothing_is_asked_ahead_once_every_round_is_asked() -> None:
    search = CoarseToFine(make_spec(rounds=1))
    told_but(search, {1})
    assert search.provisional_next() is None


@settings(max_examples=25, deadline=None)
@given(
    running=st.sets(st.integers(0, 15), min_size=1, max_size=6),
    guesses=st.lists(st.floats(-10, 10), min_size=6, max_size=6),
)
def test_the_explore_trials_come_out_the_same_whatever_the_running_trials_score(
    running: set[int], guesses: list[float]
) -> None:
    # The explore trials (the last ones) do not depend on the box: work done ahead on them is
    # never lost, whatever the stragglers turn out to score.
    search = CoarseToFine(make_spec(explore=0.25))
    told_but(search, running)
    ahead_failed = search.provisional_next()
    ahead_guessed = search.provisional_next(dict(zip(sorted(running), guesses, strict=False)))
    assert ahead_failed is not None
    assert ahead_guessed is not None
    n = explore_count(0.25, 16, 2)
    assert n == 4
    assert ahead_failed.batch[-n:] == ahead_guessed.batch[-n:]


def curve(number: int, values: list[float], score: float | None) -> ReferenceCurve:
    status = TrialStatus.COMPLETE if score is not None else TrialStatus.PRUNED
    return ReferenceCurve(number, status, tuple(range(1, len(values) + 1)), tuple(values), score)


def test_a_running_trial_is_guessed_to_end_like_the_finished_one_nearest_at_its_step() -> None:
    finished = [
        curve(0, [0.2, 0.4, 0.6], 0.6),
        curve(1, [0.5, 0.7, 0.9], 0.9),
        curve(2, [0.1, 0.2], None),  # pruned: no final score to lend
    ]
    running = {7: ([1, 2], [0.45, 0.66]), 8: ([1], [0.21]), 9: ([], [])}

    guesses = guess_scores(running, finished, maximize=True)

    # Trial 7 is nearest to trial 1 at step 2 (0.66 vs 0.7): 0.9 - 0.04; trial 8 to trial 0
    # at step 1 (0.21 vs 0.2): 0.6 + 0.01; trial 9 reported nothing: no guess (it fails).
    assert guesses == pytest.approx({7: 0.86, 8: 0.61})


def test_a_running_trial_ahead_of_every_finished_one_is_guessed_ahead_of_them() -> None:
    finished = [curve(0, [0.2, 0.4, 0.6], 0.6), curve(1, [0.5, 0.7, 0.9], 0.9)]

    guesses = guess_scores({7: ([1, 2], [0.6, 0.8])}, finished, maximize=True)

    assert guesses == pytest.approx({7: 1.0})
    assert guess_scores({7: ([1], [0.1])}, finished, maximize=False) == pytest.approx({7: 0.5})


def test_a_trial_past_every_finished_curve_gets_no_guess() -> None:
    finished = [curve(0, [0.2, 0.4], 0.4)]
    assert guess_scores({5: ([1, 2, 3], [0.1, 0.2, 0.3])}, finished, maximize=True) == {}


def test_ties_go_to_the_worse_score() -> None:
    finished = [curve(0, [0.5], 0.9), curve(1, [0.5], 0.3)]
    assert guess_scores({4: ([1], [0.5])}, finished, maximize=True) == {4: 0.3}
    assert guess_scores({4: ([1], [0.5])}, finished, maximize=False) == {4: 0.9}


# -- judging a trial that ran with other rungs than its round's final ones -------------------

RUNGS = (Rung(1, 0.3), Rung(3, 0.6))  # maximize: keep at step 1 if >= 0.3, at step 3 if >= 0.6


def test_a_finished_trial_no_final_rung_cuts_is_kept() -> None:
    curve = ([1, 2, 3], [0.4, 0.5, 0.7])
    assert judge(RUNGS, TrialStatus.COMPLETE, None, *curve, True) == Verdict("keep")
    assert judge(RUNGS, TrialStatus.FAILED, None, *curve, True) == Verdict("keep")


def test_a_trial_a_final_rung_cuts_runs_again_since_only_its_objective_knows_if_it_asks() -> None:
    # It reported steps 1, 2, 4, 5: the step-3 rung reads step 4 (0.5 < 0.6). Had it run with
    # these rungs it stopped at step 4 only if it asks should_prune() there: an objective that
    # reports but never asks is never pruned.
    curve = ([1, 2, 4, 5], [0.4, 0.45, 0.5, 0.9])
    assert judge(RUNGS, TrialStatus.COMPLETE, None, *curve, True) == Verdict("again")


def test_a_pruned_trial_is_kept_only_where_the_final_rungs_cut_it_at_its_own_step() -> None:
    # Pruned at step 1 (it asked there): the final rungs cut it at step 1 too
    assert judge(RUNGS, TrialStatus.PRUNED, 1, [1], [0.2], True) == Verdict("keep")
    # ... they would let it go on
    assert judge(RUNGS, TrialStatus.PRUNED, 1, [1], [0.35], True) == Verdict("again")
    # ... they cut it earlier than where it stopped
    assert judge(RUNGS, TrialStatus.PRUNED, 3, [1, 2, 3], [0.2, 0.3, 0.4], True) == Verdict("again")


def test_a_running_trial_is_judged_when_it_finishes() -> None:
    assert judge(RUNGS, TrialStatus.RUNNING, None, [1], [0.1], True) == Verdict("keep")


def test_minimizing_cuts_values_above_the_threshold() -> None:
    rungs = (Rung(2, 1.0),)
    assert judge(rungs, TrialStatus.COMPLETE, None, [1, 2], [3.0, 1.5], False) == Verdict("again")
    assert judge(rungs, TrialStatus.COMPLETE, None, [1, 2], [3.0, 0.5], False) == Verdict("keep")


def test_a_round_run_ahead_counts_for_the_best_only_once_it_is_final() -> None:
    # Given a study whose last round is still provisional, its trials scoring better than all
    spec = make_spec(rounds=2, trials_per_round=4)
    record = simulate(spec, bowl)
    provisional = replace(record.rounds[-1], provisional=True)
    trials = tuple(replace(t, score=-1.0 - t.number) if t.round == 2 else t for t in record.trials)
    ahead = replace(record, rounds=(record.rounds[0], provisional), trials=trials)

    # Then `status`, `report` and `export` take the best from the final rounds, and show the
    # provisional round as run ahead
    best = ahead.best()
    assert best is not None
    assert best.round == 1
    assert all(t.round == 1 for t in ahead.completed())
    made_final = replace(ahead, rounds=record.rounds).best()
    assert made_final is not None
    assert made_final.round == 2
    out = io.StringIO()
    Console(file=out, width=200).print(status_view(ahead, Findings.of(ahead)))
    assert "2 (ahead)" in out.getvalue()


# -- a trial that finishes while its round is made final ---------------------------------------


class NoQueue:
    """A dispatcher whose queue is always empty; it only records what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []
        self.messages: list[TrialMessage] = []

    def send(self, message: TrialMessage, queue: str, timeout: float) -> None:
        self.sent.append((message.trial, message.attempt))
        self.messages.append(message)

    def queue_length(self, queue: str) -> int:
        return 0


def created_study() -> tuple[StudySpec, StudyStore, CoordinatorLock, str, list[dict[str, Any]]]:
    """A study of 2 rounds of 2 trials, created on fakeredis, and params for a round of it."""
    spec = StudySpec.from_toml(study_toml(objective="obj", rounds=2, trials_per_round=2))
    store = StudyStore(fakeredis.FakeRedis(decode_responses=True), "zoomtune:", spec.name)
    lock = store.acquire(ttl=30)
    epoch = store.create(lock, spec.to_dict(), max_attempts=3)
    return spec, store, lock, epoch, [{"x": 0.1, "y": 1}, {"x": 0.2, "y": 2}]


def test_a_trial_that_finishes_while_its_round_is_made_final_is_judged_not_told() -> None:
    # Given a round run ahead with rungs R1, whose trial a reported a value R1 cuts at step 2
    # (minimize: 0.9 > 0.5) but the final rungs R2 keep (0.9 <= 1.0)
    spec, store, lock, epoch, params = created_study()
    r1, r2 = (Rung(2, 0.5),), (Rung(2, 1.0),)
    a, b = store.write_round(lock, epoch, 1, {}, params, r1, provisional=True).trial_numbers
    started = store.start(
        a,
        1,
        "ta",
        payload={"params": params[0]},
        worker="w",
        host="h",
        device="cpu",
        pid=1,
        lease=30,
    )
    assert started.ok
    store.report(a, 1, "ta", 1, 0.3)
    store.report(a, 1, "ta", 2, 0.9)
    dispatcher = NoQueue()
    sender = TrialSender(spec, store, dispatcher, "q")
    speculation = Speculation(spec, store, sender, LogProgress(io.StringIO()), lambda _, __: ())
    speculation.ahead = [Ahead(1, tuple(params), r1)]
    in_flight = {t.number: t for t in store.trials([a, b])}

    # When its worker's PRUNED result (decided on R1) lands right after the loop read the round
    to_judge = store.to_judge

    def finish_meanwhile(numbers: Any) -> set[int]:
        store.finish(a, 1, "ta", TrialResult.pruned((2, 0.9)))
        return to_judge(numbers)

    store.to_judge = finish_meanwhile  # type: ignore[method-assign]
    told = speculation.make_final(lock, epoch, 1, {}, params, r2, in_flight)
    store.to_judge = to_judge  # type: ignore[method-assign]

    # Then it is not told as it is: it is judged when the loop reads its finish, and with R2,
    # which would not have cut it, it runs again
    assert a not in [t.number for t in told]
    assert a in speculation.judging
    assert speculation.settle_finished(lock, epoch, store.trial(a), in_flight) is None
    assert (store.trial(a).status, store.trial(a).attempt) == (TrialStatus.QUEUED, 2)
    assert (a, 2) in dispatcher.sent


def test_a_queued_trial_starts_from_any_message_sent_for_its_attempt_on_the_stored_rungs() -> None:
    # Given a round run ahead, sent with rungs R0, whose rungs changed in place to R1 while its
    # trials were queued; a coordinator started again sends them once more, with R1
    spec, store, lock, epoch, params = created_study()
    r1, r2 = (Rung(2, 0.4),), (Rung(2, 0.3),)
    a, b = store.write_round(
        lock, epoch, 1, {}, params, (Rung(2, 0.5),), provisional=True
    ).trial_numbers
    store.revise_round(lock, epoch, 1, {}, params, r1, provisional=True)
    dispatcher = NoQueue()
    speculation = Speculation(
        spec,
        store,
        TrialSender(spec, store, dispatcher, "q"),
        LogProgress(io.StringIO()),
        lambda _, __: (),
    )
    in_flight: dict[int, Any] = {}
    speculation.resume(store.round(1), store.trials([a, b]), in_flight)
    speculation.send_queued(in_flight)
    assert [m.rungs for m in dispatcher.messages] == [r1, r1]

    # When the rungs change in place once more, to R2, before a worker takes a message
    store.revise_round(lock, epoch, 1, {}, params, r2, provisional=True)

    # Then the coordinator's message starts its trial (no "forged"), on the stored R2
    for message in dispatcher.messages:
        started = store.start(
            message.trial,
            message.attempt,
            "t",
            payload=message.payload(),
            worker="w",
            host="h",
            device="cpu",
            pid=1,
            lease=30,
        )
        assert (started.ok, started.rungs) == (True, r2)
    assert store.counters()["forged_messages"] == 0
