"""The `synthetic-training` objective: durations like real training, two kinds of curves."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from zoomtune.workers.objectives.training import (
    CHANCE,
    CURVES,
    PEAK,
    epoch_seconds,
    final_score,
    synthetic_training,
    value_at,
)
from zoomtune.workers.registry import ObjectiveRegistry

BEST = {"learning_rate": 0.03, "width": 180, "depth": 4, "momentum": 0.9, "dropout": 0.2}
"""Effective learning rate 0.03 / (1 - 0.9) = 0.3: the optimum."""


def random_params(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Points spread over the whole space, on the scales a study file gives it."""
    rng = np.random.default_rng(seed)
    return [
        {
            "learning_rate": float(10 ** rng.uniform(-4, 0)),
            "width": round(2 ** rng.uniform(4, 9)),
            "depth": int(rng.integers(1, 7)),
            "momentum": float(1 - 10 ** rng.uniform(-3, math.log10(0.5))),
            "dropout": float(rng.uniform(0, 0.5)),
        }
        for _ in range(count)
    ]


def ranks(values: list[float]) -> list[int]:
    return sorted(range(len(values)), key=lambda i: values[i])


@dataclass
class FakeTrial:
    options: dict[str, Any] = field(default_factory=dict)
    prune_after: int | None = None
    reports: list[tuple[int, float]] = field(default_factory=list)

    def report(self, step: int, value: float) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_after is not None and len(self.reports) >= self.prune_after


def test_it_is_a_built_in_objective() -> None:
    assert ObjectiveRegistry.build().get("synthetic-training") is synthetic_training


def test_the_best_final_score_is_at_the_optimum_inside_the_space() -> None:
    assert final_score(BEST) == pytest.approx(PEAK)
    for name, off in [("learning_rate", 0.1), ("width", 40), ("depth", 2), ("dropout", 0.45)]:
        assert final_score(BEST | {name: off}) < PEAK - 0.05, name
    scores = [final_score(p) for p in random_params(500)]
    assert all(CHANCE < s <= PEAK for s in scores)
    assert max(scores) > 0.85 > statistics.median(scores)


def test_epoch_time_grows_about_tenfold_from_the_smallest_to_the_largest_model() -> None:
    def mean_time(width: int, depth: int) -> float:
        # Averaged over the jitter, which varies with the other parameters.
        lrs = np.logspace(-4, 0, 200)
        return statistics.mean(
            epoch_seconds(BEST | {"width": width, "depth": depth, "learning_rate": lr}, 1.0)
            for lr in lrs
        )

    ratio = mean_time(512, 6) / mean_time(16, 1)
    assert 8 < ratio < 16
    assert mean_time(90, 4) == pytest.approx(1.0, rel=0.25)  # `scale` is a mid-sized model's


def test_epoch_time_has_a_lognormal_jitter_of_sigma_about_0_4() -> None:
    logs = [
        math.log(epoch_seconds(BEST | {"learning_rate": lr}, 1.0)) for lr in np.logspace(-4, 0, 400)
    ]
    assert 0.33 < statistics.stdev(logs) < 0.47


def test_the_same_trial_always_takes_the_same_time_whatever_the_types() -> None:
    assert epoch_seconds(BEST, 0.05) == epoch_seconds(dict(BEST), 0.05)
    assert epoch_seconds(BEST | {"width": 180.0}, 0.05) == epoch_seconds(BEST, 0.05)
    assert epoch_seconds(BEST | {"dropout": 0.21}, 0.05) != epoch_seconds(BEST, 0.05)
    assert epoch_seconds(BEST, 0.1) == pytest.approx(2 * epoch_seconds(BEST, 0.05))


@pytest.mark.parametrize("curve", CURVES)
def test_both_curves_end_exactly_at_the_final_score(curve: str) -> None:
    for params in random_params(50):
        assert value_at(params, 27, curve) == final_score(params)
        assert value_at(params, 9, curve, epochs=9) == final_score(params)


