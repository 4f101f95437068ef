"""Early stopping: the rungs of a round, computed from the learning curves of earlier trials.

A rung is a step and a threshold (`zoomtune.common.trial.Rung`): a trial whose value at that step is
worse than the threshold is pruned there. Every rung of a round is computed here, before the
round is written, from a fixed set of *reference* trials that are terminal at that moment (with
the round barrier: every trial of the earlier rounds). So the rungs are a function of the seed,
they travel in each trial's message, and `trial.should_prune()` decides without asking Redis:
the pruned set is the same with 1 worker or 40, in any finish order.

The rules (`[early_stopping] rule`):

- "halving" (successive halving, as Optuna's SuccessiveHalvingPruner and ASHA): rungs at steps
  b, b*eta, b*eta**2, ... with b = max(1, min_step) and eta = reduction_factor; the threshold
  keeps the top max(1, n // eta) of the n recent reference values at that step, tightened where
  the ranking is exact (both below).
- "median" (Optuna's MedianPruner): a rung at every step >= min_step that a reference trial
  reported at; the threshold is the median of all the reference values there.

Neither puts a rung at the last step the reference reached: stopping there saves nothing and
would throw a finished result away.

The reference values at a step are those of the COMPLETE and PRUNED reference trials that
reached it (PRUNED ones only up to where they stopped, so later rungs rank the survivors of
earlier ones, as successive halving does). FAILED trials are left out: where a failure's curve
stops can depend on timing (a worker lost at a random step), and the rungs must not.

Halving, recent values only: a threshold comes from the RECENT_TRIALS latest of those trials
(by trial number), not from all of them. Later rounds sample a narrowed box, so their trials
beat most of the older reference (round 1's random trials above all), and a threshold from the
whole reference lets nearly all of them through. Rung steps and the safety check below still use
every reference trial. (The median rule keeps every reference trial and is never tightened:
with both, on crossing curves at 8x12 its median best fell 0.011 below the study without early
stopping, in 5 of 7 seeds more than 0.003; with recent values alone it pruned a winner.)

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

Halving, tightened where the ranking is near exact. Thresholds that keep 1/eta of the recent
reference still let most of a later round through (its box is narrower than theirs, its trials
better). So a rung that passed the safety check is tightened to keep only the trials that would
rank in the top STRICT_KEEP of the recent reference values at its step, where the recent
COMPLETE reference trials that reached the step (the RECENT_TRIALS latest of them, whatever
trials came after) show that the ranking at that step is the final one: at least
`min_trials` of them, their Spearman rho at least STRICT_RANK_CORRELATION, and the tightened
rung keeps their STRICT_KEEP best by final score and the best COMPLETE reference trial of all.
On predictive curves that prunes most of a later round early (a trial that will beat the recent
best still passes every rung); on crossing curves the rho of early steps stays lower and the
rungs stay as they are. "The latest COMPLETE ones", not the COMPLETE ones among the
RECENT_TRIALS latest: after a round that pruned well, those are mostly PRUNED, too few COMPLETE
ones are left to judge the ranking, and the next round's rungs stay loose and let it pass. (Taking
the threshold values, too, from the latest trials that reached the step saved no more on
predictive curves and pruned winners on crossing curves: old trials from wider boxes then set
later rungs that the latest trials alone did not support.)

Rung steps and thresholds depend only on the set of reference curves, not on their order.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

from zoomtune.common.study_settings import EarlyStopping
from zoomtune.common.trial import MAX_RUNGS, Rung, Trial, TrialStatus, sorted_curve, value_at

MIN_RANK_CORRELATION = 0.5
"""Spearman's rho between the value at a rung and the final score, over the completed reference
trials, below which a rung is not used. Chosen on the two curve kinds of tests/test_pruning.py
(8 to 32 reference trials, noise 0.01): on predictive curves the median rho is 0.82 at the first
step and 0.95 by step 9 (10th percentile 0.6 at step 1 with 8 trials); on crossing curves it is
negative (-0.5 to -0.7) until the curves have crossed."""

RECENT_TRIALS = 32
"""The thresholds come from this many latest COMPLETE or PRUNED reference trials (by number).
Measured with `python -m bench.pruning_sim` (synthetic-training, halving, 11 seeds, before the
tightening below): at lag 0 the median share of epochs run on predictive curves fell from
83% / 79% / 80% (16x6 / 8x12 / 32x3, thresholds from every reference trial) to 67% / 68% / 73%,
the median best within 0.0004 of the study without early stopping, and on crossing curves no
pruned trial would have ended better than the best (7 did at 8x12 with every reference trial).
16 or 24 trials saved a few points more but pruned such a winner on crossing curves; 48 saved
less."""

STRICT_RANK_CORRELATION = 0.95
"""Spearman's rho, over the recent COMPLETE reference trials, from which a rung is tightened to
STRICT_KEEP (see the module's doc)."""

STRICT_KEEP = 2
"""A tightened rung keeps the trials that would rank in the top STRICT_KEEP of the recent
reference values at its step. Measured with `python -m bench.pruning_sim` (11 seeds, predictive
curves, lag 0): 45% / 45% / 54% of the epochs (16x6 / 8x12 / 32x3) against 67% / 68% / 73%
untightened; 1 lost the best more often (7 of 11 seeds over 0.002 at 8x12), 3 or 4 saved less.
A rho of 0.8 let rungs be tightened on crossing curves and prune trials that would have ended
best; 0.9 and 0.95 gave the same savings on predictive curves. Since the tightening looks at
the latest COMPLETE trials that reached the step (before, the COMPLETE ones among the latest
trials): 40% / 45% / 49% at lag 0 and 57% / 63% / 56% at lag 16 (60% / 63% / 56% before), the
best and the crossing curves' figures exactly as before (also over 22 seeds)."""


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
        return cls(trial.number, trial.status, steps, values, trial.completed_score)

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
    halving = early_stopping.rule == "halving"
    recent = curves[-RECENT_TRIALS:] if halving else curves
    rungs: list[Rung] = []
    for step in rung_steps(early_stopping, (s for c in curves for s in c.steps)):
        values = [v for v in (c.at(step) for c in recent) if v is not None]
        if not values:  # no recent trial got this far: no threshold to compare with
            continue
        rung = Rung(step, _threshold(early_stopping, values, maximize))
        if not _predicts_final_ranking(early_stopping, rung, curves, maximize):
            continue
        if halving:
            complete = [c for c in curves if c.is_complete and c.at(step) is not None]
            complete = complete[-RECENT_TRIALS:]
            rung = _tightened(early_stopping, rung, values, complete, curves, maximize)
        rungs.append(rung)
    return tuple(rungs)


def _tightened(
    early_stopping: EarlyStopping,
    rung: Rung,
    values: Sequence[float],
    complete: Sequence[ReferenceCurve],
    curves: Sequence[ReferenceCurve],
    maximize: bool,
) -> Rung:
    """The rung at the threshold of the STRICT_KEEP-th best recent value `values`, where the
    recent COMPLETE trials `complete` (those that reached the step) rank at the step almost
    exactly as at the end, and it keeps their STRICT_KEEP best and the best of all `curves`
    (see the module's doc); else `rung` unchanged."""
    best_first = sorted(values, reverse=maximize)
    strict = Rung(rung.step, float(best_first[min(STRICT_KEEP, len(best_first)) - 1]))
    if strict == rung or not rung.keeps(strict.threshold, maximize):
        return rung  # already as strict
    every = [(c, v) for c in curves if c.is_complete and (v := c.at(rung.step)) is not None]
    recent = [(c, float(c.at(rung.step) or 0.0)) for c in complete]
    if len(recent) < early_stopping.min_trials:
        return rung
    if _rank_correlation(recent) < STRICT_RANK_CORRELATION:
        return rung
    leaders = _by_final(recent, maximize)[:STRICT_KEEP] + _by_final(every, maximize)[:1]
    return strict if all(strict.keeps(value, maximize) for _, value in leaders) else rung


def _rank_correlation(complete: Sequence[tuple[ReferenceCurve, float]]) -> float:
    """Spearman's rho between the values at a step and the final scores (-1 when undefined)."""
    at_step = [value for _, value in complete]
    final = [float(c.score or 0.0) for c, _ in complete]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input gives NaN, with a warning
        rho = float(stats.spearmanr(at_step, final).statistic)
    return rho if math.isfinite(rho) else -1.0


def _by_final(
    complete: Sequence[tuple[ReferenceCurve, float]], maximize: bool
) -> list[tuple[ReferenceCurve, float]]:
    """Best final score first (ties: the lower trial number first)."""
    sign = -1.0 if maximize else 1.0
    return sorted(complete, key=lambda pair: (sign * float(pair[0].score or 0.0), pair[0].trial))


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
    if _rank_correlation(complete) < MIN_RANK_CORRELATION:
        return False
    ranked = _by_final(complete, maximize)
    leaders = math.ceil(len(complete) * kept_share(early_stopping) ** 2)
    return all(rung.keeps(value, maximize) for _, value in ranked[:leaders])


__all__ = [
    "MIN_RANK_CORRELATION",
    "RECENT_TRIALS",
    "STRICT_KEEP",
    "STRICT_RANK_CORRELATION",
    "ReferenceCurve",
    "Rung",
    "halving_steps",
    "kept_share",
    "rung_steps",
    "rungs_for",
]
