"""Synthetic objectives with known optima, for demos, tests and benchmarks.

Each is a plain function `objective(params, trial) -> float`; all are minimised. The option
`duration` (seconds) makes a trial sleep first, to stand in for training time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from zoomtune.common.objectives import QuadraticOptions, SleepOptions, read_options


class Trial(Protocol):
    options: Mapping[str, Any]


BRANIN_MINIMUM = 0.397887357729738
"""At (-pi, 12.275), (pi, 2.275) and (9.42478, 2.475), over x1 in [-5, 10], x2 in [0, 15]."""

HARTMANN6_MINIMUM = -3.322368011415515
"""At (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573), over [0, 1]^6."""

_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def _simulate_training(duration: float) -> None:
    if duration > 0:
        time.sleep(duration)


def _numbers(params: Mapping[str, Any], names: list[str]) -> list[float]:
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"this objective needs parameters {names}, missing {missing}")
    return [float(params[n]) for n in names]


def branin_value(x1: float, x2: float) -> float:
    """The Branin-Hoo function itself (also used by the search benchmark)."""
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def hartmann6_value(x: npt.ArrayLike) -> float:
    """The Hartmann-6 function itself, of 6 coordinates (also used by the search benchmark)."""
    inner = np.sum(_H6_A * (np.asarray(x, dtype=float) - _H6_P) ** 2, axis=1)
    return float(-np.sum(_H6_ALPHA * np.exp(-inner)))


def branin(params: Mapping[str, Any], trial: Trial) -> float:
    """Branin-Hoo on parameters x1 in [-5, 10] and x2 in [0, 15]; minimum 0.397887."""
    _simulate_training(read_options(SleepOptions, trial.options).duration)
    x1, x2 = _numbers(params, ["x1", "x2"])
    return branin_value(x1, x2)


def hartmann6(params: Mapping[str, Any], trial: Trial) -> float:
    """Hartmann-6 on parameters x1..x6 in [0, 1]; minimum -3.32237."""
    _simulate_training(read_options(SleepOptions, trial.options).duration)
    return hartmann6_value(_numbers(params, [f"x{i}" for i in range(1, 7)]))


def quadratic(params: Mapping[str, Any], trial: Trial) -> float:
    """Sum of squared distances to `options.optimum` (default 0 for every numeric parameter),
    taken in log10 for parameters named in `options.log` (e.g. a learning rate)."""
    options = read_options(QuadraticOptions, trial.options)
    _simulate_training(options.duration)
    optimum, logged = options.optimum, set(options.log)
    total = 0.0
    for name, value in sorted(params.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        target = float(optimum.get(name, 0.0))
        if name in logged:
            total += (math.log10(value) - math.log10(target)) ** 2
        else:
            total += (float(value) - target) ** 2
    return total


def sleep(params: Mapping[str, Any], trial: Trial) -> float:
    """Sleeps `options.duration` seconds (0: a no-op) and returns the sum of the numeric params;
    for throughput benchmarks and tests."""
    _simulate_training(read_options(SleepOptions, trial.options).duration)
    return float(
        sum(v for v in params.values() if isinstance(v, int | float) and not isinstance(v, bool))
    )
