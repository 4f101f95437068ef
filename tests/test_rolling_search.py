"""Rolling rounds in CoarseToFine: a round is asked as soon as the trials it narrows from are
told, while the last `lag` trials before it still run, and the study stays a function of its
seed and scores: the same rounds whatever the order results arrive in."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.test_search import bowl, make_spec, run
from zoomtune.common.errors import MessageError
from zoomtune.coordinator.search import CoarseToFine


def roll(search: CoarseToFine, order_seed: int, in_flight: int = 8) -> None:
    """Drive the search as the rolling coordinator does: ask every round that can be asked,
    then finish one of the oldest `in_flight` running trials, chosen at random, and again."""
    shuffle = random.Random(order_seed)
    running: list[tuple[int, dict[str, Any]]] = []
    while not search.done:
        while search.can_ask():
            first = search.first_trial(search.rounds_asked + 1)
            running.extend(enumerate(search.ask_next(), start=first))
        number, params = running.pop(shuffle.randrange(min(in_flight, len(running))))
        search.tell_trial(number, bowl(params))


def test_a_round_names_the_trials_it_narrows_from() -> None:
    search = CoarseToFine(make_spec(trials_per_round=16, lag=12))

    assert search.reference(1) == range(0)
    assert search.reference(2) == range(4)  # trials 0..3: 16 - 12
    assert search.reference(3) == range(20)  # 32 - 12
    assert search.first_trial(3) == 32


def test_with_lag_zero_a_round_waits_for_every_earlier_trial() -> None:
    search = CoarseToFine(make_spec(lag=0))
    search.ask_next()

    assert search.reference(2) == range(16)
    for number in range(15):
        search.tell_trial(number, 1.0)
    assert not search.can_ask()
    with pytest.raises(MessageError, match=r"needs the results of trials 15\.\.15"):
        search.ask_next()
    search.tell_trial(15, 1.0)
    assert search.can_ask()


def test_a_round_is_asked_while_the_last_lag_trials_still_run() -> None:
    search = CoarseToFine(make_spec(lag=12))
    first_round = search.ask_next()
    for number in range(4):
        search.tell_trial(number, bowl(first_round[number]))

    assert search.can_ask()
    second_round = search.ask_next()
    assert len(second_round) == 16
    assert search.rounds_asked == 2
    assert search.round == 1  # the oldest round not yet told
    assert search.pending


def test_a_round_with_no_reference_trials_samples_the_whole_space() -> None:
    search = CoarseToFine(make_spec(lag=16))
    search.ask_next()

    assert search.can_ask()  # trials below 16 - 16 = 0: none needed
    search.ask_next()
    assert search.boxes[1] == search.spec.space.whole_box()


def test_a_box_is_not_narrowed_twice_from_the_same_results() -> None:
    spec = make_spec(trials_per_round=[16, 4, 4, 16], lag=8)
    search = CoarseToFine(spec)
    batch = search.ask_next()
    for number in range(16):
        search.tell_trial(number, bowl(batch[number]))
    search.ask_next()  # round 2: trials below 16 - 8 = 8
    search.ask_next()  # round 3: trials below 20 - 8 = 12: new results, narrowed again

    assert search.boxes[1] != search.boxes[0]
    assert search.boxes[2] != search.boxes[1]

    other = CoarseToFine(make_spec(trials_per_round=[16, 1, 1, 16], lag=1))
    batch = other.ask_next()
    for number in range(16):
        other.tell_trial(number, bowl(batch[number]))
    other.ask_next()  # round 2: trials below 15
    other.tell_trial(16, 1.0)  # not a reference of round 3 (trials below 17 - 1 = 16)...
    other.ask_next()  # ...which sees trials 0..15: one more result than round 2 did
    assert other.boxes[2] != other.boxes[1]


def test_rounds_sharing_a_reference_share_a_box() -> None:
    search = CoarseToFine(make_spec(trials_per_round=[8, 8, 8, 8], lag=20))
    batch = search.ask_next()
    for number in range(8):
        search.tell_trial(number, bowl(batch[number]))

    for _ in range(3):
        search.ask_next()  # rounds 2..4: references below -12, -4 and 4
    assert search.boxes[1] == search.boxes[2] == search.spec.space.whole_box()
    assert search.boxes[3] != search.boxes[2]


def test_a_trial_is_told_once() -> None:
    search = CoarseToFine(make_spec())
    search.ask_next()
    search.tell_trial(3, 1.0)

    with pytest.raises(MessageError, match="trial 3 is already told"):
        search.tell_trial(3, 1.0)
    with pytest.raises(MessageError, match="trial 16 was not asked"):
        search.tell_trial(16, 1.0)
    with pytest.raises(MessageError, match="after tell_trial"):
        search.tell([({}, 1.0)] * 16)


@settings(max_examples=25, deadline=None)
@given(
    lag=st.integers(min_value=0, max_value=40),
    sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=2, max_size=5),
    order_seed=st.integers(min_value=0, max_value=10_000),
    in_flight=st.integers(min_value=1, max_value=12),
)
def test_rolling_asks_exactly_the_rounds_the_barrier_asks(
    lag: int, sizes: list[int], order_seed: int, in_flight: int
) -> None:
    assume(lag < sum(sizes[:-1]))  # a larger lag narrows no round: the study file refuses it
    # Given the same spec and a deterministic objective, driven round by round (a barrier)...
    spec = make_spec(trials_per_round=sizes, rounds=len(sizes), lag=lag)
    barrier = CoarseToFine(spec)
    run(barrier, bowl)
    # ...and rolling, with results told one trial at a time in a random order,
    rolling = CoarseToFine(spec)
    roll(rolling, order_seed, in_flight)

    # then every round sampled the same box and the same trials, and the best is the same.
    assert rolling.boxes == barrier.boxes
    assert rolling.history == barrier.history
    assert rolling.best == barrier.best


def test_a_rolling_study_resumes_from_any_subset_of_finished_trials() -> None:
    spec = make_spec(lag=12)
    original = CoarseToFine(spec)
    batch = original.ask_next()
    for number in range(16):
        original.tell_trial(number, bowl(batch[number]))
    second = original.ask_next()
    for number in (17, 21, 30):
        original.tell_trial(number, bowl(second[number - 16]))

    resumed = CoarseToFine.replay(spec, original.history)

    assert resumed.rounds_asked == 2
    assert resumed.boxes == original.boxes
    assert resumed.history == original.history
    assert resumed.can_ask() == original.can_ask()
