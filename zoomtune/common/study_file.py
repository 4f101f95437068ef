"""The shape of a study file, checked by pydantic, and the messages for what is wrong in it.

Private to `zoomtune.common.study`: one model per table, defaults taken from
`zoomtune.common.study_settings` (where each setting is documented), and `describe`, which turns
pydantic's errors into one line per problem naming the file, the [table] and key, what is wrong and
the bad value.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from zoomtune.common.names import (
    ENTRYPOINT,
    OBJECTIVE_NAME,
    OBJECTIVE_NAME_RULE,
    STUDY_NAME,
    STUDY_NAME_RULE,
)
from zoomtune.common.parameters import Scale
from zoomtune.common.settings import QueueKind
from zoomtune.common.study_settings import (
    EarlyStopping,
    PruningRule,
    Resources,
    SamplerName,
    SearchSettings,
    parse_duration,
)


def _matching(pattern: re.Pattern[str], value: str, rule: str) -> str:
    """`value` if all of it matches `pattern`; else a ValueError that states `rule`."""
    if not pattern.fullmatch(value):
        raise ValueError(f"{rule}, got {value!r}")
    return value


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
        return _matching(STUDY_NAME, value, STUDY_NAME_RULE)


class _ObjectiveSection(_Section):
    name: str
    options: dict[str, JsonValue] = Field(default_factory=dict)
    entrypoint: str | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return _matching(OBJECTIVE_NAME, value, OBJECTIVE_NAME_RULE)

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, value: str | None) -> str | None:
        if value is not None and not ENTRYPOINT.fullmatch(value):
            raise ValueError(
                f"expected 'module:function' or 'path/to/file.py:function', got {value!r}"
            )
        return value


class _SearchSection(_Section):
    sampler: SamplerName = SearchSettings.sampler
    rounds: Annotated[int, Field(ge=1, le=1000)] = SearchSettings.rounds
    trials_per_round: Any = SearchSettings.trials_per_round[0]  # int | list[int], checked below
    top_k: Any = SearchSettings.top_k  # int | float | "auto", checked below
    margin: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = SearchSettings.margin
    min_shrink: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = SearchSettings.min_shrink
    explore: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = SearchSettings.explore
    min_width: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = SearchSettings.min_width
    lag: Annotated[int, Field(ge=0, le=1_000_000, strict=True)] = SearchSettings.lag
    speculate: Annotated[bool, Field(strict=True)] = SearchSettings.speculate

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
    queue: QueueKind = Resources.queue
    timeout: str | float = Resources.timeout
    max_attempts: Annotated[int, Field(ge=1, le=100)] = Resources.max_attempts
    heartbeat: str | float = Resources.heartbeat
    lease: str | float = Resources.lease
    retry_failed: bool = Resources.retry_failed

    @field_validator("timeout", "heartbeat", "lease", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        # Before pydantic's own checks, so that a bad value gets one message, not one per type.
        return parse_duration(value)


class _EarlyStoppingSection(_Section):
    rule: PruningRule = EarlyStopping.rule
    min_step: Annotated[int, Field(ge=0, le=1_000_000_000)] = EarlyStopping.min_step
    reduction_factor: Annotated[int, Field(ge=2, le=1000)] = EarlyStopping.reduction_factor
    min_trials: Annotated[int, Field(ge=2, le=1_000_000)] = EarlyStopping.min_trials


class FloatEntry(_Section):
    type: Literal["float"]
    low: float
    high: float
    scale: Annotated[Scale, Field(strict=False)] = Scale.LINEAR
    step: float | None = None
    when: dict[str, Any] | None = None  # checked by zoomtune.common.study and zoomtune.common.space


class IntEntry(_Section):
    type: Literal["int"]
    low: int
    high: int
    scale: Annotated[Scale, Field(strict=False)] = Scale.LINEAR
    step: int = 1
    when: dict[str, Any] | None = None  # checked by zoomtune.common.study and zoomtune.common.space


class ChoiceEntry(_Section):
    type: Literal["choice"]
    values: list[Any]  # each value is checked by ChoiceParameter
    when: dict[str, Any] | None = None  # checked by zoomtune.common.study and zoomtune.common.space


_Entry = Annotated[FloatEntry | IntEntry | ChoiceEntry, Field(discriminator="type")]


class StudyFile(_Section):
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
    "float": FloatEntry,
    "int": IntEntry,
    "choice": ChoiceEntry,
}


def describe(exc: ValidationError, source: str) -> list[str]:
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
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            got = error.get("input")
            if where and key:  # a field of a table, e.g. [objective] options
                lines.append(
                    f"{source}: {where} {key}: expected a table ({key} = {{ ... }}), got {got!r}"
                )
            else:  # a whole section, e.g. [search], or a [space.name] entry
                table = where or f"[{key}]"
                lines.append(
                    f"{source}: {table} must be a table ({table} on a line of its own, then "
                    f"key = value lines), got {got!r}"
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
        return "", loc[0] if loc else "", StudyFile
    section = loc[0]
    if section == "space":
        name = loc[1]
        # Once the tag is known the location is ('space', name, tag, field, ...).
        model = _ENTRY_MODELS.get(loc[2]) if len(loc) > 2 else None
        rest = loc[3:] if model is not None else loc[2:]
        return f"[space.{name}]", ".".join(rest), model
    model = _SECTION_MODELS.get(section)
    return f"[{section}]", ".".join(loc[1:]), model
