"""What an objective sees of its trial: `objective(params, trial) -> float`.

Objectives are plain functions that import nothing from Celery or zoomtune; they read
`trial.options` (the study file's `[objective] options`), `trial.device`, and may call
`trial.report(step, value)` to record intermediate values (learning curves) and
`trial.should_prune()` to learn whether to stop early.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zoomtune.common.store import StudyStore
from zoomtune.common.trial import Rung, pruned_at


@dataclass
class TrialContext:
    study: str
    number: int
    attempt: int
    params: Mapping[str, Any]
    options: Mapping[str, Any]
    device: str = "cpu"
    rungs: tuple[Rung, ...] = ()
    """The trial's early-stopping rungs, as stored (the start hands them to the attempt)."""
    maximize: bool = True
    _store: StudyStore | None = field(default=None, repr=False)
    _token: str = field(default="", repr=False)
    lost: bool = False
    """True once the trial was taken from this attempt (its lease expired): its result will be
    dropped, so a long objective may stop early."""
    pruned: bool = False
    """True once `should_prune()` said True: however the objective then ends, the attempt is
    recorded as PRUNED."""
    last_report: tuple[int, float] | None = None
    """The (step, value) this attempt reported last."""
    _steps: list[int] = field(default_factory=list, repr=False)
    _values: list[float] = field(default_factory=list, repr=False)

    @property
    def cuda_visible_devices(self) -> str | None:
        """The GPUs this worker process is pinned to (None: not set)."""
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    def stored_payload(self) -> str | None:
        """The study's sealed payload from Redis, as text (None: there is none); only the
        `sklearn-cv` objective reads it, and verifies it before it loads anything."""
        return None if self._store is None else self._store.payload()

    def report(self, step: int, value: float) -> None:
        """Record an intermediate value, e.g. the validation score after epoch `step`."""
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {step!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"reported values must be finite, got {value!r}")
        self._remember(step, value)
        if self._store is None:
            return
        reported = self._store.report(self.number, self.attempt, self._token, step, value)
        if not reported.owned:
            self.lost = True
        elif reported.rungs is not None:
            self.rungs = reported.rungs  # a round run ahead got other rungs since the message

    def should_prune(self) -> bool:
        """True when the objective should stop now and return (any value): the trial is then
        recorded as PRUNED with its last reported step and value.

        Decided in memory from the stored rungs the start handed the attempt (or those the last
        report brought back, when a round run ahead got other rungs since) and this attempt's
        reported values: at each rung, the value reported at the first step at or after the
        rung's step must be at least as good as the rung's threshold. Also True once this
        attempt has lost its trial (its lease expired and the trial went back to the queue): its
        result would be dropped anyway, and the next attempt decides for itself, on the same
        rungs.
        """
        if self.lost or pruned_at(self.rungs, self._steps, self._values, self.maximize):
            self.pruned = True
        return self.pruned

    def _remember(self, step: int, value: float) -> None:
        """Keep the curve sorted by step; a step reported again keeps its latest value."""
        self.last_report = (step, value)
        index = bisect.bisect_left(self._steps, step)
        if index < len(self._steps) and self._steps[index] == step:
            self._values[index] = value
        else:
            self._steps.insert(index, step)
            self._values.insert(index, value)


__all__ = ["TrialContext"]
