"""The methods the benchmark compares, each run at the same budget of q trials x rounds.

- `coarse_to_fine`: `coordinator.search.CoarseToFine` with the study-file defaults (or the
  `[search]` overrides the tuning script passes).
- `random`: independent uniform points over the whole space, in the same warped coordinates
  (log, reverse_log, steps) that coarse-to-fine uses: the textbook random search.
- `grid`: one grid of q x rounds points over the whole space (`coordinator.sampling.grid_points`:
  L levels per dimension, the points picked at random among the L**d).
- `tpe`: Optuna's TPE, asked q trials at a time with `constant_liar=True` (the way Optuna is run
  in parallel), told after each batch. Log parameters use log distributions; a reverse_log
  parameter is given to TPE as 1 - value on a log scale, as an Optuna user would write it.

Every method returns the objective values in evaluation order (minimized).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.problems import Objective, Problem
from common.parameters import ChoiceParameter, FloatParameter, IntParameter, Scale
from common.space import SearchSpace
from common.study import StudySpec
from coordinator.sampling import sample
from coordinator.search import CoarseToFine

METHODS = ("coarse_to_fine", "random", "grid", "tpe")


def run(
    method: str,
    problem: Problem,
    objective: Objective,
    *,
    q: int,
    rounds: int,
    seed: int,
    search: Mapping[str, Any] | None = None,
) -> list[float]:
    """The values of the q x rounds trials `method` evaluates on `problem` (seeded)."""
    if method == "coarse_to_fine":
        return _coarse_to_fine(problem, objective, q, rounds, seed, search or {})
    if method == "random":
        rng = np.random.default_rng([seed, 1])
        return [objective(p) for p in sample(problem.space, q * rounds, rng, method="random")]
    if method == "grid":
        rng = np.random.default_rng([seed, 2])
        return [objective(p) for p in sample(problem.space, q * rounds, rng, method="grid")]
    if method == "tpe":
        return _tpe(problem, objective, q, rounds, seed)
    raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")


def study_spec(
    space: SearchSpace, q: int, rounds: int, seed: int, search: Mapping[str, Any]
) -> StudySpec:
    """A minimizing study over `space` with the `[search]` defaults, overridden by `search`."""
    return StudySpec.from_dict(
        {
            "study": {"name": "bench", "direction": "minimize", "seed": seed},
            "objective": {"name": "bench"},
            "search": {"rounds": rounds, "trials_per_round": q, **search},
            "space": space.to_dict(),
        }
    )


def _coarse_to_fine(
    problem: Problem,
    objective: Objective,
    q: int,
    rounds: int,
    seed: int,
    search: Mapping[str, Any],
) -> list[float]:
    tuner = CoarseToFine(study_spec(problem.space, q, rounds, seed, search))
    values: list[float] = []
    while batch := tuner.ask():
        scores = [objective(params) for params in batch]
        values.extend(scores)
        tuner.tell(list(zip(batch, scores, strict=True)))
    return values


def _tpe(problem: Problem, objective: Objective, q: int, rounds: int, seed: int) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    distributions = {param.name: optuna_distribution(param) for param in problem.space}
    values: list[float] = []
    for _ in range(rounds):
        trials = [study.ask(distributions) for _ in range(q)]
        for trial in trials:
            value = objective(from_optuna(problem.space, trial.params))
            values.append(value)
            study.tell(trial, value)
    return values


def optuna_distribution(param: Any) -> Any:
    """The Optuna distribution of a zoomtune parameter (reverse_log: 1 - value on a log scale)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(param, ChoiceParameter):
        return CategoricalDistribution(list(param.values))
    if isinstance(param, IntParameter):
        return IntDistribution(param.low, param.high, log=param.scale is Scale.LOG, step=param.step)
    if not isinstance(param, FloatParameter):
        raise TypeError(f"unexpected parameter {param!r}")
    if param.scale is Scale.REVERSE_LOG:
        return FloatDistribution(1 - param.high, 1 - param.low, log=True)
    return FloatDistribution(param.low, param.high, log=param.scale is Scale.LOG, step=param.step)


def from_optuna(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """An Optuna trial's params as zoomtune's (undoes the 1 - value of reverse_log ones);
    a parameter the trial did not suggest (inactive, define-by-run) stays absent."""
    out = dict(params)
    for param in space:
        if param.name not in params:
            continue
        if isinstance(param, FloatParameter) and param.scale is Scale.REVERSE_LOG:
            out[param.name] = 1 - float(params[param.name])
    return out
