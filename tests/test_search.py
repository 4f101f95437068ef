"""CoarseToFine: the ask/tell contract the distributed coordinator is written against."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from zoomtune.common.errors import MessageError
from zoomtune.common.parameters import ParamValue
from zoomtune.common.space import Interval
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.search import CoarseToFine, Told, explore_count

ROOT = Path(__file__).resolve().parents[1]


def make_spec(seed: int = 7, direction: str = "minimize", **search: Any) -> StudySpec:
    return StudySpec.from_dict(
        {
            "study": {"name": "bowl", "direction": direction, "seed": seed},
            "objective": {"name": "bowl"},
            "search": {"rounds": 4, "trials_per_round": 16, **search},
            "space": {
                "x": {"type": "float", "low": -5.0, "high": 5.0},
                "lr": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
                "layers": {"type": "int", "low": 1, "high": 8},
                "act": {"type": "choice", "values": ["relu", "tanh", "gelu"]},
            },
        }
    )


def bowl(params: Mapping[str, Any]) -> float:
    """Smallest at x = 1.5, lr = 1e-3, layers = 3, act = 'tanh'."""
    return (
        (float(params["x"]) - 1.5) ** 2
        + (math.log10(float(params["lr"])) + 3) ** 2
        + 0.1 * (int(params["layers"]) - 3) ** 2
        + (0.0 if params["act"] == "tanh" else 1.0)
    )


def run(search: CoarseToFine, objective: Callable[[Mapping[str, Any]], float | None]) -> None:
    while batch := search.ask():
        search.tell([(params, objective(params)) for params in batch])


def trials_of(search: CoarseToFine) -> list[dict[str, ParamValue]]:
    return [dict(told.params) for told in search.history]


# --- asking and telling ----------------------------------------------------------------------


def test_round_one_samples_the_whole_space() -> None:
    search = CoarseToFine(make_spec())

    batch = search.ask()

    assert len(batch) == 16
    assert search.boxes == [search.spec.space.whole_box()]
    assert all(search.spec.space.problems(params) == [] for params in batch)
    assert all(list(params) == sorted(params) for params in batch)


def test_asking_again_before_telling_returns_the_same_batch() -> None:
    search = CoarseToFine(make_spec())

    first = search.ask()
    first[0]["x"] = 123.0  # the caller's copy; the search keeps its own

    assert search.ask() != first
    assert search.ask() == search.ask()
    assert search.round == 1
    assert len(search.boxes) == 1


def test_a_study_runs_its_rounds_then_asks_for_nothing() -> None:
    search = CoarseToFine(make_spec(rounds=3, trials_per_round=[8, 4, 2], top_k=2))

    run(search, bowl)

    assert search.done
    assert search.ask() == []
    assert search.round == 4
    assert len(search.boxes) == 3
    assert [told.round for told in search.history] == [1] * 8 + [2] * 4 + [3] * 2


def test_later_rounds_sample_inside_the_box_except_the_explore_share() -> None:
    search = CoarseToFine(make_spec(explore=0.25))
    search.tell([(params, bowl(params)) for params in search.ask()])

    batch = search.ask()
    box = search.boxes[1]

    assert explore_count(0.25, 16, 2) == 4
    x_region = box["x"]
    assert isinstance(x_region, Interval)
    x = search.spec.space["x"]
    lowest, highest = float(x.from_unit(x_region.low)), float(x.from_unit(x_region.high))
    assert all(lowest <= float(params["x"]) <= highest for params in batch[:12])
    act_region = box["act"]
    assert isinstance(act_region, tuple)
    assert all(params["act"] in act_region for params in batch[:12])


@pytest.mark.parametrize(
    ("explore", "n", "round_number", "count"),
    [
        (0.1, 16, 1, 0),
        (0.1, 16, 2, 2),
        (0.1, 8, 2, 1),
        (0.1, 4, 3, 0),
        (0.9, 2, 2, 1),
        (0.5, 1, 2, 0),
    ],
)
def test_the_explore_share_is_rounded_and_leaves_the_box_at_least_one_trial(
    explore: float, n: int, round_number: int, count: int
) -> None:
    assert explore_count(explore, n, round_number) == count


def test_the_boxes_close_in_on_the_optimum_of_a_bowl() -> None:
    search = CoarseToFine(make_spec(rounds=6, explore=0.0))

    run(search, lambda p: bowl({**p, "act": "tanh"}))  # only the numeric parameters matter

    widths = [region.width for box in search.boxes if isinstance(region := box["x"], Interval)]
    assert widths[0] == 1.0
    assert widths[-1] < 0.25
    final = search.box["x"]
    assert isinstance(final, Interval)
    assert final.low <= search.spec.space["x"].to_unit(1.5) <= final.high
    best = search.best
    assert best is not None
    assert best[1] < 0.1


def test_choices_start_narrowing_one_round_after_the_numeric_parameters() -> None:
    # Given round 1 where only 'relu' trials score well,
    search = CoarseToFine(make_spec(rounds=3, top_k=1))
    search.tell([(p, 0.0 if p["act"] == "relu" else 9.0) for p in search.ask()])

    # then round 2 narrows x but still tries every activation,
    search.ask()
    assert search.boxes[1]["x"] != Interval(0.0, 1.0)
    assert search.boxes[1]["act"] == ("relu", "tanh", "gelu")

    # and round 3 keeps ceil(0.55 x 3) = 2 of them, the best trial's among them.
    search.tell([(p, 0.0 if p["act"] == "relu" else 9.0) for p in search.ask()])
    act = search.box["act"]
    assert isinstance(act, tuple)
    assert "relu" in act
    assert len(act) == 2


def test_a_choice_that_matters_is_rarely_dropped_for_good() -> None:
    # Given a bowl where only 'tanh' is best but the other parameters dominate round 1,
    # when 20 studies run with the default settings,
    # then most of them end with 'tanh' (the choice floor and the explore share bring it back).
    found = 0
    for seed in range(20):
        search = CoarseToFine(make_spec(seed=seed, rounds=6))
        run(search, bowl)
        best = search.best
        found += best is not None and best[0]["act"] == "tanh"

    assert found >= 14


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_best_follows_the_direction(direction: str) -> None:
    search = CoarseToFine(make_spec(direction=direction, rounds=1))
    batch = search.ask()
    scores = [float(i) for i in range(len(batch))]

    search.tell(list(zip(batch, scores, strict=True)))

    best = search.best
    assert best is not None
    assert best == ((batch[0], 0.0) if direction == "minimize" else (batch[-1], 15.0))


def test_best_is_none_before_any_trial_completes() -> None:
    search = CoarseToFine(make_spec())
    assert search.best is None

    search.tell([(params, None) for params in search.ask()])

    assert search.best is None


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf])
def test_failed_and_non_finite_trials_are_never_best(bad: float | None) -> None:
    search = CoarseToFine(make_spec(rounds=1))
    batch = search.ask()

    search.tell([(params, bad if i % 2 == 0 else bowl(params)) for i, params in enumerate(batch)])

    best = search.best
    assert best is not None
    assert best[0] in batch[1::2]
    assert math.isfinite(best[1])


def test_a_round_where_every_trial_failed_keeps_the_box() -> None:
    search = CoarseToFine(make_spec())

    search.tell([(params, None) for params in search.ask()])
    search.ask()

    assert search.boxes[1] == search.spec.space.whole_box()


def _told_with_only_the_top_two_completed(*, pruned: bool) -> tuple[CoarseToFine, CoarseToFine]:
    """Round 1 (20 trials) told in full to one search, and to another with only its best two
    completed and the 18 others pruned (or failed)."""
    # Seed 0: the second best lies outside the box that the best alone would give.
    plain, other = (CoarseToFine(make_spec(seed=0, trials_per_round=20)) for _ in range(2))
    batch = plain.ask()
    other.ask()
    scores = [bowl(params) for params in batch]
    top_two = sorted(range(len(batch)), key=scores.__getitem__)[:2]
    for number, score in enumerate(scores):
        plain.tell_trial(number, score)
        if number in top_two:
            other.tell_trial(number, score)
        else:
            other.tell_trial(number, None, pruned=pruned)
    return plain, other


def test_pruning_only_trials_below_the_top_k_narrows_as_the_study_without_early_stopping() -> None:
    # top_k "auto" sizes k from the trials that completed or were pruned: 20 of them, k = 2.
    plain, pruned = _told_with_only_the_top_two_completed(pruned=True)

    assert pruned.ask() == plain.ask()
    assert pruned.box == plain.box


def test_failed_trials_do_not_count_toward_k() -> None:
    # Two completed trials give k = 1: the box closes around the best alone.
    plain, failed = _told_with_only_the_top_two_completed(pruned=False)

    assert failed.box != plain.box


def test_a_pruned_trial_has_no_score() -> None:
    search = CoarseToFine(make_spec())
    search.ask()

    with pytest.raises(MessageError, match="trial 3: a pruned trial has no score"):
        search.tell_trial(3, 0.5, pruned=True)


def test_replaying_keeps_which_trials_were_pruned() -> None:
    _, pruned = _told_with_only_the_top_two_completed(pruned=True)

    resumed = CoarseToFine.replay(pruned.spec, pruned.history)

    assert sum(told.pruned for told in resumed.history) == 18
    assert resumed.ask() == pruned.ask()


def test_telling_before_asking_is_an_error() -> None:
    search = CoarseToFine(make_spec())

    with pytest.raises(MessageError, match=r"call ask\(\) first"):
        search.tell([])


def test_telling_after_the_last_round_is_an_error() -> None:
    search = CoarseToFine(make_spec(rounds=1))
    run(search, bowl)

    with pytest.raises(MessageError, match="every round is already told"):
        search.tell([])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda told: told[:-1], r"needs the 16 asked trials in order, got 15"),
        (lambda told: told[::-1], r"trial 0: told params .* are not the asked params"),
        (lambda told: [({**told[0][0], "x": 0.0}, 1.0), *told[1:]], r"trial 0: told params"),
        (lambda told: [told[0][0], *told[1:]], r"trial 0: expected a \(params, score\) pair"),
        (lambda told: [(told[0][0], "0.5"), *told[1:]], r"a score must be a number or None"),
        (lambda told: [(told[0][0], True), *told[1:]], r"a score must be a number or None"),
    ],
    ids=["short", "reordered", "changed", "not-a-pair", "string-score", "bool-score"],
)
def test_telling_anything_but_the_asked_batch_is_refused_and_changes_nothing(
    tamper: Callable[[list[Any]], list[Any]], message: str
) -> None:
    search = CoarseToFine(make_spec())
    batch = search.ask()
    told = [(params, bowl(params)) for params in batch]

    with pytest.raises(MessageError, match=message):
        search.tell(tamper(told))

    assert search.pending
    assert search.history == ()
    search.tell(told)
    assert search.rounds_told == 1


def test_scores_may_be_ints_and_numpy_numbers() -> None:
    import numpy as np

    search = CoarseToFine(make_spec(rounds=1, trials_per_round=3))
    batch = search.ask()

    search.tell(list(zip(batch, [1, np.float32(0.5), np.int64(2)], strict=True)))

    assert [told.score for told in search.history] == [1.0, 0.5, 2.0]


# --- determinism and resuming ------------------------------------------------------------


def test_the_same_seed_and_scores_give_the_same_study() -> None:
    first, again = CoarseToFine(make_spec(seed=3)), CoarseToFine(make_spec(seed=3))

    run(first, bowl)
    run(again, bowl)

    assert trials_of(first) == trials_of(again)
    assert first.boxes == again.boxes


def test_another_seed_gives_another_study() -> None:
    first, other = CoarseToFine(make_spec(seed=3)), CoarseToFine(make_spec(seed=4))

    assert first.ask() != other.ask()


def test_a_negative_seed_is_a_seed_like_any_other() -> None:
    assert CoarseToFine(make_spec(seed=-1)).ask() == CoarseToFine(make_spec(seed=-1)).ask()
    assert CoarseToFine(make_spec(seed=-1)).ask() != CoarseToFine(make_spec(seed=1)).ask()


def test_a_round_depends_on_its_box_not_on_how_the_scores_got_there() -> None:
    # Given two studies whose round-1 scores differ but rank the trials the same way,
    # then they narrow to the same box and ask the same round 2.
    first, other = CoarseToFine(make_spec()), CoarseToFine(make_spec())
    batch = first.ask()
    first.tell([(params, bowl(params)) for params in batch])
    other.ask()
    other.tell([(params, 10 * bowl(params) + 1) for params in batch])

    assert first.ask() == other.ask()
    assert first.boxes == other.boxes


def test_replaying_the_history_resumes_exactly_where_the_study_was() -> None:
    original = CoarseToFine(make_spec(rounds=5))
    for _ in range(3):
        original.tell([(params, bowl(params)) for params in original.ask()])
    pending = original.ask()  # the coordinator died with round 4 in flight

    resumed = CoarseToFine.replay(make_spec(rounds=5), original.history)

    assert resumed.rounds_told == 3
    assert not resumed.pending
    assert resumed.box == original.box
    assert resumed.ask() == pending
    assert resumed.boxes == original.boxes
    assert resumed.history == original.history
    run(original, bowl)
    run(resumed, bowl)
    assert trials_of(resumed) == trials_of(original)


def test_replaying_a_history_the_spec_would_not_ask_is_refused() -> None:
    original = CoarseToFine(make_spec(seed=1))
    original.tell([(params, bowl(params)) for params in original.ask()])

    with pytest.raises(MessageError, match="are not the asked params"):
        CoarseToFine.replay(make_spec(seed=2), original.history)


def test_replaying_needs_every_round_from_the_first() -> None:
    told = Told({"x": 1.0}, 1.0, 2)

    with pytest.raises(MessageError, match=r"rounds from 1 on, got rounds \[2\]"):
        CoarseToFine.replay(make_spec(), [told])


def test_replaying_more_rounds_than_the_study_has_is_refused() -> None:
    original = CoarseToFine(make_spec(rounds=1))
    run(original, bowl)
    extra = [Told(told.params, told.score, 2) for told in original.history]

    with pytest.raises(MessageError, match="got 2 rounds, the study has 1"):
        CoarseToFine.replay(make_spec(rounds=1), [*original.history, *extra])


def test_history_cannot_be_changed_from_outside() -> None:
    search = CoarseToFine(make_spec(rounds=1))
    run(search, bowl)

    told = search.history[0]
    told.params["x"] = 99.0  # type: ignore[index]

    assert search.history[0].params["x"] != 99.0


# --- spaces of only integers and choices -------------------------------------------------


def test_a_space_of_integers_and_choices_narrows_without_collapsing() -> None:
    spec = StudySpec.from_dict(
        {
            "study": {"name": "discrete", "direction": "maximize", "seed": 0},
            "objective": {"name": "discrete"},
            "search": {"rounds": 5, "trials_per_round": 8, "explore": 0.0},
            "space": {
                "n": {"type": "int", "low": 0, "high": 1},
                "c": {"type": "choice", "values": ["a", "b"]},
            },
        }
    )
    search = CoarseToFine(spec)

    run(search, lambda p: float(p["n"]) + (p["c"] == "b"))

    assert search.best == ({"c": "b", "n": 1}, 2.0)
    assert all({p["n"] for p in trials_of(search)[8 * r : 8 * r + 8]} == {0, 1} for r in range(5))


# --- house rules -------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["sampling", "narrowing", "search"])
def test_the_search_core_validates_with_raise_never_assert(module: str) -> None:
    tree = ast.parse((ROOT / "zoomtune" / "coordinator" / f"{module}.py").read_text())

    assert not [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
