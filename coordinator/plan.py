"""The plan of a study, worked out from its file alone: what `coordinator plan` shows.

A dry run: it validates the study file exactly as `coordinator start` does, then lays out the
rounds (how many trials each samples in the narrowed box and how many over the whole space),
the total budget, the first round's trials (which depend only on the seed, so they are the
trials `start` will send), and, when the objective has a `duration` option (seconds per trial),
the worker time the study will take. It never connects to a broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from common.space import ParamValue
from common.study import StudySpec
from coordinator.search import CoarseToFine, explore_count


@dataclass(frozen=True)
class RoundPlan:
    number: int
    trials: int
    whole_space: int
    """Trials sampled over the whole space (all of round 1, the `explore` share later)."""

    @property
    def in_box(self) -> int:
        """Trials sampled inside the box narrowed around the best trials so far."""
        return self.trials - self.whole_space


@dataclass(frozen=True)
class StudyPlan:
    spec: StudySpec
    rounds: tuple[RoundPlan, ...]
    first_round: tuple[Mapping[str, ParamValue], ...]
    trial_seconds: float | None
    """The objective's `duration` option, when it has a valid one."""

    @classmethod
    def from_spec(cls, spec: StudySpec) -> StudyPlan:
        search = spec.search
        rounds = tuple(
            RoundPlan(
                number=r,
                trials=n,
                whole_space=n if r == 1 else explore_count(search.explore, n, r),
            )
            for r, n in enumerate(search.trials_per_round, start=1)
        )
        return cls(
            spec=spec,
            rounds=rounds,
            first_round=tuple(CoarseToFine(spec).ask()),
            trial_seconds=_duration_option(spec.objective.options),
        )

    @property
    def total_trials(self) -> int:
        return sum(r.trials for r in self.rounds)

    def worker_seconds(self) -> float | None:
        """Seconds of worker time for every trial, or None without a `duration` option."""
        if self.trial_seconds is None:
            return None
        return self.total_trials * self.trial_seconds

    def wall_seconds(self, workers: int) -> float | None:
        """Seconds the study takes on `workers` worker processes, at best: each round waits
        for its last trial, so a round of n trials takes ceil(n / workers) trial durations."""
        if self.trial_seconds is None:
            return None
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        waves = sum(math.ceil(r.trials / workers) for r in self.rounds)
        return waves * self.trial_seconds


def _duration_option(options: Mapping[str, object]) -> float | None:
    value = options.get("duration")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
