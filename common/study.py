"""The study file: a TOML document parsed and validated into a `StudySpec`.

```toml
[study]
name = "mlp-digits"
direction = "maximize"          # or "minimize"
seed = 7

[objective]
name = "sklearn-mlp-digits"     # a name registered on the workers
options = { max_iter = 30 }     # passed to the objective as trial.options

[search]                        # every key has a default
sampler = "sobol"               # random | sobol | lhs | grid
rounds = 4
trials_per_round = 32           # an int, or a list with one entry per round
top_k = "auto"                  # an int, a fraction of the trials so far, or "auto"
margin = 0.0                    # widen the box by this share of the top-k's spread, each side
min_shrink = 0.55               # a box keeps at least this share of the previous box's width
explore = 0.05                  # share of each later round sampled over the whole space
min_width = 0.02                # narrowest interval, as a share of the (warped) range
lag = 0                         # rolling rounds: a round does not wait for the last `lag` trials

[resources]                     # every key has a default
queue = "cpu"                   # cpu | gpu
timeout = "10m"                 # hard time limit of one trial (default 1h)
max_attempts = 3                # runs of a trial whose worker was lost, before it is FAILED
heartbeat = "5s"                # how often a running trial renews its lease
lease = "30s"                   # a lease not renewed this long has expired: the trial is re-run
retry_failed = false            # also retry trials whose objective raised or returned NaN

[early_stopping]                # every key has a default; see coordinator.pruning
rule = "halving"                # halving | median | none
min_step = 1                    # no trial is pruned before this step
reduction_factor = 3            # halving: keep the top 1/reduction_factor at each rung
min_trials = 8                  # a rung needs this many completed reference trials

[space]
learning_rate = { type = "float", low = 1e-5, high = 1e-1, scale = "log" }
```

pydantic checks the shape (types, unknown keys, missing keys); the value objects of
`common.space` check the meaning (low <= high, log scale needs low > 0...). Every problem is
reported at once, each naming the file, the field and the bad value.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from common.errors import ConfigError
from common.names import ENTRYPOINT, OBJECTIVE_NAME, PARAMETER_NAME, STUDY_NAME
from common.settings import QueueKind
from common.space import (
    ChoiceParameter,
    FloatParameter,
    IntParameter,
    Parameter,
    Scale,
    SearchSpace,
)

DEFAULT_LAG = 0
"""`[search] lag`: how many of the latest trials a new round does not wait for (see
`SearchSettings`); chosen on the rolling-rounds benchmark (BENCHMARKS.md)."""
SamplerName = Literal["random", "sobol", "lhs", "grid"]
"""The sampler names `[search] sampler` may give (see `coordinator.sampling`)."""
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
LARGE_BUDGET = 100_000
"""A study of more trials in total is accepted with a warning (`budget_warning`): each trial is
a message to publish, a record in Redis and a row of trials.csv, and a round of 100,000 takes
minutes to publish."""

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


# --------------------------------------------------------------------------------------------
# The file's shape, checked by pydantic. Private: the rest of the code sees only the dataclasses.


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


class _StudySection(_Section):
    name: str
    direction: Literal["maximize", "minimize"]
    seed: int = 0
    description: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not STUDY_NAME.fullmatch(value):
            raise ValueError(
                "a study name is 1 to 64 letters, digits, '_', '.' or '-', starting with a "
                f"letter or digit (it names Redis keys and folders), got {value!r}"
            )
        return value


class _ObjectiveSection(_Section):
    name: str
    options: dict[str, JsonValue] = Field(default_factory=dict)
    entrypoint: str | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not OBJECTIVE_NAME.fullmatch(value):
            raise ValueError(
                "an objective name is 1 to 128 letters, digits, '_', '.' or '-', starting with "
                f"a letter or digit, got {value!r}"
            )
        return value

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, value: str | None) -> str | None:
        if value is not None and not ENTRYPOINT.fullmatch(value):
            raise ValueError(
                f"expected 'module:function' or 'path/to/file.py:function', got {value!r}"
            )
        return value


class _SearchSection(_Section):
    sampler: SamplerName = "sobol"
    rounds: Annotated[int, Field(ge=1, le=1000)] = 4
    trials_per_round: Any = 16  # int | list[int], checked below for a clear message
    top_k: Any = "auto"  # int | float | "auto", checked below
    margin: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.0
    min_shrink: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.55
    explore: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.05
    min_width: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.02
    lag: Annotated[int, Field(ge=0, le=1_000_000, strict=True)] = DEFAULT_LAG

    @field_validator("trials_per_round", mode="before")
    @classmethod
    def _round_sizes(cls, value: object) -> int | list[int]:
        sizes = value if isinstance(value, list) else [value]
        if not sizes or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 100_000 for n in sizes
        ):
            raise ValueError(
                "expected an int from 1 to 100000, or a list of them (one per round), "
                f"got {value!r}"
            )
        return value  # type: ignore[return-value]

    @field_validator("top_k", mode="before")
    @classmethod
    def _top_k(cls, value: object) -> int | float | str:
        if (
            value == "auto"
            or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
            or (isinstance(value, float) and 0 < value <= 1)
        ):
            return value
        raise ValueError(
            "expected an int >= 1 (a count), a float in (0, 1] (a fraction of the completed "
            f"trials) or 'auto', got {value!r}"
        )


class _ResourcesSection(_Section):
    queue: QueueKind = "cpu"
    timeout: str | float = "1h"
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    heartbeat: str | float = "5s"
    lease: str | float = "30s"
    retry_failed: bool = False

    @field_validator("timeout", "heartbeat", "lease", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        # Before pydantic's own checks, so that a bad value gets one message, not one per type.
        return parse_duration(value)


class _EarlyStoppingSection(_Section):
    rule: Literal["halving", "median", "none"] = "halving"
    min_step: Annotated[int, Field(ge=0, le=1_000_000_000)] = 1
    reduction_factor: Annotated[int, Field(ge=2, le=1000)] = 3
    min_trials: Annotated[int, Field(ge=2, le=1_000_000)] = 8


class _FloatEntry(_Section):
    type: Literal["float"]
    low: float
    high: float
    scale: Annotated[Scale, Field(strict=False)] = Scale.LINEAR
    step: float | None = None


class _IntEntry(_Section):
    type: Literal["int"]
    low: int
    high: int
    scale: Annotated[Scale, Field(strict=False)] = Scale.LINEAR
    step: int = 1


class _ChoiceEntry(_Section):
    type: Literal["choice"]
    values: list[Any]  # each value is checked by ChoiceParameter


_Entry = Annotated[_FloatEntry | _IntEntry | _ChoiceEntry, Field(discriminator="type")]


class _StudyFile(_Section):
    study: _StudySection
    objective: _ObjectiveSection
    search: _SearchSection = Field(default_factory=_SearchSection)
    resources: _ResourcesSection = Field(default_factory=_ResourcesSection)
    early_stopping: _EarlyStoppingSection = Field(default_factory=_EarlyStoppingSection)
    space: dict[str, _Entry]


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "study": _StudySection,
    "objective": _ObjectiveSection,
    "search": _SearchSection,
    "resources": _ResourcesSection,
    "early_stopping": _EarlyStoppingSection,
}
_ENTRY_MODELS: dict[str, type[BaseModel]] = {
    "float": _FloatEntry,
    "int": _IntEntry,
    "choice": _ChoiceEntry,
}


# --------------------------------------------------------------------------------------------
# The validated value objects.


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
      history (see `coordinator.narrowing.resolve_k`).
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

    The defaults were chosen on the search-quality benchmark (BENCHMARKS.md), tuned on half of
    its problems and checked on the other half.
    """

    sampler: str = "sobol"
    rounds: int = 4
    trials_per_round: tuple[int, ...] = (16, 16, 16, 16)
    top_k: int | float | str = "auto"
    margin: float = 0.0
    min_shrink: float = 0.55
    explore: float = 0.05
    min_width: float = 0.02
    lag: int = DEFAULT_LAG

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

    queue: str = "cpu"
    timeout: float = 3600.0
    max_attempts: int = 3
    heartbeat: float = 5.0
    lease: float = 30.0
    retry_failed: bool = False

    @property
    def queue_name(self) -> str:
        return f"trials.{self.queue}"


