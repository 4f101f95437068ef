"""How the `sklearn-cv` objective hands back each split's score and times: as the trial's
reported values (`trial.report(step, value)`), the one per-trial record of numbers the store
already keeps, fenced by attempt like every other report. No new field in the store.

Split i (from 0) reports its test score at step `TEST_STEP + i`, its fit time in seconds at
`FIT_TIME_STEP + i` and its scoring time at `SCORE_TIME_STEP + i`. The trial's score is the mean
test score. The search runs with early stopping off, so no report prunes a trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from zoomtune.common.trial import sorted_curve

TEST_STEP = 0
FIT_TIME_STEP = 1_000_000
SCORE_TIME_STEP = 2_000_000
MAX_SPLITS = FIT_TIME_STEP
"""At most this many CV splits (their steps would overlap beyond it)."""


@dataclass(frozen=True)
class SplitResults:
    """One trial's per-split test scores, fit times and score times (NaN where missing)."""

    test_scores: tuple[float, ...]
    fit_times: tuple[float, ...]
    score_times: tuple[float, ...]


def split_results(reports: Iterable[tuple[int, float]], n_splits: int) -> SplitResults:
    """Decode a trial's reports (its last attempt's value counts at each step)."""
    steps, values = sorted_curve(reports)
    found = dict(zip(steps, values, strict=True))

    def column(base: int) -> tuple[float, ...]:
        return tuple(found.get(base + i, math.nan) for i in range(n_splits))

    return SplitResults(column(TEST_STEP), column(FIT_TIME_STEP), column(SCORE_TIME_STEP))
