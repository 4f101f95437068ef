"""Narrowing: the top-k results so far decide the box the next round samples."""

from __future__ import annotations

import math
from typing import Any, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.parameters import ChoiceParameter, FloatParameter, IntParameter, ParamValue, Scale
from common.space import Box, Interval, SearchSpace
from coordinator.narrowing import narrow, resolve_k, top_k

SPACE = SearchSpace(
    (
        FloatParameter("x", 0.0, 10.0),
        FloatParameter("lr", 1e-5, 1.0, Scale.LOG),
        IntParameter("layers", 1, 8),
        ChoiceParameter("act", ("relu", "tanh", "gelu")),
    )
)


class Knobs(TypedDict):
    margin: float
    min_shrink: float
    min_width: float


def knobs(margin: float = 0.0, min_shrink: float = 0.0, min_width: float = 0.0) -> Knobs:
    """The narrowing settings, all off unless given: each test turns on the one it is about."""
    return Knobs(margin=margin, min_shrink=min_shrink, min_width=min_width)


def trial(x: float = 5.0, lr: float = 1e-3, layers: int = 4, act: str = "relu") -> dict[str, Any]:
    return {"act": act, "layers": layers, "lr": lr, "x": x}


def interval(box: Box, name: str) -> Interval:
    region = box[name]
    assert isinstance(region, Interval)
    return region


# --- top_k -----------------------------------------------------------------------------------


def test_top_k_ranks_by_score_best_first() -> None:
    results = [(trial(x=1), 0.3), (trial(x=2), 0.9), (trial(x=3), 0.5)]

    assert [p["x"] for p, _ in top_k(results, 2, maximize=True)] == [2, 3]
    assert [p["x"] for p, _ in top_k(results, 2, maximize=False)] == [1, 3]


@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf])
def test_failed_nan_and_infinite_scores_are_never_ranked(maximize: bool, bad: Any) -> None:
    # scikit-learn issue #20678: a NaN score was picked as the best. Here it never is.
    results = [(trial(x=1), bad), (trial(x=2), 0.5), (trial(x=3), bad)]

    assert top_k(results, 3, maximize) == [(trial(x=2), 0.5)]


def test_ties_keep_the_order_the_trials_were_told_in() -> None:
    results = [(trial(x=float(i)), 1.0) for i in range(5)]

    assert [p["x"] for p, _ in top_k(results, 3, maximize=True)] == [0.0, 1.0, 2.0]
    assert [p["x"] for p, _ in top_k(results, 3, maximize=False)] == [0.0, 1.0, 2.0]


def test_fewer_completed_trials_than_k_gives_all_of_them() -> None:
    results = [(trial(x=1), None), (trial(x=2), 2.0)]

    assert top_k(results, 5, maximize=True) == [(trial(x=2), 2.0)]
    assert top_k([], 5, maximize=True) == []


@given(
    scores=st.lists(
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), max_size=30
    ),
    k=st.integers(0, 40),
    maximize=st.booleans(),
)
def test_top_k_is_the_best_finite_scores_in_order(
    scores: list[float | None], k: int, maximize: bool
) -> None:
    results = [(trial(x=float(i)), s) for i, s in enumerate(scores)]

    ranked = top_k(results, k, maximize)

    finite = [s for s in scores if s is not None and math.isfinite(s)]
    assert len(ranked) == min(k, len(finite))
    ranked_scores = [s for _, s in ranked]
    assert all(math.isfinite(s) for s in ranked_scores)
    assert ranked_scores == sorted(finite, reverse=maximize)[: len(ranked)]


def test_a_negative_k_is_an_error() -> None:
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_k([], -1, maximize=True)


# --- resolve_k ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "completed", "k"),
    [(5, 100, 5), (5, 3, 3), (0.1, 100, 10), (0.1, 15, 2), (0.25, 4, 1), (1.0, 7, 7)],
)
def test_a_count_or_a_fraction_of_the_completed_trials(
    setting: int | float, completed: int, k: int
) -> None:
    assert resolve_k(setting, completed) == k


def test_nothing_completed_means_no_top_trials() -> None:
    assert resolve_k("auto", 0) == 0
    assert resolve_k(3, 0) == 0


@pytest.mark.parametrize(
    ("completed", "k"),
    [(1, 1), (16, 1), (17, 2), (64, 2), (65, 3), (144, 3), (145, 4), (1000, 8)],
)
def test_auto_k_is_the_square_root_of_the_history_over_four_rounded_up(
    completed: int, k: int
) -> None:
    assert resolve_k("auto", completed) == k == math.ceil(math.sqrt(completed) / 4)


