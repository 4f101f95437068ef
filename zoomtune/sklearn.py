"""`ZoomSearchCV`: a scikit-learn search that samples coarse to fine through zoomtune.

```python
from scipy.stats import loguniform
from sklearn.svm import SVC
from zoomtune.sklearn import ZoomSearchCV

search = ZoomSearchCV(SVC(), {"C": loguniform(1e-2, 1e3), "gamma": loguniform(1e-5, 1e-1)},
                      rounds=4, trials_per_round=16, cv=5, random_state=0).fit(X, y)
search.best_params_, search.best_score_, search.cv_results_["round"]
```

Each candidate is one zoomtune trial, cross-validated on a worker by the `sklearn-cv` objective;
each round narrows the box around the best candidates so far (`zoomtune.coordinator.search`). The
fit runs a study through the same coordinator code as `coordinator start`
(`zoomtune.coordinator.launch`):

- without a broker (`broker_url=None` and no `ZOOMTUNE_BROKER_URL`): the embedded default, a
  private redis-server and `n_workers` local `worker start --allow-sklearn-payloads` processes
  in a temporary run folder, removed afterwards;
- with one: a cluster, whose workers run `worker start --allow-sklearn-payloads` with the same
  payload key as this process (`ZOOMTUNE_PAYLOAD_KEY` or `ZOOMTUNE_PAYLOAD_KEY_FILE`).

The estimator, X, y, the splits and the scorer travel as one sealed payload per study, never in
a task message (`zoomtune.common.sklearn_payload`): a file of mode 0600 in the run folder signed
with a key made for this fit (embedded), or the study's `payload` key in Redis signed with the
cluster's key, deleted when the fit ends. Messages still carry the trial's params only.

The refit on the best params runs here, in this process, as in scikit-learn.
"""

from __future__ import annotations

import io
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.model_selection._search import BaseSearchCV
from sklearn.utils import check_random_state, indexable

from zoomtune.common.cv_reports import MAX_SPLITS, SplitResults, split_results
from zoomtune.common.errors import ConfigError, SearchFailed, SearchParameterError
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings
from zoomtune.common.sklearn_payload import (
    FILE_SOURCE,
    KEY_ENV,
    KEY_FILE_ENV,
    REDIS_SOURCE,
    CVPayload,
    key_from_env,
    new_key,
    seal_payload,
    to_text,
)
from zoomtune.common.store_keys import Keys
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import StudyState, TrialStatus
from zoomtune.coordinator.export import StudyRecord
from zoomtune.coordinator.launch import run_embedded, run_study
from zoomtune.coordinator.progress import LogProgress
from zoomtune.coordinator.rounds import LoopSettings, StudyOutcome
from zoomtune.coordinator.sklearn_results import cv_results
from zoomtune.coordinator.sklearn_space import MappedSpace, map_distributions, problems_as_error

OBJECTIVE = "sklearn-cv"
"""The workers' objective for these studies (registered by --allow-sklearn-payloads)."""

WORKER_FLAG = "--allow-sklearn-payloads"
CONNECT_TIMEOUT = 30.0
SOURCE = "<ZoomSearchCV>"


