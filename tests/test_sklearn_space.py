"""ZoomSearchCV's param_distributions become zoomtune's space with the right scale, and its
cv_results_ rank and shape like scikit-learn's (no Redis, no workers)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import loguniform, norm, randint, uniform
from sklearn.preprocessing import StandardScaler

from zoomtune.common.cv_reports import SplitResults
from zoomtune.common.errors import SearchParameterError
from zoomtune.common.parameters import FloatParameter
from zoomtune.coordinator.sklearn_results import cv_results
from zoomtune.coordinator.sklearn_space import map_distributions


@pytest.mark.parametrize(
    ("given", "entry"),
    [
        (loguniform(1e-3, 1e2), {"type": "float", "low": 1e-3, "high": 1e2, "scale": "log"}),
        (uniform(0.1, 0.5), {"type": "float", "low": 0.1, "high": 0.6, "scale": "linear"}),
        (randint(2, 10), {"type": "int", "low": 2, "high": 9, "scale": "linear"}),  # high excl.
        (["rbf", "poly"], {"type": "choice", "values": ["rbf", "poly"]}),
        ([1, 2, 4], {"type": "choice", "values": [1, 2, 4]}),
        (np.array([0.5, 1.5]), {"type": "choice", "values": [0.5, 1.5]}),
        (
            {"type": "float", "low": 0.9, "high": 0.999, "scale": "reverse_log"},
            {"type": "float", "low": 0.9, "high": 0.999, "scale": "reverse_log"},
        ),
        (
            FloatParameter("ignored", 1e-4, 1e-1, "log"),
            {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        ),
    ],
)
def test_each_kind_of_distribution_maps_to_its_zoomtune_parameter(
    given: Any, entry: dict[str, Any]
) -> None:
    mapped = map_distributions({"clf__x": given})
    found = dict(mapped.space["clf__x"])
    assert found.keys() == entry.keys()
    for key, value in entry.items():
        assert found[key] == (pytest.approx(value) if isinstance(value, float) else value)
    assert mapped.choices == {}


def test_choices_that_are_not_json_scalars_are_sampled_by_index_and_decoded() -> None:
    scaler = StandardScaler()
    mapped = map_distributions({"scale": [scaler, None, "passthrough"]})
    assert mapped.space["scale"] == {"type": "choice", "values": [0, 1, 2]}
    assert mapped.decode({"scale": 0})["scale"] is scaler
    assert mapped.decode({"scale": 1})["scale"] is None


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"x": norm(0, 1)}, r"param_distributions\['x'\]: scipy.stats.norm is not supported"),
        ({"x": loguniform(1, 10, loc=5)}, "shifted or scaled"),
        ({"x": []}, "empty list"),
        ({"x": "rbf"}, "expected a scipy.stats distribution"),
        ({}, "is empty"),
        ([{"x": [1, 2]}], "several subspaces are not supported"),
    ],
)
def test_what_cannot_be_narrowed_is_refused_naming_the_parameter(given: Any, problem: str) -> None:
    with pytest.raises(SearchParameterError, match=problem):
        map_distributions(given)
    with pytest.raises(ValueError, match=problem):  # what scikit-learn users expect
        map_distributions(given)


def test_cv_results_rank_failed_candidates_last_and_keep_each_round() -> None:
    nan = float("nan")
    splits = [
        SplitResults((0.8, 0.6), (0.1, 0.3), (0.01, 0.01)),
        SplitResults((nan, nan), (nan, nan), (nan, nan)),  # failed
        SplitResults((0.9, 0.9), (0.2, 0.2), (0.02, 0.02)),
    ]
    candidates = [{"C": 1.0, "kernel": "rbf"}, {"C": 2.0, "kernel": "rbf"}, {"C": 3.0}]
    with pytest.warns(UserWarning, match="non-finite"):
        results = cv_results(candidates, [1, 1, 2], splits, 2)
    assert list(results["rank_test_score"]) == [2, 3, 1]
    assert results["mean_test_score"][0] == pytest.approx(0.7)
    assert results["std_test_score"][0] == pytest.approx(0.1)
    assert results["mean_fit_time"][0] == pytest.approx(0.2)
    assert list(results["split1_test_score"][[0, 2]]) == [0.6, 0.9]
    assert list(results["round"]) == [1, 1, 2]
    assert results["param_C"].dtype == np.float64
    assert results["param_kernel"].dtype == object
    assert list(results["param_kernel"].mask) == [False, False, True]