@dataclass(frozen=True)
class EarlyStopping:
    """When a running trial that asks `trial.should_prune()` is stopped early.

    - `rule`: "halving" (successive halving: at rungs min_step * reduction_factor**k, keep the
      top 1/reduction_factor), "median" (at every reported step from min_step on, keep the
      trials at least as good as the median), or "none".
    - `min_step`: no decision before this step (halving's first rung; 0 counts as 1 there).
    - `reduction_factor`: halving only, the eta of successive halving.
    - `min_trials`: a rung is used only where at least this many completed reference trials
      reported at it (the safety check of `coordinator.pruning`).

    The thresholds are computed by `coordinator.pruning.rungs_for` from a fixed set of
    earlier trials and travel in each trial's message; an objective that never asks is never
    pruned.
    """

    rule: str = "halving"
    min_step: int = 1
    reduction_factor: int = 3
    min_trials: int = 8

    @property
    def enabled(self) -> bool:
        return self.rule != "none"


@dataclass(frozen=True)
class StudySpec:
    """A validated study: what to optimize, over which space, and how to search it."""

    name: str
    direction: str
    objective: ObjectiveSpec
    space: SearchSpace
    seed: int = 0
    description: str = ""
    search: SearchSettings = field(default_factory=SearchSettings)
    resources: Resources = field(default_factory=Resources)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def budget_warning(self, source: str = "<study>") -> str | None:
        """A warning line when the study asks for more than `LARGE_BUDGET` trials in total
        (a typo such as 1e8 trials is accepted otherwise); None for an ordinary budget."""
        search = self.search
        total = search.total_trials
        if total <= LARGE_BUDGET:
            return None
        return (
            f"{source}: [search] trials_per_round x rounds asks for {total:,} trials in total "
            f"({search.rounds} rounds, up to {max(search.trials_per_round):,} trials each), "
            f"more than {LARGE_BUDGET:,}: every trial is a message, a record in Redis and a row "
            "of trials.csv; is that intended?"
        )

    @classmethod
    def from_file(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the study file ({exc.strerror})") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})"
            ) from exc
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_toml(cls, text: str, source: str = "<study>") -> StudySpec:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            hint = " (a key or table given twice?)" if "overwrite" in str(exc) else ""
            raise ConfigError(f"{source}: invalid TOML: {exc}{hint}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<study>") -> StudySpec:
        """Validate a dict of the study file's shape (a parsed file, or `to_dict()` output)."""
        try:
            model = _StudyFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, source)) from exc
        return _build(model, source)

    def to_dict(self) -> dict[str, Any]:
        """The study file's content as plain JSON data; `from_dict` reads it back."""
        search = self.search
        return {
            "study": {
                "name": self.name,
                "direction": self.direction,
                "seed": self.seed,
                "description": self.description,
            },
            "objective": {
                "name": self.objective.name,
                "options": dict(self.objective.options),
                **({"entrypoint": self.objective.entrypoint} if self.objective.entrypoint else {}),
            },
            "search": {
                "sampler": search.sampler,
                "rounds": search.rounds,
                "trials_per_round": list(search.trials_per_round),
                "top_k": search.top_k,
                "margin": search.margin,
                "min_shrink": search.min_shrink,
                "explore": search.explore,
                "min_width": search.min_width,
                "lag": search.lag,
            },
            "resources": {
                "queue": self.resources.queue,
                "timeout": self.resources.timeout,
                "max_attempts": self.resources.max_attempts,
                "heartbeat": self.resources.heartbeat,
                "lease": self.resources.lease,
                "retry_failed": self.resources.retry_failed,
            },
            "early_stopping": {
                "rule": self.early_stopping.rule,
                "min_step": self.early_stopping.min_step,
                "reduction_factor": self.early_stopping.reduction_factor,
                "min_trials": self.early_stopping.min_trials,
            },
            "space": self.space.to_dict(),
        }


