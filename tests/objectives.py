"""Objectives used by the integration and fault tests, registered on real workers with
`--objective NAME=tests/objectives.py:NAME` (the user-objective path)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def sleepy(params: Mapping[str, Any], trial: Any) -> float:
    """Sleeps `options.duration` seconds (default 0.2), then returns a deterministic score."""
    time.sleep(float(trial.options.get("duration", 0.2)))
    return deterministic_score(params)


def deterministic_score(params: Mapping[str, Any]) -> float:
    """A smooth function of the params with its minimum at x = 0.3, y = 5."""
    x = float(params.get("x", 0.0))
    y = float(params.get("y", 0.0))
    return (x - 0.3) ** 2 + 0.01 * (y - 5) ** 2


def reports_curve(params: Mapping[str, Any], trial: Any) -> float:
    """Reports three intermediate values, then returns the last."""
    value = deterministic_score(params)
    for step in range(1, 4):
        trial.report(step, value * (4 - step))
    return value


def raises(params: Mapping[str, Any], trial: Any) -> float:
    raise RuntimeError("boom: the model diverged")


def returns_nan(params: Mapping[str, Any], trial: Any) -> float:
    return math.nan


def kills_itself(params: Mapping[str, Any], trial: Any) -> float:
    """Dies like a process hit by the OOM killer."""
    os.kill(os.getpid(), 9)
    return 0.0


def records_device(params: Mapping[str, Any], trial: Any) -> float:
    """Writes what the trial sees of its device to `options.out/<trial>-<attempt>.json`, sleeps
    `options.duration` seconds (default 0.3), then returns a deterministic score."""
    seen = {
        "device": trial.device,
        "cuda_visible_devices": trial.cuda_visible_devices,
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        "pid": os.getpid(),
    }
    out = Path(trial.options["out"])
    (out / f"{trial.number}-{trial.attempt}.json").write_text(json.dumps(seen))
    time.sleep(float(trial.options.get("duration", 0.3)))
    return deterministic_score(params)
