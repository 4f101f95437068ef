"""The plan of a study, worked out from its file alone: what `coordinator plan` shows.

A dry run: it validates the study file exactly as `coordinator start` does, then lays out the
rounds (how many trials each samples in the narrowed box and how many over the whole space),
the total budget, the early-stopping rule and where its rungs can be, the first round's trials
(which depend only on the seed, so they are the trials `start` will send), and, when the
objective has a `duration` option (seconds per trial), the worker time the study will take. It
never connects to a broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from zoomtune.common.objectives import builtin_last_step
from zoomtune.common.parameters import ParamValue
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.pruning import halving_steps
from zoomtune.coordinator.search import CoarseToFine, explore_count
from zoomtune.coordinator.speculation import DEPTH


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
    last_step: int | None = None
    """The last step the objective reports, when known up front: a built-in on the embedded
    default (0: it reports none). None where only the trials will tell (an objective of the
    user's own, or one a cluster's workers may register under a built-in's name)."""

    @classmethod
    def from_spec(cls, spec: StudySpec, embedded: bool = False) -> StudyPlan:
        search = spec.search
        layout = CoarseToFine(spec)
        rounds = tuple(
            RoundPlan(
                number=r,
                trials=n,
                # Round 1, and a round that `lag` leaves no trial to narrow from, sample the
                # whole space.
                whole_space=n if not layout.reference(r) else explore_count(search.explore, n, r),
            )
            for r, n in enumerate(search.trials_per_round, start=1)
        )
        return cls(
            spec=spec,
            rounds=rounds,
            first_round=tuple(CoarseToFine(spec).ask()),
            trial_seconds=_duration_option(spec.objective.options),
            last_step=builtin_last_step(spec.objective) if embedded else None,
        )

    def overlap_line(self) -> str:
        """When a round goes out: after every earlier trial, or before (`lag`, `speculate`)."""
        search = self.spec.search
        if search.lag > 0:
            waits = (
                f"rolling rounds (lag {search.lag}): a round is narrowed from, and waits for, "
                f"every earlier trial but the last {search.lag} before it"
            )
        else:
            waits = "a round is narrowed from, and waits for, every earlier trial (lag 0)"
        if search.speculate:
            return (
                f"{waits}; meanwhile idle slots run up to {DEPTH} rounds ahead on a guess "
                "(speculate), and trials that come out different are run again"
            )
        return f"{waits}; no round runs ahead (speculate = false)"

    def early_stopping_lines(self) -> list[str]:
        """The early-stopping rule and where its rungs can be; their thresholds (and which
        rungs pass the safety check) are known only once results exist."""
        rule, objective, last = self.spec.early_stopping, self.spec.objective, self.last_step
        if not rule.enabled:
            return ["early stopping: none (every trial runs to its end)"]
        if last == 0:
            return [
                f"early stopping: {rule.rule}, but the built-in objective {objective.name!r} "
                "reports no steps: no trial is stopped early"
            ]
        if last == 1:
            return [
                f"early stopping: {rule.rule}, but no rung: {objective.name!r} reports one step "
                "(a single epoch), and a rung must come before the last"
            ]
        if last is not None and max(1, rule.min_step) >= last:
            return [
                f"early stopping: {rule.rule}, but no rung: min_step {rule.min_step} is not "
                f"before step {last}, the last that {objective.name!r} reports"
            ]
        if rule.rule == "halving":
            if last is None:
                steps = halving_steps(rule, below=max(1, rule.min_step) * rule.reduction_factor**5)
                rungs = f"{', '.join(map(str, steps))}, ... below the last step the trials report"
            else:
                steps = halving_steps(rule, below=last)
                rungs = f"{', '.join(map(str, steps))} (before {last}, the last step it reports)"
            where = (
                f"halving (reduction_factor {rule.reduction_factor}): rungs at steps {rungs}, "
                f"each keeping the top 1/{rule.reduction_factor}"
            )
        else:
            where = (
                f"median: a rung at every reported step from {rule.min_step} on, each keeping "
                "the trials at least as good as the median"
            )
        return [
            f"early stopping: {where}",
            "  the thresholds are known only once results exist: round 1 is never pruned; each "
            "later round's rungs come from the curves of the rounds before it, and a rung is "
            f"used only where at least {rule.min_trials} completed trials show that its ranking "
            "predicts the final one; only objectives that call trial.should_prune() are pruned",
        ]

    @property
    def total_trials(self) -> int:
        return sum(r.trials for r in self.rounds)

    def worker_seconds(self) -> float | None:
        """Seconds of worker time for every trial, or None without a `duration` option."""
        if self.trial_seconds is None:
            return None
        return self.total_trials * self.trial_seconds

    @property
    def rounds_overlap(self) -> bool:
        """Whether a round can start before the one before it has finished (speculation or
        rolling rounds), rather than wait for its last trial."""
        search = self.spec.search
        return search.speculate or search.lag > 0

    def wall_seconds(self, workers: int) -> float | None:
        """Seconds the study takes on `workers` worker processes, at best: when each round
        waits for its last trial, a round of n trials takes ceil(n / workers) trial durations;
        when rounds overlap, all N trials take ceil(N / workers), but no fewer than one per
        round (a round is made final only once the one before it has finished)."""
        if self.trial_seconds is None:
            return None
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if self.rounds_overlap:
            waves = max(math.ceil(self.total_trials / workers), len(self.rounds))
            return waves * self.trial_seconds
        waves = sum(math.ceil(r.trials / workers) for r in self.rounds)
        return waves * self.trial_seconds


def _duration_option(options: Mapping[str, object]) -> float | None:
    value = options.get("duration")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
