"""Early stopping: the rungs of a round, computed from the learning curves of earlier trials.

A rung is a step and a threshold (`common.trial.Rung`): a trial whose value at that step is
worse than the threshold is pruned there. Every rung of a round is computed here, before the
round is written, from a fixed set of *reference* trials that are terminal at that moment (with
the round barrier: every trial of the earlier rounds). So the rungs are a function of the seed,
they travel in each trial's message, and `trial.should_prune()` decides without asking Redis:
the pruned set is the same with 1 worker or 40, in any finish order.

The rules (`[early_stopping] rule`):

- "halving" (successive halving, as Optuna's SuccessiveHalvingPruner and ASHA): rungs at steps
  b, b*eta, b*eta**2, ... with b = max(1, min_step) and eta = reduction_factor; the threshold
  keeps the top max(1, n // eta) of the n reference values at that step.
- "median" (Optuna's MedianPruner): a rung at every step >= min_step that a reference trial
  reported at; the threshold is the median of the reference values there.

Neither puts a rung at the last step the reference reached: stopping there saves nothing and
would throw a finished result away.

The reference values at a step are those of the COMPLETE and PRUNED reference trials that
reached it (PRUNED ones only up to where they stopped, so later rungs rank the survivors of
earlier ones, as successive halving does). FAILED trials are left out: where a failure's curve
stops can depend on timing (a worker lost at a random step), and the rungs must not.

The safety check (short-horizon bias). In real training, large learning rates often rise sooner
and end lower, so an early ranking can invert later, and a pruner that trusts it kills the
eventual winner. A rung is therefore kept only where the study's own COMPLETE reference trials
show that its ranking predicts the final one:

1. at least `min_trials` COMPLETE reference trials reached the step;
2. their Spearman rank correlation between the value at the step and the final score is at
   least MIN_RANK_CORRELATION;
3. the rung would have kept the leaders: the best ceil(n * share**2) of those n trials by final
   score, where share is the part the rung keeps (1/eta for halving, 1/2 for median). share**2
   is what two such cuts in a row keep: the best of the survivors must survive even where the
   ranking of the middle is noisy. It always includes the best trial, and it is never more
   than the rung keeps, so a perfectly predictive curve always passes.

Rung steps and thresholds depend only on the set of reference curves, not on their order.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

from common.study_settings import EarlyStopping
from common.trial import MAX_RUNGS, Rung, Trial, TrialStatus, sorted_curve, value_at

MIN_RANK_CORRELATION = 0.5
"""Spearman's rho between the value at a rung and the final score, over the completed reference
trials, below which a rung is not used. Chosen on the two curve kinds of tests/test_pruning.py
(8 to 32 reference trials, noise 0.01): on predictive curves the median rho is 0.82 at the first
step and 0.95 by step 9 (10th percentile 0.6 at step 1 with 8 trials); on crossing curves it is
negative (-0.5 to -0.7) until the curves have crossed."""


@dataclass(frozen=True)
class ReferenceCurve:
    """A reference trial's learning curve: the values it reported by step (ascending; the last
    value reported at each step), its status, and its final score when COMPLETE."""

    trial: int
    status: TrialStatus
    steps: tuple[int, ...]
    values: tuple[float, ...]
    score: float | None = None

    @classmethod
    def of(cls, trial: Trial, reports: Iterable[tuple[int, float]]) -> ReferenceCurve:
        """The curve of a stored trial from its reports, in the order they were made."""
        steps, values = sorted_curve(reports)
        score = trial.score if trial.status is TrialStatus.COMPLETE else None
        return cls(trial.number, trial.status, steps, values, score)

    def at(self, step: int) -> float | None:
        return value_at(self.steps, self.values, step)

    @property
    def is_complete(self) -> bool:
        return (
            self.status is TrialStatus.COMPLETE
            and self.score is not None
            and math.isfinite(self.score)
        )


def rung_steps(early_stopping: EarlyStopping, reported: Iterable[int]) -> list[int]:
    """The steps that may carry a rung, given the steps the reference reported at."""
    reported = sorted(set(reported))
    if early_stopping.rule == "none" or not reported:
        return []
    last = reported[-1]
    if early_stopping.rule == "median":
        steps = [s for s in reported if early_stopping.min_step <= s < last]
        stride = math.ceil(len(steps) / MAX_RUNGS) if steps else 1
        return steps[::stride]
    return halving_steps(early_stopping, below=last)


def halving_steps(early_stopping: EarlyStopping, below: int) -> list[int]:
    """Successive halving's rung steps below step `below`: b, b*eta, b*eta**2, ..."""
    steps: list[int] = []
    step = max(1, early_stopping.min_step)
    while step < below and len(steps) < MAX_RUNGS:
        steps.append(step)
        step *= early_stopping.reduction_factor
    return steps


def rungs_for(
    early_stopping: EarlyStopping, reference: Iterable[ReferenceCurve], maximize: bool
) -> tuple[Rung, ...]:
    """The rungs of a round whose reference trials are `reference` (see the module's doc)."""
    if not early_stopping.enabled:
        return ()
    curves = sorted(
        (c for c in reference if c.status in (TrialStatus.COMPLETE, TrialStatus.PRUNED)),
        key=lambda c: c.trial,
    )
    rungs: list[Rung] = []
    for step in rung_steps(early_stopping, (s for c in curves for s in c.steps)):
        values = [v for v in (c.at(step) for c in curves) if v is not None]
        threshold = _threshold(early_stopping, values, maximize)
        rung = Rung(step, threshold)
        if _predicts_final_ranking(early_stopping, rung, curves, maximize):
            rungs.append(rung)
    return tuple(rungs)


def kept_share(early_stopping: EarlyStopping) -> float:
    """The part of the trials at a rung that the rule keeps."""
    return 0.5 if early_stopping.rule == "median" else 1.0 / early_stopping.reduction_factor


def _threshold(early_stopping: EarlyStopping, values: Sequence[float], maximize: bool) -> float:
    if early_stopping.rule == "median":
        return float(statistics.median(values))
    best_first = sorted(values, reverse=maximize)
    kept = max(1, len(values) // early_stopping.reduction_factor)
    return float(best_first[kept - 1])


def _predicts_final_ranking(
    early_stopping: EarlyStopping, rung: Rung, curves: Sequence[ReferenceCurve], maximize: bool
) -> bool:
    """The safety check: on the completed reference trials, does the rung's ranking predict
    the final one, and would the rung have kept the leaders?"""
    complete = [
        (c, value) for c in curves if c.is_complete and (value := c.at(rung.step)) is not None
    ]
    if len(complete) < early_stopping.min_trials:
        return False
    at_rung = [value for _, value in complete]
    final = [float(c.score or 0.0) for c, _ in complete]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input gives NaN, with a warning
        rho = float(stats.spearmanr(at_rung, final).statistic)
    if not math.isfinite(rho) or rho < MIN_RANK_CORRELATION:
        return False
    sign = -1.0 if maximize else 1.0
    ranked = sorted(complete, key=lambda pair: (sign * float(pair[0].score or 0.0), pair[0].trial))
    leaders = math.ceil(len(complete) * kept_share(early_stopping) ** 2)
    return all(rung.keeps(value, maximize) for _, value in ranked[:leaders])


__all__ = [
    "MIN_RANK_CORRELATION",
    "ReferenceCurve",
    "Rung",
    "halving_steps",
    "kept_share",
    "rung_steps",
    "rungs_for",
]
