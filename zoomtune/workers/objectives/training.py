"""A synthetic training run: epochs whose time and learning curve look like real training.

The built-in `synthetic-training` objective stands in for a neural network trained for
`epochs` epochs, so that benchmarks can measure scheduling and early stopping without the cost
of real training. Parameters (all needed):

    learning_rate  float, log 1e-4..1
    width          int, log 16..512   (units per layer)
    depth          int, 1..6          (layers)
    momentum       float, reverse_log 0.5..0.999
    dropout        float, 0..0.5

- **Time.** An epoch takes `scale` seconds for a mid-sized model (width 90, depth 3.5); it
  grows with width and depth (about 12x from the smallest model to the largest) times a
  lognormal jitter (sigma 0.4) drawn from a seed made of the parameters, so that the same trial
  always takes the same time.
- **Score.** An accuracy in (0.1, 0.97]: 0.97 at the optimum (effective learning rate
  `learning_rate / (1 - momentum)` of 0.3, width 180, depth 4, dropout 0.2), falling towards
  chance (0.1) away from it (1/e of the gain over chance one decade of learning rate off).
- **Curves.** After epoch e of E the value rises from chance as (1 - exp(-3 t)) / (1 - exp(-3))
  with t = e / E, towards a score of the same form as the final one, and is exactly the final
  score at the last epoch, for both kinds of curve:
  - `predictive`: towards the final score itself, so the ranking after any epoch is the final
    ranking;
  - `crossing`: towards a score whose best learning rate lies 0.7 (1 - t) decades above the
    final one: short-horizon bias. Large learning rates lead early and end lower, the early
    ranking of learning rates inverts, and a pruner that keeps the early leaders loses the
    best trials.

Options: `epochs` (default 27), `scale` (seconds per epoch of a mid-sized model, default 0.05;
0 does not sleep), `curve` ("predictive", the default, or "crossing").

The objective reports the value after every epoch with `trial.report(epoch, value)`, asks
`trial.should_prune()` after each report, and returns the last value when told to stop.
`final_score`, `value_at` and `epoch_seconds` are pure functions, for tests and for benchmarks
that run the same training under another tuner.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol, get_args

import numpy as np

from zoomtune.common.objectives import Curve, TrainingOptions, read_options

CURVES: tuple[Curve, ...] = get_args(Curve)

CHANCE = 0.1
"""The score of a model that learned nothing (ten classes)."""

PEAK = 0.97
"""The final score at the optimum."""

BEST_EFFECTIVE_LR = 0.3
"""The effective learning rate `learning_rate / (1 - momentum)` of the best final score."""

LR_WIDTH = 1.0
"""Decades of effective learning rate that cost a factor 1/e of the gain over chance."""


JITTER_SIGMA = 0.4
"""Sigma of the lognormal factor on a trial's epoch time."""

RISE_RATE = 3.0
"""How fast every curve rises: after a share t of the epochs it has made
(1 - exp(-k t)) / (1 - exp(-k)) of its way from chance to its final score."""

CROSSING_SHIFT = 0.7
"""Crossing curves: at the start, the learning rate that looks best is this many decades above
the one that is best at the end; the shift shrinks linearly to 0 at the last epoch."""

PARAMETERS = ("learning_rate", "width", "depth", "momentum", "dropout")


class Trial(Protocol):
    options: Mapping[str, Any]

    def report(self, step: int, value: float) -> None: ...

    def should_prune(self) -> bool: ...


def _numbers(params: Mapping[str, Any]) -> dict[str, float]:
    missing = [name for name in PARAMETERS if name not in params]
    if missing:
        raise KeyError(f"this objective needs parameters {list(PARAMETERS)}, missing {missing}")
    return {name: float(params[name]) for name in PARAMETERS}


def _lr_decades(p: Mapping[str, float]) -> float:
    """Decades of effective learning rate above the best one (negative: below)."""
    effective = p["learning_rate"] / max(1.0 - p["momentum"], 1e-12)
    return math.log10(effective / BEST_EFFECTIVE_LR)


def final_score(params: Mapping[str, Any]) -> float:
    """The accuracy after the last epoch, in (0.1, 0.97]; 0.97 at the optimum."""
    return _score(_numbers(params), lr_shift=0.0)


def _score(p: Mapping[str, float], lr_shift: float) -> float:
    """The score of a model that is best at an effective learning rate `lr_shift` decades
    above BEST_EFFECTIVE_LR."""
    loss = (
        ((_lr_decades(p) - lr_shift) / LR_WIDTH) ** 2
        + ((math.log2(p["width"]) - math.log2(180.0)) / 2.5) ** 2
        + ((p["depth"] - 4.0) / 3.0) ** 2
        + ((p["dropout"] - 0.2) / 0.5) ** 2
    )
    return CHANCE + (PEAK - CHANCE) * math.exp(-loss)


def value_at(params: Mapping[str, Any], epoch: int, curve: str, epochs: int = 27) -> float:
    """The accuracy after `epoch` of `epochs` (1-based); exactly `final_score` at the last."""
    if not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in 1..{epochs}, got {epoch}")
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")
    p = _numbers(params)
    if epoch == epochs:
        return _score(p, lr_shift=0.0)
    share = epoch / epochs
    shift = CROSSING_SHIFT * (1.0 - share) if curve == "crossing" else 0.0
    progress = math.expm1(-RISE_RATE * share) / math.expm1(-RISE_RATE)
    return CHANCE + (_score(p, shift) - CHANCE) * progress


def epoch_seconds(params: Mapping[str, Any], scale: float) -> float:
    """Seconds one epoch of this model takes: `scale` for a mid-sized model, more for wider and
    deeper ones, times a lognormal jitter that is the same every time for the same params."""
    p = _numbers(params)
    size = math.pow(p["width"] / 90.0, 0.45) * math.pow(p["depth"] / 3.5, 0.5)
    return scale * size * _jitter(params)


def _jitter(params: Mapping[str, Any]) -> float:
    # The seed depends on the values, not on how they are typed (128 and 128.0 are one trial).
    text = ";".join(f"{name}={float(params[name])!r}" for name in PARAMETERS)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return float(np.random.default_rng(seed).lognormal(0.0, JITTER_SIGMA))


def synthetic_training(params: Mapping[str, Any], trial: Trial) -> float:
    """Trains for `epochs` epochs (sleeping), reporting the accuracy after each; maximise."""
    options = read_options(TrainingOptions, trial.options)
    seconds = epoch_seconds(params, options.scale)
    value = CHANCE
    for epoch in range(1, options.epochs + 1):
        if seconds > 0:
            time.sleep(seconds)
        value = value_at(params, epoch, options.curve, options.epochs)
        trial.report(epoch, value)
        if trial.should_prune():
            break
    return value