# --------------------------------------------------------------------------------------------
# Building and error messages.


def _build(model: _StudyFile, source: str) -> StudySpec:
    problems: list[str] = []
    if not model.space:
        problems.append(f"{source}: [space] needs at least one parameter, got none")
    parameters: list[Parameter] = []
    for name, entry in model.space.items():
        try:
            parameters.append(_parameter(name, entry))
        except ConfigError as exc:
            # A name such as "x\n" is quoted, so that each problem stays on one line.
            key = name if PARAMETER_NAME.fullmatch(name) else json.dumps(name)
            problems.extend(f"{source}: [space.{key}] {p}" for p in exc.problems)

    search = model.search
    tpr = search.trials_per_round
    rounds_tpr = tuple(tpr) if isinstance(tpr, list) else (tpr,) * search.rounds
    if isinstance(tpr, list) and len(tpr) != search.rounds:
        problems.append(
            f"{source}: [search] trials_per_round: needs one entry per round "
            f"(rounds={search.rounds}), got {len(tpr)} entries {tpr!r}"
        )
    if isinstance(search.top_k, int) and rounds_tpr and search.top_k > rounds_tpr[0]:
        problems.append(
            f"{source}: [search] top_k: must not exceed the trials of the first round "
            f"({rounds_tpr[0]}), got top_k={search.top_k}"
        )

    resources = model.resources
    timeout, heartbeat, lease = (
        float(resources.timeout),
        float(resources.heartbeat),
        float(resources.lease),
    )
    if lease < 2 * heartbeat:
        problems.append(
            f"{source}: [resources] lease: must be at least twice the heartbeat "
            f"({heartbeat:g}s) so one missed beat does not expire it, got lease={lease:g}s"
        )

    space: SearchSpace | None = None
    if parameters and not problems:
        try:
            space = SearchSpace(tuple(parameters))
        except ConfigError as exc:
            problems.extend(f"{source}: [space] {p}" for p in exc.problems)
    if problems or space is None:
        raise ConfigError(problems)

    return StudySpec(
        name=model.study.name,
        direction=model.study.direction,
        seed=model.study.seed,
        description=model.study.description,
        objective=ObjectiveSpec(
            name=model.objective.name,
            options=dict(model.objective.options),
            entrypoint=model.objective.entrypoint,
        ),
        space=space,
        search=SearchSettings(
            sampler=search.sampler,
            rounds=search.rounds,
            trials_per_round=rounds_tpr,
            top_k=search.top_k,
            margin=search.margin,
            min_shrink=search.min_shrink,
            explore=search.explore,
            min_width=search.min_width,
            lag=search.lag,
        ),
        resources=Resources(
            queue=resources.queue,
            timeout=timeout,
            max_attempts=resources.max_attempts,
            heartbeat=heartbeat,
            lease=lease,
            retry_failed=resources.retry_failed,
        ),
        early_stopping=EarlyStopping(
            rule=model.early_stopping.rule,
            min_step=model.early_stopping.min_step,
            reduction_factor=model.early_stopping.reduction_factor,
            min_trials=model.early_stopping.min_trials,
        ),
    )


