"""`sklearn-cv`: one candidate of a `ZoomSearchCV` search, cross-validated on a worker.

The trial's params are the candidate; everything else (the estimator, X, y, the CV splits, the
scorer) comes from the study's sealed payload (`zoomtune.common.sklearn_payload`), which this
objective loads only after its HMAC verifies with the worker's payload key.
`trial.options["payload"]` says where it is: "file:/abs/path" (the embedded default's run folder) or
"redis" (the study's `payload` key). The loaded payload is kept per process for the study, so a pool
process reads and verifies it once, not once per trial.

Each split's test score, fit time and score time are reported (`zoomtune.common.cv_reports`); the
trial's score is the mean test score. A fit or score that raises fails the trial (its splits count
as NaN in `cv_results_`, like scikit-learn's `error_score=np.nan`).

It is not a built-in: only `worker start --allow-sklearn-payloads` registers it, with the key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zoomtune.common.cv_reports import FIT_TIME_STEP, SCORE_TIME_STEP, TEST_STEP
from zoomtune.common.errors import PayloadRefused
from zoomtune.common.sklearn_payload import (
    FILE_SOURCE,
    REDIS_SOURCE,
    CVPayload,
    from_text,
    open_payload,
)

NAME = "sklearn-cv"
"""The objective's name, in the worker's allow-list only with --allow-sklearn-payloads."""


class Trial(Protocol):
    study: str
    options: Mapping[str, Any]

    def report(self, step: int, value: float) -> None: ...

    def stored_payload(self) -> str | None: ...


def read_sealed(trial: Trial) -> bytes:
    """The sealed payload's bytes, from where the study's options say it is."""
    source = trial.options.get("payload")
    if isinstance(source, str) and source.startswith(FILE_SOURCE):
        path = Path(source.removeprefix(FILE_SOURCE))
        if not path.is_absolute():
            raise PayloadRefused(f"study {trial.study!r}: payload path {path} is not absolute")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise PayloadRefused(
                f"study {trial.study!r}: cannot read the payload file {path} ({exc.strerror}); "
                "the embedded default's payload is only on the machine that runs the search"
            ) from exc
    if source == REDIS_SOURCE:
        text = trial.stored_payload()
        if text is None:
            raise PayloadRefused(f"study {trial.study!r}: no payload in Redis")
        return from_text(text, trial.study)
    raise PayloadRefused(f"study {trial.study!r}: option payload must be 'file:PATH' or 'redis'")


def candidate(params: Mapping[str, Any], choices: Mapping[str, tuple[Any, ...]]) -> dict[str, Any]:
    """The estimator parameters of a trial: an index into `choices` becomes its object."""
    resolved = dict(params)
    for name, options in choices.items():
        if name in resolved:
            resolved[name] = options[int(resolved[name])]
    return resolved


def _rows(data: Any, indices: Any) -> Any:
    from sklearn.utils import _safe_indexing

    return None if data is None else _safe_indexing(data, indices)


def _fit_params(payload: CVPayload, indices: Any) -> dict[str, Any]:
    """Fit parameters aligned with the samples are cut to the split, like scikit-learn does."""
    if not payload.fit_params:
        return {}
    x = payload.X
    n_samples = x.shape[0] if hasattr(x, "shape") else len(x)  # sparse matrices have no len
    return {
        name: _rows(value, indices)
        if hasattr(value, "__len__") and not isinstance(value, str) and len(value) == n_samples
        else value
        for name, value in payload.fit_params.items()
    }


@dataclass
class SklearnCV:
    """The objective, holding the worker's payload key."""

    key: bytes = field(repr=False)
    _loaded: tuple[str, CVPayload] | None = field(default=None, repr=False)

    def payload(self, trial: Trial) -> CVPayload:
        if self._loaded is None or self._loaded[0] != trial.study:
            self._loaded = (trial.study, open_payload(read_sealed(trial), trial.study, self.key))
        return self._loaded[1]

    def __call__(self, params: Mapping[str, Any], trial: Trial) -> float:
        from sklearn.base import clone

        payload = self.payload(trial)
        estimator = clone(payload.estimator).set_params(**candidate(params, payload.choices))
        scores = []
        for i, (train, test) in enumerate(payload.splits):
            model = clone(estimator)
            started = time.perf_counter()
            model.fit(
                _rows(payload.X, train), _rows(payload.y, train), **_fit_params(payload, train)
            )
            fitted = time.perf_counter()
            score = float(payload.scorer(model, _rows(payload.X, test), _rows(payload.y, test)))
            scored = time.perf_counter()
            trial.report(FIT_TIME_STEP + i, fitted - started)
            trial.report(SCORE_TIME_STEP + i, scored - fitted)
            trial.report(TEST_STEP + i, score)
            scores.append(score)
        return float(np.mean(scores))


__all__ = ["NAME", "SklearnCV", "candidate", "read_sealed"]
