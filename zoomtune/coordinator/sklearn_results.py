"""`ZoomSearchCV.cv_results_`: the same keys, shapes and dtypes as scikit-learn's searches for
one metric without train scores (`mean_fit_time`, `std_fit_time`, `mean_score_time`,
`std_score_time`, `param_<name>` masked arrays, `params`, `split<i>_test_score`,
`mean_test_score`, `std_test_score`, `rank_test_score`), one row per trial in trial order, plus
`round` (the zoomtune round that sampled it). A trial that failed has NaN scores and times and
ranks last, as with scikit-learn's `error_score=np.nan`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.ma import MaskedArray
from scipy.stats import rankdata

from zoomtune.common.cv_reports import SplitResults


def _masked_params(candidates: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, MaskedArray]]:
    """One masked array per parameter, as scikit-learn builds them (object dtype for strings)."""
    by_name: dict[str, dict[int, Any]] = {}
    for index, params in enumerate(candidates):
        for name, value in params.items():
            by_name.setdefault(f"param_{name}", {})[index] = value
    for key, found in by_name.items():
        dtype: np.dtype[Any] = np.dtype(object)
        try:
            inferred = np.array(list(found.values()))
        except ValueError:
            pass  # lists of different lengths: object dtype
        else:
            if inferred.dtype.kind != "U" and inferred.ndim == 1:
                dtype = inferred.dtype
        column = MaskedArray(np.empty(len(candidates), dtype=dtype), mask=True)
        for index, value in found.items():
            column[index] = value
        yield key, column


def _ranks(means: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
    """Rank 1 is the best mean; NaN means tie with the worst, as in scikit-learn."""
    if np.isnan(means).all():
        return np.ones_like(means, dtype=np.int32)
    filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
    ranks: npt.NDArray[np.int32] = rankdata(-filled, method="min").astype(np.int32, copy=False)
    return ranks


def cv_results(
    candidates: Sequence[Mapping[str, Any]],
    rounds: Sequence[int],
    splits: Sequence[SplitResults],
    n_splits: int,
) -> dict[str, Any]:
    """The `cv_results_` dict of these candidates and their per-split results."""
    results: dict[str, Any] = {}

    def store(key: str, rows: list[tuple[float, ...]], per_split: bool = False) -> None:
        array = np.array(rows, dtype=np.float64).reshape(len(candidates), n_splits)
        if per_split:
            for i in range(n_splits):
                results[f"split{i}_{key}"] = array[:, i]
        means = array.mean(axis=1)
        results[f"mean_{key}"] = means
        results[f"std_{key}"] = np.sqrt(((array - means[:, np.newaxis]) ** 2).mean(axis=1))

    store("fit_time", [s.fit_times for s in splits])
    store("score_time", [s.score_times for s in splits])
    for key, column in _masked_params(candidates):
        results[key] = column
    results["params"] = [dict(c) for c in candidates]
    store("test_score", [s.test_scores for s in splits], per_split=True)
    means = results["mean_test_score"]
    if not np.isfinite(means).all():
        warnings.warn(f"One or more of the test scores are non-finite: {means}", stacklevel=3)
    results["rank_test_score"] = _ranks(means)
    results["round"] = np.array(rounds, dtype=np.int64)
    return results