@pytest.mark.parametrize("curve", CURVES)
def test_curves_rise_from_chance(curve: str) -> None:
    values = [value_at(BEST, epoch, curve) for epoch in range(1, 28)]
    assert CHANCE < values[0] < values[8] < values[-1]


def test_predictive_curves_rank_trials_after_the_first_epoch_as_at_the_end() -> None:
    params = random_params(100)
    final = ranks([final_score(p) for p in params])
    for epoch in (1, 3, 9):
        assert ranks([value_at(p, epoch, "predictive") for p in params]) == final


def test_crossing_curves_invert_the_early_ranking_of_large_and_best_learning_rates() -> None:
    large = BEST | {"learning_rate": 0.3}  # ten times the best effective learning rate
    larger = BEST | {"learning_rate": 0.1}  # three times
    for params, epochs in [(large, (1, 3, 4)), (larger, (1, 3, 4, 9))]:
        for epoch in epochs:
            assert value_at(params, epoch, "crossing") > value_at(BEST, epoch, "crossing")
            assert value_at(params, epoch, "predictive") < value_at(BEST, epoch, "predictive")
        assert value_at(params, 20, "crossing") < value_at(BEST, 20, "crossing")
    assert final_score(large) < final_score(BEST) - 0.3


@pytest.mark.parametrize(("curve", "keeps_the_best"), [("predictive", True), ("crossing", False)])
def test_a_naive_halving_pruner_loses_the_best_trials_only_on_crossing_curves(
    curve: str, keeps_the_best: bool
) -> None:
    # Decent trials around the optimum, as a search sees them once it has found the region.
    cohort = [
        BEST | {"learning_rate": float(lr), "width": int(width)}
        for lr in np.logspace(-2.5, -0.5, 9)
        for width in (64, 128, 180, 256)
    ]
    best_three = set(sorted(range(len(cohort)), key=lambda i: -final_score(cohort[i]))[:3])
    at_rung = [value_at(p, 3, curve) for p in cohort]
    kept = set(sorted(range(len(cohort)), key=lambda i: -at_rung[i])[: len(cohort) // 3])
    assert (best_three <= kept) is keeps_the_best
    if not keeps_the_best:
        assert not best_three & kept


def test_the_objective_reports_every_epoch_and_returns_the_final_score() -> None:
    trial = FakeTrial({"epochs": 5, "scale": 0, "curve": "crossing"})
    assert synthetic_training(BEST, trial) == final_score(BEST)
    assert [step for step, _ in trial.reports] == [1, 2, 3, 4, 5]
    assert trial.reports[2][1] == value_at(BEST, 3, "crossing", epochs=5)


def test_the_objective_stops_when_told_to_prune_and_returns_its_last_value() -> None:
    trial = FakeTrial({"epochs": 27, "scale": 0}, prune_after=3)
    assert synthetic_training(BEST, trial) == value_at(BEST, 3, "predictive")
    assert len(trial.reports) == 3


def test_the_objective_sleeps_its_epoch_time() -> None:
    import time

    options = {"epochs": 3, "scale": 0.02}
    start = time.perf_counter()
    synthetic_training(BEST, FakeTrial(options))
    assert time.perf_counter() - start >= 3 * epoch_seconds(BEST, 0.02)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"curve": "wavy"}, "option curve: input should be 'predictive' or 'crossing', got 'wavy'"),
        ({"epochs": 0}, "option epochs: input should be greater than or equal to 1, got 0"),
        ({"epochs": 2.5}, "option epochs: input should be a valid integer, got 2.5"),
        ({"scale": -1}, "option scale: input should be greater than or equal to 0, got -1"),
        ({"scale": "fast"}, "option scale: input should be a valid number, got 'fast'"),
        ({"epoch": 3}, "unknown option 'epoch'; did you mean 'epochs'?"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        synthetic_training(BEST, FakeTrial(options))


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(KeyError, match=r"missing \['dropout'\]"):
        final_score({k: v for k, v in BEST.items() if k != "dropout"})
