"""ZoomSearchCV runs a scikit-learn search through zoomtune's coordinator and real workers: on a
cluster (a real redis-server and a `worker start --allow-sklearn-payloads` shared by the tests
of this module) and on the embedded default. It passes scikit-learn's estimator checks, beats
RandomizedSearchCV with the same number of fits, and shapes cv_results_ like it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from scipy.stats import loguniform
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import zoomtune.sklearn
from tests.harness import WorkerProcess
from tests.test_sklearn_payload import forged
from zoomtune.common.errors import SearchFailed
from zoomtune.common.redis_client import connect
from zoomtune.common.sklearn_payload import KEY_ENV, KEY_FILE_ENV, new_key
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.sklearn import ZoomSearchCV

pytestmark = [pytest.mark.redis, pytest.mark.slow]

KEY = new_key().hex()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server and one worker (2 processes) that loads payloads sealed with KEY."""
    folder = tmp_path_factory.mktemp("cluster")
    server = RedisServer(folder / "redis").start()
    worker = WorkerProcess(
        server.url,
        folder / "worker.log",
        concurrency=2,
        extra_args=["--allow-sklearn-payloads"],
        env={KEY_ENV: KEY, KEY_FILE_ENV: ""},
    )
    try:
        worker.start().wait_ready()
        yield server
    finally:
        worker.stop()
        server.kill()