@pytest.mark.parametrize("setting", [0, -1, 0.0, 1.5, "best", True])
def test_a_bad_top_k_setting_is_an_error(setting: Any) -> None:
    with pytest.raises(ValueError, match="top_k"):
        resolve_k(setting, 10)


# --- narrow: geometry ------------------------------------------------------------------------


def test_the_box_is_centred_on_the_best_and_reaches_the_farthest_top_trial() -> None:
    top = [(trial(x=4.0), 1.0), (trial(x=5.0), 0.9), (trial(x=3.0), 0.8)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs())

    assert (interval(box, "x").low, interval(box, "x").high) == pytest.approx((0.3, 0.5))


def test_the_margin_widens_the_box_by_a_share_of_the_top_trials_spread() -> None:
    top = [(trial(x=4.0), 1.0), (trial(x=5.0), 0.9), (trial(x=3.0), 0.8)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs(margin=0.5))

    assert (interval(box, "x").low, interval(box, "x").high) == pytest.approx((0.2, 0.6))


def test_log_parameters_narrow_in_decades() -> None:
    top = [(trial(lr=1e-3), 1.0), (trial(lr=1e-2), 0.9)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs())

    region = interval(box, "lr")
    assert SPACE["lr"].from_unit(region.low) == pytest.approx(1e-4)
    assert SPACE["lr"].from_unit(region.high) == pytest.approx(1e-2)


def test_a_box_never_shrinks_faster_than_min_shrink_per_round() -> None:
    previous = Box({**SPACE.whole_box().regions, "x": Interval(0.2, 0.6)})
    top = [(trial(x=4.0), 1.0)]

    box = narrow(SPACE, previous, top, **knobs(min_shrink=0.5))

    assert interval(box, "x").width == pytest.approx(0.2)
    assert (interval(box, "x").low + interval(box, "x").high) / 2 == pytest.approx(0.4)


def test_a_box_is_never_narrower_than_min_width() -> None:
    box = narrow(SPACE, SPACE.whole_box(), [(trial(x=4.0), 1.0)], **knobs(min_width=0.1))

    assert interval(box, "x").width == pytest.approx(0.1)


def test_a_box_at_a_bound_slides_inside_instead_of_being_clipped() -> None:
    top = [(trial(x=0.2), 1.0), (trial(x=1.0), 0.5)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs(min_width=0.3))

    assert (interval(box, "x").low, interval(box, "x").high) == pytest.approx((0.0, 0.3))


def test_a_box_wider_than_the_space_is_the_whole_interval() -> None:
    top = [(trial(x=5.0), 1.0), (trial(x=0.0), 0.5), (trial(x=10.0), 0.2)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs(margin=1.0))

    assert interval(box, "x") == Interval(0.0, 1.0)


def test_a_box_moves_outside_the_previous_one_when_exploration_finds_better_trials() -> None:
    previous = Box({**SPACE.whole_box().regions, "x": Interval(0.0, 0.2)})
    top = [(trial(x=9.0), 1.0)]

    box = narrow(SPACE, previous, top, **knobs(min_shrink=0.5))

    assert (interval(box, "x").low, interval(box, "x").high) == pytest.approx((0.85, 0.95))


def test_no_completed_trial_keeps_the_previous_box() -> None:
    previous = Box({**SPACE.whole_box().regions, "x": Interval(0.2, 0.6)})

    assert narrow(SPACE, previous, [], **knobs()) is previous


# --- narrow: integers and choices ------------------------------------------------------------


def test_an_integer_never_collapses_to_one_value_when_all_top_trials_agree() -> None:
    top = [(trial(layers=4), 1.0), (trial(layers=4), 0.9), (trial(layers=4), 0.8)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs())

    region = interval(box, "layers")
    assert SPACE["layers"].from_unit(region.low) == 3
    assert SPACE["layers"].from_unit(region.high) == 5


@pytest.mark.parametrize("best", [1, 2])
def test_an_integer_with_two_values_keeps_both(best: int) -> None:
    space = SearchSpace((IntParameter("flag", 1, 2),))

    box = narrow(space, space.whole_box(), [({"flag": best}, 1.0)], **knobs())

    region = interval(box, "flag")
    assert {space["flag"].from_unit(region.low), space["flag"].from_unit(region.high)} == {1, 2}


def test_an_integer_best_at_a_bound_keeps_its_neighbour() -> None:
    top = [(trial(layers=8), 1.0), (trial(layers=8), 0.9)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs())

    region = interval(box, "layers")
    assert region.high == 1.0
    assert SPACE["layers"].from_unit(region.low) == 7


def test_a_stepped_float_keeps_its_neighbouring_steps() -> None:
    space = SearchSpace((FloatParameter("dropout", 0.0, 0.5, step=0.1),))

    box = narrow(space, space.whole_box(), [({"dropout": 0.2}, 1.0)], **knobs())

    region = interval(box, "dropout")
    assert space["dropout"].from_unit(region.low) == 0.1
    assert space["dropout"].from_unit(region.high) == 0.3


