"""The settings of a study file's tables, validated: what the rest of the code reads.

`zoomtune.common.study_file` checks a file's shape and takes its defaults from here;
`zoomtune.common.study` builds these from it. Every setting, its default and its meaning are written
once, below.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from zoomtune.common.settings import QueueKind

DEFAULT_LAG = 0
"""`[search] lag`: how many of the latest trials a new round does not wait for (see
`SearchSettings`); chosen on the rolling-rounds benchmark (BENCHMARKS.md)."""
SamplerName = Literal["random", "sobol", "lhs", "grid"]
"""The sampler names `[search] sampler` may give (see `zoomtune.coordinator.sampling`)."""
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PruningRule = Literal["halving", "median", "none"]
"""The early-stopping rules `[early_stopping] rule` may give (see
`zoomtune.coordinator.pruning`)."""

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "250ms", "30s", "10m", "2h" or "1d"."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as '30s' or '10m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        if not match:
            raise ValueError(f"expected a duration such as '30s' or '10m', got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive and finite, got {value!r}")
    return seconds


@dataclass(frozen=True)
class ObjectiveSpec:
    """Which objective the workers run, and the options it receives."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    entrypoint: str | None = None


@dataclass(frozen=True)
class SearchSettings:
    """How trials are sampled and how the box narrows from round to round.

    - `sampler`: how points are drawn, in the box and over the whole space: "sobol"
      (scrambled Sobol, the default), "lhs" (Latin hypercube), "random", or "grid" (for
      comparison only: it tries few values of each parameter).
    - `rounds`, `trials_per_round`: the budget; one size for every round, or one per round.
    - `top_k`: how many of the best trials so far define the next box: an int, a fraction of
      the completed trials, or "auto" = ceil(sqrt(completed) / 4), which grows slowly with the
      history (see `zoomtune.coordinator.narrowing.resolve_k`). Pruned trials count as
      completed here (never among the best): see `CoarseToFine.tell_trial`.
    - `margin`: the box around the top-k is widened by this share of their spread on each side.
    - `min_shrink`: a box is never narrower than this share of the previous round's box; with
      a small k this is the pace at which the box closes in on the best trial.
    - `explore`: the share of each later round sampled over the whole space instead of the box.
    - `min_width`: no interval gets narrower than this, in unit coordinates.
    - `lag`: rolling rounds. Round r's box is narrowed from every trial numbered below
      `first(r) - lag` (first(r): round r's first trial number), and round r is sent as soon
      as those trials are finished, while the last `lag` trials before it still run. 0 is a
      barrier: round r waits for every trial of rounds 1..r-1. Which results a round sees is
      a function of trial numbers, never of timing, so the study stays a function of its seed.
    - `speculate`: while the last trials of a round still run and the queue is empty, send the
      next round as it would be if they ended with a guessed score
      (`CoarseToFine.provisional_rounds`; up to `zoomtune.coordinator.speculation.DEPTH`
      rounds ahead, each from the one before it as run ahead), so that idle slots work ahead.
      Once they are finished the round is sampled for real: its trials whose parameters and
      rungs came out the same are kept (finished or running), the others are stopped and sent
      again with the real ones. The study is exactly the one without it; only compute is
      spent on the trials sent again.

    The defaults were chosen on the search-quality benchmark (BENCHMARKS.md), tuned on half of
    its problems and checked on the other half.
    """

    sampler: SamplerName = "sobol"
    rounds: int = 4
    trials_per_round: tuple[int, ...] = (16, 16, 16, 16)
    top_k: int | float | str = "auto"
    margin: float = 0.0
    min_shrink: float = 0.55
    explore: float = 0.05
    min_width: float = 0.02
    lag: int = DEFAULT_LAG
    speculate: bool = True

    @property
    def total_trials(self) -> int:
        return sum(self.trials_per_round)


@dataclass(frozen=True)
class Resources:
    """Where trials run and how long they may take; durations are in seconds.

    A running trial holds a lease that its worker renews every `heartbeat`; a lease not renewed
    for `lease` seconds has expired, and the trial goes back to the queue as a new attempt, up to
    `max_attempts`. `retry_failed` also retries trials whose objective raised or returned a bad
    value (off by default: such errors are usually deterministic).

    Detection time: a trial whose process dies while its worker lives is handed back at once.
    A trial whose whole worker or machine is lost is back in the queue at most `lease` plus the
    coordinator's housekeeping tick (1 s) after its last heartbeat. A shorter lease recovers
    sooner but re-runs a healthy trial whose heartbeats stall longer than `lease` (a frozen VM,
    a Redis outage the worker cannot ride out); `lease` must be at least twice `heartbeat`.
    After a Redis restart the coordinator waits one `lease` before reaping, so that trials that
    ran through it can renew their leases. `timeout` is the hard limit of one attempt; Redis's
    visibility timeout (ZOOMTUNE_VISIBILITY_TIMEOUT, default 1 day) must exceed it by 300 s.
    """

    queue: QueueKind = "cpu"
    timeout: float = 3600.0
    max_attempts: int = 3
    heartbeat: float = 5.0
    lease: float = 30.0
    retry_failed: bool = False


@dataclass(frozen=True)
class EarlyStopping:
    """When a running trial that asks `trial.should_prune()` is stopped early.

    - `rule`: "halving" (successive halving: at rungs min_step * reduction_factor**k, keep the
      top 1/reduction_factor), "median" (at every reported step from min_step on, keep the
      trials at least as good as the median), or "none".
    - `min_step`: no decision before this step (halving's first rung; 0 counts as 1 there).
    - `reduction_factor`: halving only, the eta of successive halving.
    - `min_trials`: a rung is used only where at least this many completed reference trials
      reported at it (the safety check of `zoomtune.coordinator.pruning`).

    The thresholds are computed by `zoomtune.coordinator.pruning.rungs_for` from a fixed set of
    earlier trials and travel in each trial's message; an objective that never asks is never
    pruned.
    """

    rule: PruningRule = "halving"
    min_step: int = 1
    reduction_factor: int = 3
    min_trials: int = 8

    @property
    def enabled(self) -> bool:
        return self.rule != "none"
