"""Which hyperparameters matter: permutation importance of a random forest fitted to the scores.

The forest learns score ~ parameters from the completed trials, with each parameter in its unit
coordinate (`common.space`: a learning rate in log10, a momentum as log(1 - beta), a choice by
its cell), so a parameter's importance does not depend on the units or scale it was given in.
Then each parameter's column is shuffled in turn and the drop in the forest's R^2 is measured
(scikit-learn's `permutation_importance`): a parameter the scores depend on costs a lot when
shuffled, one they ignore costs nothing. The drops are reported as shares of their total.

Scores are replaced by their ranks first, so that one diverged trial with a huge loss does not
decide what the forest fits. Coarse-to-fine sampling concentrates the later rounds in a small
box; the first round, sampled over the whole space, is what shows the forest the full effect of
a parameter, so importance is only as good as that round is large.

A conditional parameter that was inactive in a trial (absent from its params) gets the
coordinate -1 there, outside [0, 1]: the forest can split the trials where it applied from
those where it did not, and shuffling the column measures both what its value did where it
applied and which trials it applied in (that is, part of its parent choice's effect).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.parameters import ParamValue
from common.space import SearchSpace

MIN_TRIALS = 8
"""Fewer completed trials than this give no importance (a forest on 5 points is noise)."""


@dataclass(frozen=True)
class ParameterImportance:
    """One parameter's share of the total importance, and the spread over the shuffles."""

    name: str
    share: float
    """In [0, 1]; the shares of all parameters add up to 1 (or are all 0)."""
    spread: float
    """Standard deviation over the repeated shuffles, in the same units as `share`."""


def parameter_importance(
    space: SearchSpace,
    results: Sequence[tuple[Mapping[str, ParamValue], float]],
    *,
    seed: int = 0,
    trees: int = 32,
    repeats: int = 5,
) -> list[ParameterImportance]:
    """Importance of every parameter of `space`, most important first.

    `results` are (params, score) pairs of completed trials. Returns [] with fewer than
    `MIN_TRIALS` results. Deterministic for a given `seed`.
    """
    if len(results) < MIN_TRIALS:
        return []
    from scipy.stats import rankdata
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    x = np.array([space.to_unit(params) for params, _ in results], dtype=np.float64)
    y = rankdata([score for _, score in results]) / len(results)
    if np.ptp(y) == 0:
        return [ParameterImportance(name, 0.0, 0.0) for name in space.names]
    forest = RandomForestRegressor(
        n_estimators=trees, min_samples_leaf=2, random_state=seed, n_jobs=1
    ).fit(x, y)
    found = permutation_importance(forest, x, y, n_repeats=repeats, random_state=seed, n_jobs=1)
    drops = np.clip(found.importances_mean, 0.0, None)
    total = float(drops.sum())
    scale = 1.0 / total if total > 0 else 0.0
    ranked = [
        ParameterImportance(name, float(drop * scale), float(spread * scale))
        for name, drop, spread in zip(space.names, drops, found.importances_std, strict=True)
    ]
    # Most important first; equal shares keep the space's (alphabetical) order.
    return sorted(ranked, key=lambda item: -item.share)
