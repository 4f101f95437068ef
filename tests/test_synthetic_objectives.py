"""The synthetic objectives: their known optima are where their docstrings say."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from zoomtune.workers.objectives.synthetic import (
    BRANIN_MINIMUM,
    HARTMANN6_MINIMUM,
    branin,
    hartmann6,
    quadratic,
    sleep,
)


@dataclass
class FakeTrial:
    options: dict[str, Any] = field(default_factory=dict)


@pytest.mark.parametrize(("x1", "x2"), [(-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)])
def test_branin_reaches_its_minimum_at_each_of_its_three_minimisers(x1: float, x2: float) -> None:
    assert branin({"x1": x1, "x2": x2}, FakeTrial()) == pytest.approx(BRANIN_MINIMUM, abs=1e-5)


def test_branin_is_higher_away_from_its_minimisers() -> None:
    assert branin({"x1": 0.0, "x2": 0.0}, FakeTrial()) > BRANIN_MINIMUM + 1


def test_hartmann6_reaches_its_minimum_at_its_minimiser() -> None:
    best = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]
    params = {f"x{i + 1}": value for i, value in enumerate(best)}
    assert hartmann6(params, FakeTrial()) == pytest.approx(HARTMANN6_MINIMUM, abs=1e-4)
    assert hartmann6({f"x{i}": 0.5 for i in range(1, 7)}, FakeTrial()) > HARTMANN6_MINIMUM + 0.5


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(KeyError, match="missing \\['x2'\\]"):
        branin({"x1": 0.0}, FakeTrial())


def test_quadratic_is_zero_at_its_optimum_with_log_parameters_measured_in_decades() -> None:
    trial = FakeTrial({"optimum": {"lr": 1e-3, "units": 40}, "log": ["lr"]})
    assert quadratic({"lr": 1e-3, "units": 40, "act": "relu"}, trial) == 0.0
    assert quadratic({"lr": 1e-2, "units": 40}, trial) == pytest.approx(1.0)  # one decade off
    assert quadratic({"lr": 1e-3, "units": 42}, trial) == pytest.approx(4.0)


def test_sleep_returns_the_sum_of_the_numeric_parameters() -> None:
    assert sleep({"x": 0.25, "n": 2, "flag": True, "name": "a"}, FakeTrial()) == 2.25
