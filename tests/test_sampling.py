"""Samplers: n parameter dicts inside the box, on the step, seeded; random spreads, grid does not.

The contract tests are written once and run against every sampler (as in Optuna's
pytest_samplers.py); sampler-specific behaviour follows them.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from common.errors import ConfigError
from common.parameters import (
    Choice,
    ChoiceParameter,
    FloatParameter,
    IntParameter,
    Parameter,
    Scale,
)
from common.space import Box, Interval, Region, SearchSpace
from common.study_settings import SAMPLERS
from coordinator.sampling import grid_levels, sample, unit_points

# --- strategies: random spaces and boxes inside them ----------------------------------------


@st.composite
def parameters(draw: st.DrawFn, name: str) -> Parameter:
    kind = draw(
        st.sampled_from(["linear", "log", "reverse_log", "stepped", "int", "int_log", "choice"])
    )
    if kind == "linear":
        low = draw(st.floats(-1e3, 1e3))
        return FloatParameter(name, low, low + draw(st.floats(0, 1e3)))
    if kind == "log":
        low = draw(st.floats(1e-8, 1.0))
        return FloatParameter(name, low, low * draw(st.floats(1, 1e6)), Scale.LOG)
    if kind == "reverse_log":
        low = draw(st.floats(0.0, 0.9))
        return FloatParameter(name, low, draw(st.floats(low, 0.9999)), Scale.REVERSE_LOG)
    if kind == "stepped":
        step = draw(st.sampled_from([0.05, 0.1, 0.25, 2.0]))
        low = draw(st.integers(-20, 20)) * step
        return FloatParameter(name, low, low + draw(st.integers(0, 20)) * step, step=step)
    if kind == "int":
        step = draw(st.integers(1, 5))
        low = draw(st.integers(-50, 50))
        return IntParameter(name, low, low + step * draw(st.integers(0, 30)), step=step)
    if kind == "int_log":
        low = draw(st.integers(1, 100))
        return IntParameter(name, low, low + draw(st.integers(0, 5000)), Scale.LOG)
    pool: list[Choice] = ["a", "b", "c", 1, 2.5, True]
    values = draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))
    return ChoiceParameter(name, tuple(values))


@st.composite
def spaces(draw: st.DrawFn) -> SearchSpace:
    d = draw(st.integers(1, 6))
    return SearchSpace(tuple(draw(parameters(f"p{i}")) for i in range(d)))


@st.composite
def boxes(draw: st.DrawFn, space: SearchSpace) -> Box:
    regions: dict[str, Region] = {}
    for param in space:
        if isinstance(param, ChoiceParameter):
            keep = draw(st.lists(st.sampled_from(param.values), min_size=1, unique=True))
            regions[param.name] = tuple(v for v in param.values if v in keep)
        else:
            a, b = sorted((draw(st.floats(0, 1)), draw(st.floats(0, 1))))
            regions[param.name] = Interval(a, b)
    return Box(regions)


def inside(space: SearchSpace, box: Box, params: dict[str, Any]) -> list[str]:
    """Why `params` is not a point of `box` (empty when it is)."""
    problems = space.problems(params)
    for param in space:
        region, value = box[param.name], params[param.name]
        if isinstance(region, Interval):
            lowest, highest = param.from_unit(region.low), param.from_unit(region.high)
            if not lowest <= value <= highest:
                problems.append(f"{param.name}={value!r} outside [{lowest!r}, {highest!r}]")
        elif not any(type(value) is type(v) and value == v for v in region):
            problems.append(f"{param.name}={value!r} not in {region!r}")
    return problems


MIXED = SearchSpace(
    (
        FloatParameter("lr", 1e-5, 1.0, Scale.LOG),
        FloatParameter("beta", 0.9, 0.999, Scale.REVERSE_LOG),
        FloatParameter("dropout", 0.0, 0.5, step=0.1),
        IntParameter("units", 8, 1024, Scale.LOG),
        IntParameter("layers", 1, 6),
        ChoiceParameter("act", ("relu", "tanh", "gelu")),
    )
)

# --- the contract every sampler keeps --------------------------------------------------------


@pytest.mark.parametrize("method", SAMPLERS)
class TestEverySampler:
    @settings(max_examples=60, deadline=None)
    @given(data=st.data())
    def test_samples_lie_inside_the_box_and_on_the_step(
        self, method: str, data: st.DataObject
    ) -> None:
        space = data.draw(spaces())
        box = data.draw(boxes(space))
        n = data.draw(st.integers(0, 40))

        trials = sample(
            space, n, np.random.default_rng(data.draw(st.integers(0, 99))), method=method, box=box
        )

        assert len(trials) == n
        for params in trials:
            assert list(params) == sorted(params)
            assert inside(space, box, params) == []

    def test_the_whole_space_is_the_default_box(self, method: str) -> None:
        trials = sample(MIXED, 64, np.random.default_rng(0), method=method)

        assert all(MIXED.problems(params) == [] for params in trials)

    def test_the_same_seed_gives_the_same_trials(self, method: str) -> None:
        first = sample(MIXED, 20, np.random.default_rng(42), method=method)
        again = sample(MIXED, 20, np.random.default_rng(42), method=method)

        assert first == again

    def test_another_seed_gives_other_trials(self, method: str) -> None:
        first = sample(MIXED, 20, np.random.default_rng(1), method=method)
        other = sample(MIXED, 20, np.random.default_rng(2), method=method)

        assert first != other

    def test_unit_points_have_the_asked_shape_and_stay_in_the_unit_cube(self, method: str) -> None:
        points = unit_points(method, 37, 5, np.random.default_rng(0))

        assert points.shape == (37, 5)
        assert ((points >= 0) & (points <= 1)).all()

    def test_zero_trials_is_an_empty_list(self, method: str) -> None:
        assert sample(MIXED, 0, np.random.default_rng(0), method=method) == []

    def test_a_log_scale_gives_each_decade_the_same_share(self, method: str) -> None:
        # Given a learning rate over 5 decades, when 1000 trials are drawn,
        # then the counts per decade pass a chi-square test of equal shares.
        space = SearchSpace((FloatParameter("lr", 1e-5, 1.0, Scale.LOG),))

        trials = sample(space, 1000, np.random.default_rng(3), method=method)

        counts = Counter(min(4, math.floor(math.log10(float(p["lr"])) + 5)) for p in trials)
        assert stats.chisquare([counts[i] for i in range(5)]).pvalue > 0.01

    def test_reverse_log_gives_each_decade_of_one_minus_beta_the_same_share(
        self, method: str
    ) -> None:
        space = SearchSpace((FloatParameter("beta", 0.0, 0.999, Scale.REVERSE_LOG),))

        trials = sample(space, 900, np.random.default_rng(4), method=method)

        counts = Counter(min(2, math.floor(-math.log10(1 - float(p["beta"])))) for p in trials)
        assert stats.chisquare([counts[i] for i in range(3)]).pvalue > 0.01


# --- what sets the samplers apart ------------------------------------------------------------


@pytest.mark.parametrize("method", ["random", "sobol", "lhs"])
def test_random_samplers_try_a_new_value_of_each_parameter_in_every_trial(method: str) -> None:
    # 25 trials over two parameters: 25 learning rates, where a 5x5 grid tries only 5.
    space = SearchSpace((FloatParameter("lr", 1e-5, 1.0, Scale.LOG), FloatParameter("x", 0, 1)))

    trials = sample(space, 25, np.random.default_rng(0), method=method)

    assert len({p["lr"] for p in trials}) == 25
    assert len({p["x"] for p in trials}) == 25


def test_a_grid_tries_only_its_levels_of_each_parameter() -> None:
    space = SearchSpace((FloatParameter("lr", 1e-5, 1.0, Scale.LOG), FloatParameter("x", 0, 1)))

    trials = sample(space, 25, np.random.default_rng(0), method="grid")

    assert len({p["lr"] for p in trials}) == 5
    assert sorted({p["x"] for p in trials}) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


@pytest.mark.parametrize(
    ("n", "d", "levels"), [(1, 3, 1), (2, 1, 2), (25, 2, 5), (26, 2, 6), (27, 3, 3), (16, 8, 2)]
)
def test_grid_levels_is_the_smallest_full_grid_with_n_points(n: int, d: int, levels: int) -> None:
    assert grid_levels(n, d) == levels


def test_a_grid_never_repeats_a_point_even_in_many_dimensions() -> None:
    points = unit_points("grid", 500, 40, np.random.default_rng(0))

    assert len({tuple(row) for row in points.tolist()}) == 500
    assert set(np.unique(points)) == {0.25, 0.75}


def test_a_latin_hypercube_uses_each_slice_of_each_parameter_once() -> None:
    points = unit_points("lhs", 10, 3, np.random.default_rng(0))

    for column in points.T:
        assert sorted(np.floor(column * 10).astype(int).tolist()) == list(range(10))


def test_sobol_draws_any_number_of_points_without_the_power_of_two_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points = unit_points("sobol", 10, 4, np.random.default_rng(0))

    assert points.shape == (10, 4)


def test_sobol_spreads_points_more_evenly_than_independent_ones() -> None:
    rng = np.random.default_rng(0)
    sobol = [stats.qmc.discrepancy(unit_points("sobol", 64, 4, rng)) for _ in range(20)]
    random = [stats.qmc.discrepancy(unit_points("random", 64, 4, rng)) for _ in range(20)]

    assert max(sobol) < min(random)


def test_an_unknown_sampler_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="unknown sampler 'sobel'; did you mean 'sobol'"):
        sample(MIXED, 4, np.random.default_rng(0), method="sobel")
