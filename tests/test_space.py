"""Search spaces: parameters map their values to and from unit coordinates in [0, 1]."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ConfigError
from common.parameters import ChoiceParameter, FloatParameter, IntParameter, Scale
from common.space import Box, Interval, SearchSpace

units = st.floats(min_value=0.0, max_value=1.0)


def test_log_scale_gives_every_decade_the_same_length_of_the_unit_interval() -> None:
    lr = FloatParameter("lr", 1e-5, 1.0, Scale.LOG)

    edges = [lr.to_unit(10.0**e) for e in range(-5, 1)]

    assert edges == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_reverse_log_spreads_one_minus_the_value_over_decades() -> None:
    beta = FloatParameter("beta", 0.9, 0.999, Scale.REVERSE_LOG)

    assert beta.from_unit(0.0) == pytest.approx(0.9)
    assert beta.from_unit(0.5) == pytest.approx(0.99)
    assert beta.from_unit(1.0) == pytest.approx(0.999)


def test_a_scale_given_as_a_plain_string_is_honoured() -> None:
    # A string such as "log" used to be compared with `is Scale.LOG` and silently taken as linear.
    lr = FloatParameter("lr", 1e-4, 1.0, "log")  # type: ignore[arg-type]

    assert lr.scale is Scale.LOG
    assert lr.from_unit(0.5) == pytest.approx(1e-2)
    assert lr.to_dict()["scale"] == "log"


def test_an_unknown_scale_is_a_config_error_that_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'linear', 'log', 'reverse_log', got scale='logg'"):
        FloatParameter("lr", 1e-4, 1.0, "logg")  # type: ignore[arg-type]


def test_stepped_floats_come_out_exactly_on_the_decimal_step() -> None:
    dropout = FloatParameter("dropout", 0.0, 1.0, step=0.1)

    values = sorted({dropout.from_unit(i / 1000) for i in range(1001)})

    assert values == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_a_float_parameter_with_integer_bounds_still_gives_floats() -> None:
    x = FloatParameter("x", 0, 1)

    assert isinstance(x.from_unit(0.0), float)
    assert isinstance(x.from_unit(1.0), float)


@given(u=units)
def test_every_int_value_owns_a_cell_and_maps_back_to_itself(u: float) -> None:
    units_param = IntParameter("units", 8, 1024, Scale.LOG)

    value = units_param.from_unit(u)

    assert 8 <= value <= 1024
    assert units_param.from_unit(units_param.to_unit(value)) == value


def test_a_linear_int_gives_each_value_an_equal_cell() -> None:
    layers = IntParameter("layers", 1, 4)

    counts = [0, 0, 0, 0]
    for i in range(4000):
        counts[layers.from_unit((i + 0.5) / 4000) - 1] += 1

    assert counts == [1000, 1000, 1000, 1000]


@given(u=units)
def test_choice_values_split_the_unit_interval_evenly(u: float) -> None:
    act = ChoiceParameter("act", ("relu", "tanh", "gelu"))

    value = act.from_unit(u)

    assert value == ("relu", "tanh", "gelu")[min(2, int(u * 3))]
    assert act.from_unit(act.to_unit(value)) == value


def test_choice_values_keep_true_apart_from_1() -> None:
    flag = ChoiceParameter("flag", (True, 1, 1.5))

    assert flag.index(1) == 1
    assert flag.index(True) == 0
    assert flag.contains(1.0) is False


def test_the_space_keeps_parameters_sorted_by_name() -> None:
    space = SearchSpace((FloatParameter("b", 0, 1), IntParameter("a", 0, 3)))

    assert space.names == ("a", "b")
    assert list(space.decode([0.0, 1.0])) == ["a", "b"]


def test_decode_maps_unit_points_into_the_box() -> None:
    space = SearchSpace(
        (FloatParameter("x", 0.0, 10.0), ChoiceParameter("c", ("p", "q", "r", "s")))
    )
    box = Box({"x": Interval(0.5, 0.7), "c": ("q", "s")})

    # Coordinates follow the sorted names: c, then x.
    assert space.decode([0.0, 0.0], box) == {"c": "q", "x": 5.0}
    assert space.decode([0.99, 1.0], box) == {"c": "s", "x": pytest.approx(7.0)}


def test_problems_lists_missing_unknown_and_out_of_range_values() -> None:
    space = SearchSpace((FloatParameter("x", 0.0, 1.0), IntParameter("n", 1, 3)))

    assert space.problems({"x": 2.0, "z": 1}) == [
        "unknown parameter 'z'",
        "missing parameter 'n'",
        "x=2.0 is outside {'type': 'float', 'low': 0.0, 'high': 1.0, 'scale': 'linear'}",
    ]


def test_a_box_round_trips_through_its_json_form() -> None:
    space = SearchSpace((FloatParameter("x", 0.0, 10.0), ChoiceParameter("c", ("p", "q"))))
    box = Box({"c": ("q",), "x": Interval(0.25, 0.5)})

    data = box.to_dict(space)

    assert data["x"]["low"] == 2.5
    assert Box.from_dict(data) == box


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, math.inf), (math.nan, 1.0), (-math.inf, 0.0)], ids=str
)
def test_bounds_must_be_finite(low: float, high: float) -> None:
    with pytest.raises(ConfigError, match="must be a finite number"):
        FloatParameter("x", low, high)


def test_an_interval_checks_itself_and_quotes_the_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"got \(low=0.8, high=0.2\)"):
        Interval(0.8, 0.2)