def _parameter(name: str, entry: _FloatEntry | _IntEntry | _ChoiceEntry) -> Parameter:
    if isinstance(entry, _FloatEntry):
        return FloatParameter(name, entry.low, entry.high, entry.scale, entry.step)
    if isinstance(entry, _IntEntry):
        return IntParameter(name, entry.low, entry.high, entry.scale, entry.step)
    return ChoiceParameter(name, tuple(entry.values))


def _describe(exc: ValidationError, source: str) -> list[str]:
    """One line per pydantic error: the file, the [section] and field, what is wrong, the value."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        where, key, model = _locate([str(part) for part in error["loc"]])
        kind = error["type"]
        if kind == "extra_forbidden":
            lines.append(f"{source}: {_unknown_key(where, key, model)}")
        elif kind == "missing":
            lines.append(f"{source}: {where} {key}: missing (required)".replace(":  ", ": "))
        elif kind == "union_tag_invalid":
            tag = str(error.get("ctx", {}).get("tag"))
            close = difflib.get_close_matches(tag, list(_ENTRY_MODELS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(
                f"{source}: {where} type: unknown parameter type {tag!r}, expected 'float', "
                f"'int' or 'choice'{hint}"
            )
        elif kind == "union_tag_not_found":
            lines.append(f"{source}: {where} type: missing (required: 'float', 'int' or 'choice')")
        else:
            message = _message(error["msg"])
            if "got " not in message:
                message += f", got {error.get('input')!r}"
            label = f"{where} {key}:" if key else f"{where}"
            lines.append(f"{source}: {label} {message}".replace(":  ", ": "))
    return lines


def _unknown_key(where: str, key: str, model: type[BaseModel] | None) -> str:
    known = sorted(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(key, known, n=1)
    if not where:
        hint = f"; did you mean [{close[0]}]?" if close else f"; expected one of {known!r}"
        return f"unknown section [{key}]{hint}"
    hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {known!r}"
    return f"{where} unknown key {key!r}{hint}"


def _message(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    return msg[0].lower() + msg[1:] if msg else msg


def _locate(loc: list[str]) -> tuple[str, str, type[BaseModel] | None]:
    """Turn a pydantic location into ('[section]' or '[space.name]', field, model of the table)."""
    if len(loc) <= 1:
        return "", loc[0] if loc else "", _StudyFile
    section = loc[0]
    if section == "space":
        name = loc[1]
        # Once the tag is known the location is ('space', name, tag, field, ...).
        model = _ENTRY_MODELS.get(loc[2]) if len(loc) > 2 else None
        rest = loc[3:] if model is not None else loc[2:]
        return f"[space.{name}]", ".".join(rest), model
    model = _SECTION_MODELS.get(section)
    return f"[{section}]", ".".join(loc[1:]), model
