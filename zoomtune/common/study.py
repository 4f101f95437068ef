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
speculate = true                # idle slots run the next rounds ahead, re-run where they change

[resources]                     # every key has a default
queue = "cpu"                   # cpu | gpu
timeout = "10m"                 # hard time limit of one trial (default 1h)
max_attempts = 3                # runs of a trial whose worker was lost, before it is FAILED
heartbeat = "5s"                # how often a running trial renews its lease
lease = "30s"                   # a lease not renewed this long has expired: the trial is re-run
retry_failed = false            # also retry trials whose objective raised or returned NaN

[early_stopping]                # every key has a default; see zoomtune.coordinator.pruning
rule = "halving"                # halving | median | none
min_step = 1                    # no trial is pruned before this step
reduction_factor = 3            # halving: keep the top 1/reduction_factor at each rung
min_trials = 8                  # a rung needs this many completed reference trials

[space]
learning_rate = { type = "float", low = 1e-5, high = 1e-1, scale = "log" }
optimizer = { type = "choice", values = ["sgd", "adam"] }
momentum = { type = "float", low = 0.5, high = 0.99, when = { optimizer = "sgd" } }  # sgd only
```

pydantic checks the shape (types, unknown keys, missing keys); the value objects of
`zoomtune.common.space` check the meaning (low <= high, log scale needs low > 0...). Every problem
is reported at once, each naming the file, the field and the bad value.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zoomtune.common.errors import ConfigError
from zoomtune.common.names import PARAMETER_NAME
from zoomtune.common.parameters import (
    ChoiceParameter,
    Condition,
    FloatParameter,
    IntParameter,
    Parameter,
)
from zoomtune.common.space import SearchSpace, condition_problems
from zoomtune.common.study_file import ChoiceEntry, FloatEntry, IntEntry, StudyFile, describe
from zoomtune.common.study_settings import EarlyStopping, ObjectiveSpec, Resources, SearchSettings

LARGE_BUDGET = 100_000
"""A study of more trials in total is accepted with a warning (`budget_warning`): each trial is
a message to publish, a record in Redis and a row of trials.csv, and a round of 100,000 takes
minutes to publish."""


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
            model = StudyFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe(exc, source)) from exc
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
            "search": {**asdict(search), "trials_per_round": list(search.trials_per_round)},
            "resources": asdict(self.resources),
            "early_stopping": asdict(self.early_stopping),
            "space": self.space.to_dict(),
        }


def _build(model: StudyFile, source: str) -> StudySpec:
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
    before_last = sum(rounds_tpr[:-1])
    if len(rounds_tpr) == search.rounds > 1 and search.lag >= before_last:
        problems.append(
            f"{source}: [search] lag: a round is narrowed from the trials numbered below its "
            f"first trial minus lag, and the last round's first trial is {before_last}, so lag "
            f"{search.lag} leaves every round nothing to narrow from (a random search); use a "
            f"lag below {before_last} (0, the default: each round waits for all earlier trials)"
        )
    if isinstance(search.top_k, int) and rounds_tpr and search.top_k > rounds_tpr[0]:
        problems.append(
            f"{source}: [search] top_k: must not exceed the trials of the first round "
            f"({rounds_tpr[0]}), got top_k={search.top_k}"
        )

    resources = Resources(**model.resources.model_dump())
    heartbeat, lease = resources.heartbeat, resources.lease
    if lease < 2 * heartbeat:
        problems.append(
            f"{source}: [resources] lease: must be at least twice the heartbeat "
            f"({heartbeat:g}s) so one missed beat does not expire it, got lease={lease:g}s"
        )

    for name, message in condition_problems(parameters):
        problems.append(f"{source}: [space.{name}] when: {message}")

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
        objective=ObjectiveSpec(**model.objective.model_dump()),
        space=space,
        search=SearchSettings(**{**search.model_dump(), "trials_per_round": rounds_tpr}),
        resources=resources,
        early_stopping=EarlyStopping(**model.early_stopping.model_dump()),
    )


def _parameter(name: str, entry: FloatEntry | IntEntry | ChoiceEntry) -> Parameter:
    when = _condition(entry.when)
    if isinstance(entry, FloatEntry):
        return FloatParameter(name, entry.low, entry.high, entry.scale, entry.step, when)
    if isinstance(entry, IntEntry):
        return IntParameter(name, entry.low, entry.high, entry.scale, entry.step, when)
    return ChoiceParameter(name, tuple(entry.values), when)


def _condition(when: Mapping[str, Any] | None) -> Condition | None:
    """`when = { optimizer = "sgd" }` (or a list of values) as a `Condition`; whether the
    parent exists and has those values is checked with the whole space (`condition_problems`)."""
    if when is None:
        return None
    if len(when) != 1:
        raise ConfigError(
            "when: a condition names exactly one choice parameter and its value(s), e.g. "
            f'when = {{ optimizer = "sgd" }}, got when = {json.dumps(dict(when))}'
        )
    ((parent, value),) = when.items()
    values = tuple(value) if isinstance(value, list) else (value,)
    if not values or not all(isinstance(v, str | int | float | bool) for v in values):
        raise ConfigError(
            "when: the value of a condition is a choice value or a non-empty list of them, "
            f"got when = {{ {parent} = {json.dumps(value, default=repr)} }}"
        )
    return Condition(parent, values)