def test_choices_that_no_top_trial_used_are_dropped_in_declared_order() -> None:
    top = [(trial(act="gelu"), 1.0), (trial(act="relu"), 0.9)]

    box = narrow(SPACE, SPACE.whole_box(), top, **knobs())

    assert box["act"] == ("relu", "gelu")


def test_a_choice_region_shrinks_no_faster_than_min_shrink_refilled_by_the_runners_up() -> None:
    space = SearchSpace((ChoiceParameter("opt", ("sgd", "adam", "rmsprop", "lamb")),))
    top = [({"opt": "lamb"}, 1.0)]
    runners_up = [({"opt": "lamb"}, 0.9), ({"opt": "sgd"}, 0.8), ({"opt": "adam"}, 0.7)]

    box = narrow(space, space.whole_box(), top, **knobs(min_shrink=0.4), runners_up=runners_up)

    # 0.4 x 4 = 1.6, so 2 values: the top trial's, then the best runner-up with another value.
    assert box["opt"] == ("sgd", "lamb")


def test_a_choice_narrows_to_one_value_only_when_min_shrink_allows_it() -> None:
    space = SearchSpace((ChoiceParameter("bn", (True, False)),))
    top, runners_up = [({"bn": True}, 1.0)], [({"bn": False}, 0.5)]

    slow = narrow(space, space.whole_box(), top, **knobs(min_shrink=0.55), runners_up=runners_up)
    fast = narrow(space, space.whole_box(), top, **knobs(min_shrink=0.5), runners_up=runners_up)

    assert slow["bn"] == (True, False)
    assert fast["bn"] == (True,)


def test_a_choice_comes_back_when_an_explored_trial_with_it_reaches_the_top() -> None:
    previous = Box({**SPACE.whole_box().regions, "act": ("relu",)})

    box = narrow(SPACE, previous, [(trial(act="tanh"), 1.0)], **knobs())

    assert box["act"] == ("tanh",)


# --- narrow: properties ------------------------------------------------------------------


@st.composite
def results(draw: st.DrawFn) -> list[tuple[dict[str, ParamValue], float]]:
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        point = [draw(st.floats(0, 1)) for _ in SPACE]
        out.append((SPACE.decode(point), draw(st.floats(-1e6, 1e6))))
    return out


@st.composite
def previous_boxes(draw: st.DrawFn) -> Box:
    regions = dict(SPACE.whole_box().regions)
    for name in ("x", "lr", "layers"):
        a, b = sorted((draw(st.floats(0, 1)), draw(st.floats(0, 1))))
        regions[name] = Interval(a, b)
    return Box(regions)


@settings(max_examples=200)
@given(
    trials=results(),
    previous=previous_boxes(),
    k=st.integers(1, 12),
    margin=st.floats(0, 2),
    min_shrink=st.floats(0, 1),
    min_width=st.floats(0, 1),
)
def test_every_box_holds_the_top_k_inside_the_space_with_its_floors(
    trials: list[tuple[dict[str, ParamValue], float]],
    previous: Box,
    k: int,
    margin: float,
    min_shrink: float,
    min_width: float,
) -> None:
    ranked = top_k(trials, len(trials), maximize=True)
    top, runners_up = ranked[:k], ranked[k:]

    box = narrow(
        SPACE,
        previous,
        top,
        margin=margin,
        min_shrink=min_shrink,
        min_width=min_width,
        runners_up=runners_up,
    )

    for param in SPACE:
        region = box[param.name]
        values = [params[param.name] for params, _ in top]
        if isinstance(param, ChoiceParameter):
            assert isinstance(region, tuple)
            others = {params[param.name] for params, _ in runners_up}
            assert set(values) <= set(region) <= set(values) | others
            keep = max(1, math.ceil(min_shrink * len(param.values) - 1e-9))
            assert len(region) >= min(keep, len(set(values) | others))
            continue
        assert isinstance(region, Interval)
        assert 0.0 <= region.low <= region.high <= 1.0
        units = [param.to_unit(float(v)) for v in values]
        assert all(region.low - 1e-12 <= u <= region.high + 1e-12 for u in units)
        previous_width = interval(previous, param.name).width
        floor = min(1.0, max(min_shrink * previous_width, min_width))
        assert region.width >= floor - 1e-9
        centre, best = (region.low + region.high) / 2, units[0]
        assert math.isclose(centre, best, abs_tol=1e-9) or region.low == 0 or region.high == 1
        if isinstance(param, IntParameter):
            reachable = {param.from_unit(region.low), param.from_unit(region.high)}
            assert len(reachable) == 2