@pytest.fixture
def on_cluster(cluster: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """Searches in this test run on the cluster (ZOOMTUNE_BROKER_URL), sealed with its key."""
    monkeypatch.setenv("ZOOMTUNE_BROKER_URL", cluster.url)
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    client = connect(cluster.url)
    yield client
    client.close()


@parametrize_with_checks(
    [
        ZoomSearchCV(
            LogisticRegression(), {"C": loguniform(1e-2, 1e2)}, rounds=1, trials_per_round=2, cv=2
        )
    ]
)
def test_scikit_learn_estimator_checks(
    on_cluster: redis.Redis, estimator: ZoomSearchCV, check: Any
) -> None:
    check(estimator)


def digits_subset() -> tuple[Any, Any]:
    x, y = load_digits(return_X_y=True)
    return x[:600], y[:600]


SVC_SPACE = {"C": loguniform(1e-2, 1e4), "gamma": loguniform(1e-6, 1e0)}
SEEDS = (0, 1, 2)


def test_it_beats_randomized_search_with_the_same_fits_and_shapes_results_alike(
    on_cluster: redis.Redis,
) -> None:
    # Given digits, an RBF SVC over a wide log space, and 3 x 6 candidates x 3 folds each
    x, y = digits_subset()
    zoom_scores, random_scores = [], []
    for seed in SEEDS:
        cv = StratifiedKFold(3, shuffle=True, random_state=seed)
        zoom = ZoomSearchCV(
            SVC(), SVC_SPACE, rounds=3, trials_per_round=6, cv=cv, random_state=seed
        ).fit(x, y)
        baseline = RandomizedSearchCV(SVC(), SVC_SPACE, n_iter=18, cv=cv, random_state=seed).fit(
            x, y
        )
        zoom_scores.append(zoom.best_score_)
        random_scores.append(baseline.best_score_)

        # cv_results_ has RandomizedSearchCV's keys, shapes and dtypes, plus the round
        ours, theirs = zoom.cv_results_, baseline.cv_results_
        assert set(ours) == set(theirs) | {"round"}
        for key, value in theirs.items():
            if key == "params":
                assert len(ours[key]) == len(value)
                assert all(set(p) == {"C", "gamma"} for p in ours[key])
                continue
            assert (type(ours[key]), ours[key].shape, ours[key].dtype) == (
                type(value),
                value.shape,
                value.dtype,
            ), key
        assert list(ours["round"]) == [1] * 6 + [2] * 6 + [3] * 6
        assert zoom.n_splits_ == baseline.n_splits_ == 3
        assert zoom.best_score_ == ours["mean_test_score"][zoom.best_index_]
        assert ours["rank_test_score"][zoom.best_index_] == 1
        assert zoom.refit_time_ > 0
        assert zoom.best_estimator_.get_params()["C"] == zoom.best_params_["C"]

    # Then its best cross-validated score is higher, on the median over the seeds
    assert statistics.median(zoom_scores) > statistics.median(random_scores), (
        zoom_scores,
        random_scores,
    )


def test_a_pipeline_searches_step_params_and_whole_steps(on_cluster: redis.Redis) -> None:
    x, y = load_iris(return_X_y=True)
    scaler = StandardScaler()
    pipeline = Pipeline([("scale", scaler), ("clf", LogisticRegression(max_iter=500))])
    space = {"clf__C": loguniform(1e-3, 1e2), "scale": [scaler, "passthrough"]}
    search = ZoomSearchCV(pipeline, space, rounds=2, trials_per_round=4, cv=3, random_state=0)
    search.fit(x, y)
    assert set(search.best_params_) == {"clf__C", "scale"}
    assert search.best_params_["scale"] in (scaler, "passthrough")
    assert set(search.cv_results_["param_scale"]) <= {scaler, "passthrough"}
    assert search.best_params_["clf__C"] == search.best_estimator_.named_steps["clf"].C
    assert search.score(x, y) > 0.8
    assert list(search.classes_) == [0, 1, 2]


def test_on_a_cluster_the_payload_is_in_redis_only_while_the_search_runs(
    on_cluster: redis.Redis,
) -> None:
    x, y = load_iris(return_X_y=True)
    search = ZoomSearchCV(
        LogisticRegression(max_iter=1000), {"C": loguniform(1e-2, 1e2)}, rounds=1, cv=2
    )
    search.fit(x, y, groups=None)
    prefix = f"zoomtune:{{{search.study_name_}}}:"
    assert not on_cluster.exists(f"{prefix}payload")
    # The study's record holds the trials' params as plain numbers, and where the payload was
    assert on_cluster.exists(f"{prefix}spec")
    spec = json.loads(on_cluster.get(f"{prefix}spec") or "{}")
    assert spec["objective"] == {"name": "sklearn-cv", "options": {"payload": "redis"}}
    params = json.loads(on_cluster.hget(f"{prefix}trial:0", "params") or "{}")
    assert list(params) == ["C"]
    assert isinstance(params["C"], float)


def test_a_forged_payload_runs_nothing_and_fails_the_search(
    on_cluster: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a coordinator whose payload was replaced by one sealed without the key, carrying a
    # pickle that would run a command on the worker when loaded
    marker = tmp_path / "pwned"
    monkeypatch.setattr(zoomtune.sklearn, "seal_payload", lambda *_: forged(marker))
    x, y = load_iris(return_X_y=True)
    search = ZoomSearchCV(
        LogisticRegression(max_iter=1000), {"C": loguniform(1e-2, 1e2)}, rounds=1, cv=2
    )

    # When it runs, every trial fails on the HMAC check, and the search says so
    with pytest.raises(SearchFailed, match="HMAC does not verify"):
        search.fit(x, y)
    assert not marker.exists()


def test_the_embedded_default_runs_a_search_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no broker anywhere: a private redis-server and local workers, in a temporary folder
    monkeypatch.delenv("ZOOMTUNE_BROKER_URL", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x, y = digits_subset()
    search = ZoomSearchCV(
        SVC(), SVC_SPACE, rounds=2, trials_per_round=4, cv=2, random_state=3, n_workers=2
    )
    search.fit(x, y)
    assert search.best_score_ > 0.8
    assert list(search.cv_results_["round"]) == [1] * 4 + [2] * 4
    assert np.isfinite(search.cv_results_["mean_fit_time"]).all()
    assert list(tmp_path.iterdir()) == []  # the run folder, its payload and its Redis are gone
    assert os.environ.get(KEY_ENV) is None  # the embedded key was never put in this process's env
