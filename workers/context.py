"""What an objective sees of its trial: `objective(params, trial) -> float`.

Objectives are plain functions that import nothing from Celery or zoomtune; they read
`trial.options` (the study file's `[objective] options`), `trial.device`, and may call
`trial.report(step, value)` to record intermediate values (learning curves) and
`trial.should_prune()` to ask whether to stop early.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.store import StudyStore


@dataclass
class TrialContext:
    study: str
    number: int
    attempt: int
    params: Mapping[str, Any]
    options: Mapping[str, Any]
    device: str = "cpu"
    _store: StudyStore | None = field(default=None, repr=False)
    _token: str = field(default="", repr=False)
    lost: bool = False
    """True once the trial was taken from this attempt (its lease expired): its result will be
    dropped, so a long objective may stop early."""

    @property
    def cuda_visible_devices(self) -> str | None:
        """The GPUs this worker process is pinned to (None: not set)."""
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    def report(self, step: int, value: float) -> None:
        """Record an intermediate value, e.g. the validation score after epoch `step`."""
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {step!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"reported values must be finite, got {value!r}")
        if self._store is not None and not self._store.report(
            self.number, self.attempt, self._token, step, value
        ):
            self.lost = True

    def should_prune(self) -> bool:
        """Whether the objective should stop now (early stopping); here always False.

        A placeholder so that objectives can already ask: the early-stopping branch replaces it
        with the study's rule."""
        return False
