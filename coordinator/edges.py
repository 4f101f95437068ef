"""Edge warnings: the best trials sit at a bound of a parameter's range, so it may be too small.

Coarse to fine never leaves the ORIGINAL range of a parameter. When the optimum lies outside
it, the box slides to the bound and the best trials pile up there: the study cannot find the
better values, and says so instead of reporting a best value that is only the bound.

A numeric parameter is "at an edge" when

- it matters: its importance share (`coordinator.importance`) is at least half the average
  share, 1 / (2 d) for d parameters. A parameter the scores ignore has its best trials
  anywhere, at a bound as often as not (an int with three values: one time in three);
- among the top-k trials of the last round with completed trials, the best lies within
  `EDGE_TOLERANCE` of the bound and more than half lie within twice that, in unit coordinates
  (so a learning rate on a log scale is judged in decades). A value equal to the bound always
  counts. The best trial alone could sit there by chance; most of the top-k with it means the
  scores improve towards the bound.

k is the study's `top_k` setting applied to that round's completed trials (for a conditional
parameter, to those in which it was active, and its top-k are among them). Choice parameters
have no edges. Without an importance ranking (fewer than 8 completed trials) nothing is said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.parameters import ChoiceParameter, NumericParameter
from common.study import StudySpec
from common.trial import Trial, TrialStatus
from coordinator.importance import ParameterImportance
from coordinator.narrowing import resolve_k, top_k

EDGE_TOLERANCE = 0.1
"""How close to a bound, as a share of the whole range in unit coordinates, counts as at it."""


@dataclass(frozen=True)
class EdgeWarning:
    name: str
    side: str  # "lower" or "upper"
    bound: float | int

    @property
    def message(self) -> str:
        return (
            f"{self.name}: the best trials are at the {self.side} edge {self.bound:g} of its "
            "range; consider widening it"
        )


def edge_warnings(
    spec: StudySpec, trials: Sequence[Trial], importance: Sequence[ParameterImportance]
) -> list[EdgeWarning]:
    """The parameters that matter whose best last-round trials sit at a bound, in space order."""
    complete = [t for t in trials if t.status is TrialStatus.COMPLETE and t.score is not None]
    if not complete or not importance:
        return []
    shares = {item.name: item.share for item in importance}
    floor = 1 / (2 * len(spec.space))
    last = max(t.round for t in complete)
    in_last = [(t.params, t.score) for t in complete if t.round == last]
    warnings = []
    for param in spec.space:
        if isinstance(param, ChoiceParameter) or param.low == param.high:
            continue
        if shares.get(param.name, 0.0) < floor:
            continue
        # A conditional parameter is judged on the trials in which it was active.
        active = [(params, score) for params, score in in_last if param.name in params]
        best = top_k(active, resolve_k(spec.search.top_k, len(active)), spec.maximize)
        if not best:
            continue
        values = [params[param.name] for params, _ in best]
        for side, bound, unit in (("lower", param.low, 0.0), ("upper", param.high, 1.0)):
            near = [_near(param, value, bound, unit, EDGE_TOLERANCE) for value in values]
            close = [_near(param, value, bound, unit, 2 * EDGE_TOLERANCE) for value in values]
            if near[0] and 2 * sum(close) > len(close):
                warnings.append(EdgeWarning(param.name, side, bound))
    return warnings


def _near(
    param: NumericParameter, value: object, bound: float, unit_bound: float, tolerance: float
) -> bool:
    if value == bound:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(param.to_unit(value) - unit_bound) <= tolerance
