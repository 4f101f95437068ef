"""Benchmark problems: a search space and a function to MINIMIZE, with its optimum when known.

Synthetic functions have known optima (the regret of a trial is its value minus the optimum).
Optima are moved off the centre of the box (and off the cell centres of small grids), so that no
sampler is lucky by construction. The real model (`mlp_digits`) has no known optimum; its regret
is measured against the best score any method found in the same run.

`group` says whether the defaults were tuned on the problem ("tune") or only checked on it
("check"); see BENCHMARKS.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.parameters import ChoiceParameter, FloatParameter, IntParameter, Scale
from common.space import SearchSpace
from workers.objectives.synthetic import branin_value, hartmann6_value

Objective = Callable[[Mapping[str, Any]], float]


@dataclass(frozen=True)
class Problem:
    """A named benchmark problem: `make()` builds its objective (once per process and run)."""

    name: str
    space: SearchSpace
    make: Callable[[], Objective]
    optimum: float | None
    group: str
    note: str


def _floats(names: str, low: float, high: float) -> tuple[FloatParameter, ...]:
    return tuple(FloatParameter(name, low, high) for name in names.split())


def _vector(params: Mapping[str, Any], names: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([float(params[name]) for name in names.split()])


# --- synthetic functions -------------------------------------------------------------------

_SPHERE_SHIFT = np.array([1.3, -2.1, 0.7, 3.2, -0.4])


def _sphere() -> Objective:
    return lambda p: float(np.sum((_vector(p, "x0 x1 x2 x3 x4") - _SPHERE_SHIFT) ** 2))


def _branin() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        return branin_value(float(p["x1"]), float(p["x2"]))

    return f


def _hartmann6() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        return hartmann6_value(_vector(p, "x0 x1 x2 x3 x4 x5"))

    return f


def _rosenbrock() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        x = _vector(p, "x0 x1 x2 x3")
        return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))

    return f


_RASTRIGIN_SHIFT = np.array([1.1, -0.7, 2.3])


def _rastrigin() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        z = _vector(p, "x0 x1 x2") - _RASTRIGIN_SHIFT
        return float(10 * len(z) + np.sum(z**2 - 10 * np.cos(2 * math.pi * z)))

    return f


_ACKLEY_SHIFT = np.array([4.2, -7.5, 11.3, -2.8, 6.1])


def _ackley() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        z = _vector(p, "x0 x1 x2 x3 x4") - _ACKLEY_SHIFT
        n = len(z)
        return float(
            -20 * math.exp(-0.2 * math.sqrt(np.sum(z**2) / n))
            - math.exp(np.sum(np.cos(2 * math.pi * z)) / n)
            + 20
            + math.e
        )

    return f


def _camel() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        x, y = float(p["x"]), float(p["y"])
        return (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2

    return f


def _styblinski() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        x = _vector(p, "x0 x1 x2 x3")
        return float(0.5 * np.sum(x**4 - 16 * x**2 + 5 * x))

    return f


_SHEKEL_BETA = 0.1 * np.array([1, 2, 2, 4, 4, 6, 3, 7, 5, 5])
_SHEKEL_C = np.array(
    [
        [4, 1, 8, 6, 3, 2, 5, 8, 6, 7],
        [4, 1, 8, 6, 7, 9, 3, 1, 2, 3.6],
        [4, 1, 8, 6, 3, 2, 5, 8, 6, 7],
        [4, 1, 8, 6, 7, 9, 3, 1, 2, 3.6],
    ]
)


def _shekel() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        x = _vector(p, "x0 x1 x2 x3")
        return float(-np.sum(1 / (np.sum((x[:, None] - _SHEKEL_C) ** 2, axis=0) + _SHEKEL_BETA)))

    return f


def _levy() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        w = 1 + (_vector(p, "x0 x1 x2 x3 x4") - 1) / 4
        head = math.sin(math.pi * w[0]) ** 2
        body = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
        tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
        return float(head + body + tail)

    return f


def _bounded() -> Objective:
    """A quadratic whose unconstrained optimum lies outside the box in two of four dimensions,
    so the best trial sits on a bound (as a learning rate or a penalty often does)."""

    def f(p: Mapping[str, Any]) -> float:
        return (
            (math.log10(float(p["lr"])) - math.log10(0.3)) ** 2
            + 0.5 * (math.log10(float(p["penalty"])) + 7) ** 2
            + 2 * (float(p["x"]) - 0.3) ** 2
            + (float(p["y"]) - 0.65) ** 2
        )

    return f


_KINDS = {  # offset, optimum of (x, y), best n
    "a": (0.0, (0.2, 0.7), 4),
    "b": (0.3, (0.8, 0.3), 15),
    "c": (0.6, (0.5, 0.5), 9),
    "d": (1.0, (0.4, 0.1), 1),
}


def _choice() -> Objective:
    """The choice moves the optimum of the other parameters; 'a' is best, 'd' worst."""

    def f(p: Mapping[str, Any]) -> float:
        offset, (cx, cy), best_n = _KINDS[str(p["kind"])]
        x, y, n = float(p["x"]), float(p["y"]), int(p["n"])
        return offset + 4 * ((x - cx) ** 2 + (y - cy) ** 2) + 0.01 * (n - best_n) ** 2

    return f


def _hidden() -> Objective:
    """Only the learning rate and the momentum matter; eight other parameters are noise-free
    decoys. The loss valley runs along lr / (1 - beta) = constant, as for SGD with momentum."""

    def f(p: Mapping[str, Any]) -> float:
        a = math.log10(float(p["lr"]) / 2e-3)
        b = math.log10((1 - float(p["beta"])) / 0.02)
        return (a - b) ** 2 + 0.25 * (a + b) ** 2

    return f


_ACTIVATION_PENALTY = {"gelu": 0.0, "relu": 0.1, "tanh": 0.4, "sigmoid": 1.0}


def _mixed() -> Objective:
    def f(p: Mapping[str, Any]) -> float:
        return (
            math.log10(float(p["lr"]) / 3e-3) ** 2
            + 0.1 * math.log10(float(p["weight_decay"]) / 1e-4) ** 2
            + 0.15 * math.log2(int(p["units"]) / 256) ** 2
            + 0.2 * (int(p["layers"]) - 3) ** 2
            + _ACTIVATION_PENALTY[str(p["activation"])]
            + 4.0 * (float(p["dropout"]) - 0.2) ** 2
        )

    return f


# --- a real model --------------------------------------------------------------------------


def _mlp_digits() -> Objective:
    """Held-out log-loss of a small MLP on scikit-learn's digits (about 0.1-0.5 s a trial)."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=0.3, random_state=0, stratify=y
    )

    def f(p: Mapping[str, Any]) -> float:
        model = MLPClassifier(
            hidden_layer_sizes=(int(p["hidden"]),),
            activation=str(p["activation"]),
            learning_rate_init=float(p["lr"]),
            alpha=float(p["alpha"]),
            batch_size=int(p["batch_size"]),
            beta_1=float(p["beta_1"]),
            max_iter=10,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: 10 epochs is on purpose
            model.fit(x_train, y_train)
            loss = float(log_loss(y_test, model.predict_proba(x_test), labels=list(range(10))))
        return loss if math.isfinite(loss) else 10.0

    return f


def problems() -> tuple[Problem, ...]:
    """Every benchmark problem, in table order."""
    log, rlog = Scale.LOG, Scale.REVERSE_LOG
    return (
        Problem(
            "sphere5",
            SearchSpace(_floats("x0 x1 x2 x3 x4", -5.0, 5.0)),
            _sphere,
            0.0,
            "tune",
            "shifted quadratic, 5 floats in [-5, 5]",
        ),
        Problem(
            "branin2",
            SearchSpace((FloatParameter("x1", -5.0, 10.0), FloatParameter("x2", 0.0, 15.0))),
            _branin,
            0.397887357729738,
            "tune",
            "Branin, 3 global minima",
        ),
        Problem(
            "rastrigin3",
            SearchSpace(_floats("x0 x1 x2", -5.12, 5.12)),
            _rastrigin,
            0.0,
            "tune",
            "shifted Rastrigin, multimodal (~10^3 local minima)",
        ),
        Problem(
            "hidden2of10",
            SearchSpace(
                (
                    FloatParameter("lr", 1e-6, 1.0, log),
                    FloatParameter("beta", 0.0, 0.999, rlog),
                    IntParameter("units", 8, 1024, log),
                    IntParameter("layers", 1, 8),
                    ChoiceParameter("activation", ("relu", "tanh", "gelu")),
                    FloatParameter("dropout", 0.0, 0.5),
                    FloatParameter("weight_decay", 1e-6, 1e-2, log),
                    IntParameter("warmup", 0, 1000, step=50),
                    FloatParameter("clip", 0.1, 10.0, log),
                    FloatParameter("label_smoothing", 0.0, 0.3, step=0.05),
                )
            ),
            _hidden,
            0.0,
            "tune",
            "lr (log) and momentum (reverse_log) matter, 8 decoys (int, choice, log, step)",
        ),
        Problem(
            "camel2",
            SearchSpace((FloatParameter("x", -3.0, 3.0), FloatParameter("y", -2.0, 2.0))),
            _camel,
            -1.0316284534898774,
            "tune",
            "six-hump camel, 2 global and 4 local minima",
        ),
        Problem(
            "styblinski4",
            SearchSpace(_floats("x0 x1 x2 x3", -5.0, 5.0)),
            _styblinski,
            -39.16616570377142 * 4,
            "tune",
            "Styblinski-Tang, 2^4 local minima, the best one off-centre",
        ),
        Problem(
            "choice4",
            SearchSpace(
                (
                    ChoiceParameter("kind", ("a", "b", "c", "d")),
                    FloatParameter("x", 0.0, 1.0),
                    FloatParameter("y", 0.0, 1.0),
                    IntParameter("n", 1, 20),
                )
            ),
            _choice,
            0.0,
            "tune",
            "a choice that moves the optimum of two floats and an int",
        ),
        Problem(
            "shekel4",
            SearchSpace(_floats("x0 x1 x2 x3", 0.0, 10.0)),
            _shekel,
            -10.53644315348353,
            "tune",
            "Shekel-10: ten narrow basins on a flat plateau (deceptive)",
        ),
        Problem(
            "hartmann6",
            SearchSpace(_floats("x0 x1 x2 x3 x4 x5", 0.0, 1.0)),
            _hartmann6,
            -3.32236801141551,
            "check",
            "Hartmann-6, 6 floats in [0, 1]",
        ),
        Problem(
            "rosenbrock4",
            SearchSpace(_floats("x0 x1 x2 x3", -2.048, 2.048)),
            _rosenbrock,
            0.0,
            "check",
            "Rosenbrock, curved valley",
        ),
        Problem(
            "ackley5",
            SearchSpace(_floats("x0 x1 x2 x3 x4", -32.768, 32.768)),
            _ackley,
            0.0,
            "check",
            "shifted Ackley, multimodal",
        ),
        Problem(
            "mixed6",
            SearchSpace(
                (
                    FloatParameter("lr", 1e-5, 1.0, log),
                    FloatParameter("weight_decay", 1e-7, 1e-1, log),
                    IntParameter("units", 16, 1024, log),
                    IntParameter("layers", 1, 6),
                    ChoiceParameter("activation", ("relu", "tanh", "sigmoid", "gelu")),
                    FloatParameter("dropout", 0.0, 0.8, step=0.05),
                )
            ),
            _mixed,
            0.0,
            "check",
            "separable, log floats, log int, int, choice, stepped float",
        ),
        Problem(
            "levy5",
            SearchSpace(_floats("x0 x1 x2 x3 x4", -10.0, 10.0)),
            _levy,
            0.0,
            "check",
            "Levy, multimodal",
        ),
        Problem(
            "bounded4",
            SearchSpace(
                (
                    FloatParameter("lr", 1e-5, 1e-1, Scale.LOG),
                    FloatParameter("penalty", 1e-6, 1.0, Scale.LOG),
                    FloatParameter("x", 0.0, 1.0),
                    FloatParameter("y", 0.0, 1.0),
                )
            ),
            _bounded,
            (math.log10(0.1) - math.log10(0.3)) ** 2 + 0.5 * (-6 + 7) ** 2,
            "check",
            "optimum on the bounds in 2 of 4 log-scale dimensions",
        ),
        Problem(
            "mlp_digits",
            SearchSpace(
                (
                    FloatParameter("lr", 1e-4, 0.3, log),
                    FloatParameter("alpha", 1e-6, 1e-1, log),
                    IntParameter("hidden", 8, 128, log),
                    IntParameter("batch_size", 16, 256, log),
                    FloatParameter("beta_1", 0.5, 0.99, rlog),
                    ChoiceParameter("activation", ("relu", "tanh", "logistic")),
                )
            ),
            _mlp_digits,
            None,
            "check",
            "scikit-learn MLPClassifier on digits, held-out log-loss (real model)",
        ),
    )
