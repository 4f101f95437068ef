"""Which hyperparameters matter: permutation importance of a random forest on the warped
parameters, and the warning about best trials at the edge of a range."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from tests.harness import study_toml
from tests.records import NN_SPACE, nn_like, simulate
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialStatus
from zoomtune.coordinator.edges import edge_warnings
from zoomtune.coordinator.export import StudyRecord
from zoomtune.coordinator.importance import MIN_TRIALS, ParameterImportance, parameter_importance
from zoomtune.coordinator.sampling import sample

THREE = """
x = { type = "float", low = 0.0, high = 1.0 }
y = { type = "float", low = 0.0, high = 1.0 }
kind = { type = "choice", values = ["a", "b", "c"] }
"""


def spec_of(space: str, **kwargs: Any) -> StudySpec:
    return StudySpec.from_toml(study_toml(space=space, **kwargs))


def random_results(
    spec: StudySpec, n: int, score: Any, seed: int = 0
) -> list[tuple[Mapping[str, Any], float]]:
    points = sample(spec.space, n, np.random.default_rng(seed), method="random")
    return [(p, float(score(p))) for p in points]


class TestImportance:
    def test_the_dominant_parameter_comes_first(self) -> None:
        # Given scores that depend mostly on y, a little on x and not at all on the choice
        spec = spec_of(THREE)
        results = random_results(spec, 60, lambda p: 5 * (p["y"] - 0.6) ** 2 + 0.2 * p["x"])

        ranked = parameter_importance(spec.space, results)

        assert [item.name for item in ranked] == ["y", "x", "kind"]
        assert ranked[0].share > 0.8
        assert sum(item.share for item in ranked) == pytest.approx(1.0)
        assert ranked == parameter_importance(spec.space, results)  # deterministic

    def test_a_choice_parameter_can_dominate(self) -> None:
        spec = spec_of(THREE)
        offset = {"a": 0.0, "b": 3.0, "c": 1.0}
        results = random_results(spec, 60, lambda p: offset[p["kind"]] + 0.1 * p["x"])
        assert parameter_importance(spec.space, results)[0].name == "kind"

    def test_a_log_scaled_learning_rate_is_judged_in_decades(self) -> None:
        # The score depends on log10(lr) near 1e-3; on a linear axis nearly every sample
        # would sit in the top decade, on the unit (log) coordinate they spread out.
        space = (
            'learning_rate = { type = "float", low = 1e-6, high = 1.0, scale = "log" }\n'
            'units = { type = "int", low = 16, high = 256 }'
        )
        spec = spec_of(space)
        results = random_results(
            spec,
            40,
            lambda p: (math.log10(p["learning_rate"]) + 3) ** 2 + 0.001 * p["units"],
        )
        assert parameter_importance(spec.space, results)[0].name == "learning_rate"

    def test_too_few_trials_give_no_ranking(self) -> None:
        spec = spec_of(THREE)
        results = random_results(spec, MIN_TRIALS - 1, lambda p: p["x"])
        assert parameter_importance(spec.space, results) == []

    def test_constant_scores_give_every_parameter_nothing(self) -> None:
        spec = spec_of(THREE)
        ranked = parameter_importance(spec.space, random_results(spec, 20, lambda p: 1.0))
        assert {item.share for item in ranked} == {0.0}

    def test_the_learning_rate_comes_first_on_an_nn_like_study(self) -> None:
        # A whole coarse-to-fine study: later rounds narrow in on the learning rate
        spec = spec_of(NN_SPACE, direction="maximize", rounds=3, trials_per_round=16)
        record = simulate(spec, nn_like)
        results = [(t.params, float(t.score or 0.0)) for t in record.completed()]
        assert parameter_importance(spec.space, results)[0].name == "learning_rate"

    @pytest.mark.slow
    def test_the_learning_rate_comes_first_on_the_built_in_mlp(self) -> None:
        # Given the real scikit-learn MLP on digits, 16 trials of 2 epochs
        from zoomtune.workers.objectives.digits import mlp_digits

        spec = spec_of(
            'learning_rate = { type = "float", low = 1e-5, high = 1.0, scale = "log" }\n'
            'momentum = { type = "float", low = 0.5, high = 0.99, scale = "reverse_log" }\n'
            'hidden_units = { type = "int", low = 8, high = 64, scale = "log" }\n'
            'batch_size = { type = "int", low = 32, high = 256, scale = "log" }'
        )

        class Trial:
            options: Mapping[str, Any] = {"max_iter": 2}

            def report(self, step: int, value: float) -> None:
                return None

            def should_prune(self) -> bool:
                return False

        points = sample(spec.space, 16, np.random.default_rng(0), method="sobol")
        results = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # large learning rates overflow
            for params in points:
                try:
                    results.append((params, mlp_digits(params, Trial())))
                except FloatingPointError:
                    continue  # diverged: a FAILED trial, not a score

        # Then the learning rate is found to matter most
        assert parameter_importance(spec.space, results)[0].name == "learning_rate"


EDGES = """
learning_rate = { type = "float", low = 1e-5, high = 0.1, scale = "log" }
momentum = { type = "float", low = 0.0, high = 1.0 }
layers = { type = "int", low = 1, high = 3 }
"""


def quadratic_at(lr: float, momentum: float, layers: float) -> Any:
    def score(p: Mapping[str, Any]) -> float:
        return (
            (math.log10(p["learning_rate"]) - math.log10(lr)) ** 2
            + (p["momentum"] - momentum) ** 2
            + (p["layers"] - layers) ** 2
        )

    return score


def warnings_of(record: StudyRecord) -> list[str]:
    results = [(t.params, float(t.score or 0.0)) for t in record.completed()]
    importance = parameter_importance(record.spec.space, results)
    return [w.message for w in edge_warnings(record.spec, record.trials, importance)]


class TestEdgeWarning:
    def test_it_fires_when_the_optimum_lies_outside_the_range(self) -> None:
        # Given a learning rate whose optimum 0.3 is above the range [1e-5, 0.1], and an
        # int parameter whose optimum 0 is below its range [1, 3]
        spec = spec_of(EDGES, rounds=4, trials_per_round=16)
        record = simulate(spec, quadratic_at(lr=0.3, momentum=0.4, layers=0))

        # Then both are named, with the bound the best trials pile up at
        assert warnings_of(record) == [
            "layers: the best trials are at the lower edge 1 of its range; consider widening it",
            "learning_rate: the best trials are at the upper edge 0.1 of its range; "
            "consider widening it",
        ]

    @pytest.mark.parametrize("seed", range(3))
    def test_it_is_silent_when_the_optimum_lies_inside(self, seed: int) -> None:
        # 0.003 is a fifth of the range (in decades) below the upper bound 0.1
        spec = spec_of(EDGES, rounds=4, trials_per_round=16, seed=seed)
        record = simulate(spec, quadratic_at(lr=0.003, momentum=0.4, layers=2))
        assert warnings_of(record) == []

    def test_a_parameter_that_does_not_matter_is_not_named(self) -> None:
        # Given layers, which the scores ignore, at its lower bound in the best trials by chance
        spec = spec_of(EDGES)
        best_first = [
            Trial("demo", i, 1, params, TrialStatus.COMPLETE, score=float(i))
            for i, params in enumerate(
                [
                    {"learning_rate": 1e-3, "momentum": 0.5, "layers": 1},
                    {"learning_rate": 2e-3, "momentum": 0.4, "layers": 1},
                    {"learning_rate": 3e-3, "momentum": 0.6, "layers": 3},
                    {"learning_rate": 1e-2, "momentum": 0.5, "layers": 2},
                ]
            )
        ]
        importance = [
            ParameterImportance("learning_rate", 0.9, 0.0),
            ParameterImportance("momentum", 0.1, 0.0),
            ParameterImportance("layers", 0.0, 0.0),
        ]
        assert edge_warnings(spec, best_first, importance) == []
        # ... but it is named once it matters
        mattering = [*importance[:2], ParameterImportance("layers", 0.3, 0.0)]
        assert [w.name for w in edge_warnings(spec, best_first, mattering)] == ["layers"]
        # ... and nothing is said without an importance ranking
        assert edge_warnings(spec, best_first, []) == []

    def test_it_judges_the_last_round_only(self) -> None:
        # Given a maximised study whose round 1 was best at the upper edge of x and whose
        # round 2 is best in the middle
        spec = spec_of('x = { type = "float", low = 0.0, high = 1.0 }', direction="maximize")
        importance = [ParameterImportance("x", 1.0, 0.0)]

        def trials(round_number: int, xs: list[float]) -> list[Trial]:
            first = 0 if round_number == 1 else 10
            return [
                Trial("demo", first + i, round_number, {"x": x}, TrialStatus.COMPLETE, score=s)
                for i, (x, s) in enumerate(zip(xs, [3.0, 2.0, 1.0, 0.0], strict=True))
            ]

        at_edge = trials(1, [0.97, 0.85, 0.93, 0.2])
        in_middle = trials(2, [0.5, 0.55, 0.45, 0.99])

        # Then only the last round counts
        assert [w.side for w in edge_warnings(spec, at_edge, importance)] == ["upper"]
        assert edge_warnings(spec, at_edge + in_middle, importance) == []
