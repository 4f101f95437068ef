"""Objectives used by the integration and fault tests, registered on real workers with
`--objective NAME=tests/objectives.py:NAME` (the user-objective path)."""

from __future__ import annotations

import json
import math
import os
import random
import threading
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


def learning_curve(params: Mapping[str, Any], step: int) -> float:
    """A loss falling towards `deterministic_score` as training goes on: the ranking at every
    step is the final one (predictive curves)."""
    return deterministic_score(params) + 1.0 / step


def prunable(params: Mapping[str, Any], trial: Any) -> float:
    """Trains for `options.steps` steps (default 9): reports `learning_curve` at every step,
    works `options.step_seconds` (default 0, plus a random 0 to `options.jitter`), then asks
    `trial.should_prune()` and returns at once when told to. Returns the last step's value."""
    steps = int(trial.options.get("steps", 9))
    pause = float(trial.options.get("step_seconds", 0.0))
    jitter = float(trial.options.get("jitter", 0.0))
    for step in range(1, steps + 1):
        trial.report(step, learning_curve(params, step))
        time.sleep(pause + random.uniform(0.0, jitter))
        if trial.should_prune():
            return -1.0  # whatever a pruned objective returns is not recorded
    return learning_curve(params, steps)


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


def hangs(params: Mapping[str, Any], trial: Any) -> float:
    """Hangs forever on the trials listed in `options.hang`, else returns the score at once.

    With `options.ignore_soft_limit`, it also swallows Celery's soft time limit exception, as a
    deadlocked C extension would, so that only the hard time limit can stop it.
    """
    if trial.number not in trial.options.get("hang", []):
        return deterministic_score(params)
    while True:
        try:
            time.sleep(1)
        except BaseException:
            if not trial.options.get("ignore_soft_limit", False):
                raise


def stops_heartbeat(params: Mapping[str, Any], trial: Any) -> float:
    """On its first attempt, stops its process's heartbeat thread (as if it died) and keeps
    running for `options.duration` seconds; later attempts just return the score."""
    if trial.attempt == 1:
        for thread in threading.enumerate():
            if thread.name == "zoomtune-heartbeat":
                thread._target.__self__.stop()  # type: ignore[attr-defined]
        time.sleep(float(trial.options.get("duration", 6)))
    return deterministic_score(params)


BAD_OUTPUTS = (
    "raises",
    "nan",
    "inf",
    "-inf",
    "string",
    "no_score_key",
    "wrong_type",
    "huge_return",
    "huge_error",
    "good",
)
"""What `bad_output` does, by trial number (trial n does BAD_OUTPUTS[n % len]), unless
`options.kinds` lists other kinds."""

HUGE = 10 * 1024 * 1024
"""10 MB: far beyond what a result may bring into Redis."""


def bad_output(params: Mapping[str, Any], trial: Any) -> object:
    """Returns (or raises) a different kind of bad output for each trial number."""
    kinds = trial.options.get("kinds", BAD_OUTPUTS)
    kind = kinds[trial.number % len(kinds)]
    outputs: dict[str, object] = {
        "nan": math.nan,
        "inf": math.inf,
        "-inf": -math.inf,
        "string": "0.5",
        "no_score_key": {"loss": 0.5},
        "wrong_type": [0.5],
        "good": deterministic_score(params),
    }
    if kind == "raises":
        raise RuntimeError("boom: the model diverged")
    if kind == "huge_return":
        return "1" * HUGE
    if kind == "huge_error":
        raise ValueError("x" * HUGE)
    return outputs[kind]


def jittery(params: Mapping[str, Any], trial: Any) -> float:
    """Sleeps a random 0 to `options.jitter` seconds (default 0.3), so that trials finish in
    any order, then returns the deterministic score."""
    time.sleep(random.uniform(0.0, float(trial.options.get("jitter", 0.3))))
    return deterministic_score(params)