def _positive_int(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise SearchParameterError(
            f"{name} must be an integer >= 1{' or None' if optional else ''}, got {value!r}"
        )


def _seed(random_state: object) -> int:
    """The study's seed: `random_state` itself when it is an int, else drawn from it."""
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        seed = int(random_state)
        if seed >= 0:
            return seed
    return int(check_random_state(random_state).randint(2**31 - 1))


def reproduce_first_failure(payload: CVPayload, params: Mapping[str, Any]) -> None:
    """Every trial failed on the workers (bad data, say): fit the first candidate on the first
    split here, so that the estimator's own exception (type, message, traceback) reaches the
    caller, as with scikit-learn's searches. Returns when it does not fail here."""
    from sklearn.utils import _safe_indexing

    train, test = payload.splits[0]
    model = clone(payload.estimator).set_params(**params)
    y = payload.y
    try:
        model.fit(_safe_indexing(payload.X, train), None if y is None else _safe_indexing(y, train))
        payload.scorer(
            model, _safe_indexing(payload.X, test), None if y is None else _safe_indexing(y, test)
        )
    except Exception as exc:
        exc.add_note("ZoomSearchCV: every trial failed; the first one's error, reproduced here")
        raise


class ZoomSearchCV(BaseSearchCV):  # type: ignore[misc]
    """Coarse-to-fine random search over hyperparameters, like `RandomizedSearchCV`.

    Parameters
    ----------
    estimator : a scikit-learn estimator (a Pipeline too: name its params `step__param`).
    param_distributions : dict of name -> `scipy.stats.loguniform` / `uniform` / `randint`, a
        list of choices, or a zoomtune parameter spec (see `zoomtune.coordinator.sklearn_space`).
    rounds, trials_per_round : the budget: `rounds * trials_per_round` candidates, each
        cross-validated (`trials_per_round` may be a list with one entry per round).
    cv, scoring, refit : as in `RandomizedSearchCV` (one metric; `refit` a bool or a callable
        of `cv_results_` that returns the best index).
    random_state : None, an int (the study's seed) or a RandomState.
    broker_url : a zoomtune cluster's broker (default: `ZOOMTUNE_BROKER_URL`, else the
        embedded default on this machine).
    n_workers : local worker processes of the embedded default (default: the cores).
    verbose : 0 is silent; 1 and more print one line per round and trial on stderr.

    Attributes: `best_params_`, `best_score_`, `best_index_`, `best_estimator_`,
    `cv_results_` (scikit-learn's keys and shapes, plus `round`), `n_splits_`, `refit_time_`,
    `scorer_`, `multimetric_`, `study_name_`.
    """

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        rounds: int = 4,
        trials_per_round: int | list[int] = 16,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool | Callable[[dict[str, Any]], int] = True,
        random_state: Any = None,
        broker_url: str | None = None,
        n_workers: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.rounds = rounds
        self.trials_per_round = trials_per_round
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.random_state = random_state
        self.broker_url = broker_url
        self.n_workers = n_workers
        self.verbose = verbose

    # What BaseSearchCV's inherited methods read; a ZoomSearchCV has no such parameters.
    n_jobs = None
    error_score = np.nan
    return_train_score = False
    pre_dispatch = None

    def _check_params(self) -> MappedSpace:
        _positive_int("rounds", self.rounds)
        per_round = self.trials_per_round
        if isinstance(per_round, list | tuple):
            if len(per_round) != self.rounds:
                raise SearchParameterError(
                    f"trials_per_round: needs one entry per round (rounds={self.rounds}), "
                    f"got {list(per_round)!r}"
                )
            for entry in per_round:
                _positive_int("each trials_per_round", entry)
        else:
            _positive_int("trials_per_round", per_round)
        _positive_int("n_workers", self.n_workers, optional=True)
        if self.broker_url is not None and not isinstance(self.broker_url, str):
            raise SearchParameterError(f"broker_url must be a string, got {self.broker_url!r}")
        if not (isinstance(self.refit, bool) or callable(self.refit)):
            raise SearchParameterError(
                f"refit must be True, False or a callable (one metric only), got {self.refit!r}"
            )
        if self.scoring is not None and not (
            isinstance(self.scoring, str) or callable(self.scoring)
        ):
            raise SearchParameterError(
                "scoring must be None, a scorer name or a callable: ZoomSearchCV optimizes one "
                f"metric, got {self.scoring!r}"
            )
        mapped = map_distributions(self.param_distributions)
        known = self.estimator.get_params(deep=True)
        unknown = sorted(set(mapped.space) - set(known))
        if unknown:
            raise SearchParameterError(
                f"param_distributions names {unknown}, which {type(self.estimator).__name__} "
                f"does not have; valid parameters: {sorted(known)}"
            )
        return mapped

    def _spec(self, name: str, seed: int, mapped: MappedSpace, source: str) -> StudySpec:
        per_round = self.trials_per_round
        data = {
            "study": {"name": name, "direction": "maximize", "seed": seed},
            "objective": {"name": OBJECTIVE, "options": {"payload": source}},
            "search": {
                "rounds": int(self.rounds),
                "trials_per_round": [int(n) for n in per_round]
                if isinstance(per_round, list | tuple)
                else int(per_round),
            },
            "early_stopping": {"rule": "none"},
            "space": {key: dict(entry) for key, entry in mapped.space.items()},
        }
        try:
            return StudySpec.from_dict(data, source=SOURCE)
        except ConfigError as exc:
            raise problems_as_error(exc) from exc

    def fit(  # scikit-learn's argument names: X, y
        self,
        X: Any,  # noqa: N803
        y: Any = None,
        *,
        groups: Any = None,
        **fit_params: Any,
    ) -> ZoomSearchCV:
        """Run the search: every candidate cross-validated on zoomtune workers, round by round;
        then refit the best candidate on all of X, y (with `refit`)."""
        mapped = self._check_params()
        estimator = self.estimator
        scorer = check_scoring(estimator, scoring=self.scoring)
        X, y, groups = indexable(X, y, groups)  # noqa: N806
        splitter = check_cv(self.cv, y, classifier=is_classifier(estimator))
        splits = tuple(splitter.split(X, y, groups))
        n_splits = len(splits)
        if not 1 <= n_splits <= MAX_SPLITS:
            raise SearchParameterError(f"cv gave {n_splits} splits; 1 to {MAX_SPLITS} work")
        payload = CVPayload(clone(estimator), X, y, splits, scorer, fit_params, mapped.choices)
        name = f"zoomsearch-{secrets.token_hex(6)}"
        seed = _seed(self.random_state)
        url = self.broker_url or os.environ.get("ZOOMTUNE_BROKER_URL") or None
        with tempfile.TemporaryDirectory(prefix="zoomtune-search-") as folder:
            run_dir = Path(folder) / name
            run_dir.mkdir(mode=0o700)
            if url is None:
                outcome = self._run_embedded(name, seed, mapped, payload, run_dir)
            else:
                outcome = self._run_on_cluster(name, seed, mapped, payload, run_dir, url)
            record = StudyRecord.from_json_file(run_dir / "study.json")
        if not any(t.status is TrialStatus.COMPLETE for t in record.trials) and record.trials:
            reproduce_first_failure(payload, mapped.decode(record.trials[0].params))
        self._results(record, mapped, n_splits, outcome)
        self.study_name_ = name
        self.scorer_ = scorer
        self.multimetric_ = False
        self.n_splits_ = n_splits
        if self.refit:
            self._refit(X, y, fit_params)
        return self

    def _progress(self) -> LogProgress:
        return LogProgress(sys.stderr if self.verbose else io.StringIO(), maximize=True)

    def _run_embedded(
        self, name: str, seed: int, mapped: MappedSpace, payload: CVPayload, run_dir: Path
    ) -> StudyOutcome:
        key = new_key()
        path = run_dir / "payload"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(seal_payload(payload, name, key))
        spec = self._spec(name, seed, mapped, f"{FILE_SOURCE}{path.resolve()}")
        return run_embedded(
            spec,
            run_dir / "study.toml",  # no such file: the study has no entrypoint to resolve
            Settings.from_env().with_broker(None),
            run_dir,
            self.n_workers,
            self._progress(),
            CONNECT_TIMEOUT,
            LoopSettings(),
            worker_flags=(WORKER_FLAG,),
            worker_env={KEY_ENV: key.hex(), KEY_FILE_ENV: ""},  # never on disk, never in Redis
        )

    def _run_on_cluster(
        self,
        name: str,
        seed: int,
        mapped: MappedSpace,
        payload: CVPayload,
        run_dir: Path,
        url: str,
    ) -> StudyOutcome:
        key = key_from_env(os.environ)
        if key is None:
            raise SearchParameterError(
                f"a search on a cluster needs the payload key its workers hold: set {KEY_ENV} "
                f"(hex, e.g. `openssl rand -hex 32`) or {KEY_FILE_ENV} here and on the workers, "
                f"and start them with `worker start {WORKER_FLAG}`"
            )
        settings = Settings.from_env().with_broker(url)
        spec = self._spec(name, seed, mapped, REDIS_SOURCE)
        keys = Keys(settings.prefix, name)
        client = connect(url)
        try:
            client.set(keys.payload, to_text(seal_payload(payload, name, key)))
            return run_study(spec, settings, run_dir, self._progress(), CONNECT_TIMEOUT)
        finally:
            client.delete(keys.payload)
            client.close()

    def _results(
        self, record: StudyRecord, mapped: MappedSpace, n_splits: int, outcome: StudyOutcome
    ) -> None:
        trials = sorted(record.trials, key=lambda t: t.number)
        candidates = [mapped.decode(t.params) for t in trials]
        nothing = SplitResults(*(((np.nan,) * n_splits,) * 3))
        splits = [
            split_results(record.reports.get(t.number, ()), n_splits)
            if t.status is TrialStatus.COMPLETE
            else nothing
            for t in trials
        ]
        if outcome.state != StudyState.COMPLETE or not trials:
            errors = [t.error for t in trials if t.error]
            first = f"; the first trial's error: {errors[0]}" if errors else ""
            raise SearchFailed(
                f"the search {outcome.state}: {outcome.message or 'no trial completed'}{first}"
            )
        self.cv_results_ = cv_results(candidates, [t.round for t in trials], splits, n_splits)
        ranks = self.cv_results_["rank_test_score"]
        if callable(self.refit):
            self.best_index_ = int(self.refit(self.cv_results_))
        else:
            self.best_index_ = int(np.argmin(ranks))
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_params_ = self.cv_results_["params"][self.best_index_]

    def _refit(self, x: Any, y: Any, fit_params: Mapping[str, Any]) -> None:
        params = clone(self.best_params_, safe=False)
        self.best_estimator_ = clone(self.estimator).set_params(**params)
        started = time.perf_counter()
        if y is not None:
            self.best_estimator_.fit(x, y, **fit_params)
        else:
            self.best_estimator_.fit(x, **fit_params)
        self.refit_time_ = time.perf_counter() - started
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_


__all__ = ["SearchFailed", "ZoomSearchCV"]
