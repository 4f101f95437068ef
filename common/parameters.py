"""Parameters: float, int and choice, their scales, their conditions, and each one's warp to
and from its unit coordinate (see `common.space` for the unit interval and the whole space).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeAlias

from common.errors import ConfigError
from common.names import PARAMETER_NAME

Choice: TypeAlias = str | int | float | bool
"""A value a choice parameter may take: any JSON scalar."""

ParamValue: TypeAlias = float | int | str | bool

_STEP_TOLERANCE = 1e-9


class Scale(StrEnum):
    """How a numeric parameter's values are spread over its unit coordinate."""

    LINEAR = "linear"
    LOG = "log"
    REVERSE_LOG = "reverse_log"


def _check_name(name: str) -> None:
    if not PARAMETER_NAME.fullmatch(name):
        raise ConfigError(
            f"a parameter name must be an identifier of at most 64 characters "
            f"(letters, digits, '_'), got {name!r}"
        )


def _warp(x: float, scale: Scale) -> float:
    """The coordinate in which `scale` is uniform; increasing in x."""
    if scale is Scale.LOG:
        return math.log(x)
    if scale is Scale.REVERSE_LOG:
        return -math.log1p(-x)
    return x


def _unwarp(w: float, scale: Scale) -> float:
    if scale is Scale.LOG:
        return math.exp(w)
    if scale is Scale.REVERSE_LOG:
        return -math.expm1(-w)
    return w


def _scale(value: object) -> Scale:
    """The `Scale` named by `value`; a plain string such as "log" is accepted too."""
    if isinstance(value, str) and value in {s.value for s in Scale}:
        return Scale(value)
    known = ", ".join(repr(s.value) for s in Scale)
    raise ConfigError(f"scale must be one of {known}, got scale={value!r}")


def _check_finite(**values: float) -> None:
    for key, value in values.items():
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {key}={value!r}")


@dataclass(frozen=True)
class Condition:
    """When a parameter is active: choice parameter `parent` took one of `values`.

    Written `when = { optimizer = "sgd" }` or `when = { optimizer = ["sgd", "adam"] }` in a
    study file. A parameter whose condition fails is *inactive*: it is absent from the trial's
    params. Conditions chain: a parameter is active only if its parent is active too.
    """

    parent: str
    values: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError(f"a condition needs at least one value of {self.parent!r}, got []")

    def holds(self, value: object) -> bool:
        return any(_same_choice(allowed, value) for allowed in self.values)

    def to_dict(self) -> dict[str, Any]:
        value: Any = self.values[0] if len(self.values) == 1 else list(self.values)
        return {self.parent: value}

    def toml(self) -> str:
        """The condition as written in a study file: `{ optimizer = "sgd" }`."""
        return f"{{ {self.parent} = {json.dumps(self.to_dict()[self.parent])} }}"

    def describe(self) -> str:
        """`optimizer = 'sgd'` or `optimizer in ['sgd', 'adam']`, for messages and plans."""
        if len(self.values) == 1:
            return f"{self.parent} = {self.values[0]!r}"
        return f"{self.parent} in {list(self.values)!r}"


def _with_condition(out: dict[str, Any], when: Condition | None) -> dict[str, Any]:
    if when is not None:
        out["when"] = when.to_dict()
    return out


@dataclass(frozen=True)
class FloatParameter:
    """A real-valued parameter in [low, high], optionally restricted to low + k * step."""

    name: str
    low: float
    high: float
    scale: Scale = Scale.LINEAR
    step: float | None = None
    when: Condition | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "scale", _scale(self.scale))
        _check_finite(low=self.low, high=self.high)
        if self.low > self.high:
            raise ConfigError(f"low <= high must hold, got (low={self.low!r}, high={self.high!r})")
        if self.scale is Scale.LOG and self.low <= 0:
            raise ConfigError(f"log scale needs low > 0, got low={self.low!r}")
        if self.scale is Scale.REVERSE_LOG and not (self.low >= 0 and self.high < 1):
            raise ConfigError(
                "reverse_log scale needs 0 <= low <= high < 1 (it samples 1 - value on a log "
                f"scale), got (low={self.low!r}, high={self.high!r})"
            )
        if self.step is not None:
            _check_finite(step=self.step)
            if self.step <= 0:
                raise ConfigError(f"step must be > 0, got step={self.step!r}")
            if self.scale is not Scale.LINEAR:
                raise ConfigError(
                    f"step works only with the linear scale, got scale={self.scale.value!r} "
                    f"with step={self.step!r}"
                )
            cells = (self.high - self.low) / self.step
            if abs(cells - round(cells)) > _STEP_TOLERANCE * max(1.0, cells):
                raise ConfigError(
                    f"high - low must be a multiple of step, got (low={self.low!r}, "
                    f"high={self.high!r}, step={self.step!r}); "
                    f"try high={self.low + math.floor(cells) * self.step!r}"
                )

    @property
    def _edges(self) -> tuple[float, float]:
        half = 0.0 if self.step is None else self.step / 2
        return _warp(self.low - half, self.scale), _warp(self.high + half, self.scale)

    def to_unit(self, value: float) -> float:
        lo, hi = self._edges
        if hi == lo:
            return 0.5
        return min(1.0, max(0.0, (_warp(float(value), self.scale) - lo) / (hi - lo)))

    def from_unit(self, u: float) -> float:
        lo, hi = self._edges
        x = _unwarp(lo + float(u) * (hi - lo), self.scale)
        if self.step is not None:
            # In decimal, so that low=0, step=0.1 gives 0.3 rather than 0.30000000000000004.
            k = round((x - self.low) / self.step)
            x = float(Decimal(repr(float(self.low))) + k * Decimal(repr(float(self.step))))
        return float(min(self.high, max(self.low, x)))

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not (self.low <= value <= self.high):
            return False
        if self.step is None:
            return True
        cells = (value - self.low) / self.step
        return abs(cells - round(cells)) <= 1e-6

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high}
        out["scale"] = self.scale.value
        if self.step is not None:
            out["step"] = self.step
        return _with_condition(out, self.when)


@dataclass(frozen=True)
class IntParameter:
    """An integer parameter in [low, high], restricted to low + k * step."""

    name: str
    low: int
    high: int
    scale: Scale = Scale.LINEAR
    step: int = 1
    when: Condition | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "scale", _scale(self.scale))
        for key in ("low", "high", "step"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} of an int parameter must be an integer, got {value!r}")
        if self.low > self.high:
            raise ConfigError(f"low <= high must hold, got (low={self.low!r}, high={self.high!r})")
        if self.step < 1:
            raise ConfigError(f"step must be >= 1, got step={self.step!r}")
        if self.scale is Scale.REVERSE_LOG:
            raise ConfigError("reverse_log scale is for floats in [0, 1), not int parameters")
        if self.scale is Scale.LOG:
            if self.low < 1:
                raise ConfigError(f"log scale needs low >= 1 for an int, got low={self.low!r}")
            if self.step != 1:
                raise ConfigError(
                    f"step works only with the linear scale, got scale='log' with step={self.step}"
                )
        if (self.high - self.low) % self.step:
            raise ConfigError(
                f"high - low must be a multiple of step, got (low={self.low}, high={self.high}, "
                f"step={self.step}); try high={self.high - (self.high - self.low) % self.step}"
            )

    @property
    def _edges(self) -> tuple[float, float]:
        half = self.step / 2
        return _warp(self.low - half, self.scale), _warp(self.high + half, self.scale)

    def to_unit(self, value: float) -> float:
        lo, hi = self._edges
        return min(1.0, max(0.0, (_warp(float(value), self.scale) - lo) / (hi - lo)))

    def from_unit(self, u: float) -> int:
        lo, hi = self._edges
        x = _unwarp(lo + float(u) * (hi - lo), self.scale)
        k = round((x - self.low) / self.step)
        return int(min(self.high, max(self.low, self.low + k * self.step)))

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return self.low <= value <= self.high and (value - self.low) % self.step == 0

    @property
    def cells(self) -> int:
        """How many values the parameter can take."""
        return (self.high - self.low) // self.step + 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "int", "low": self.low, "high": self.high}
        out["scale"] = self.scale.value
        if self.step != 1:
            out["step"] = self.step
        return _with_condition(out, self.when)


def _same_choice(a: object, b: object) -> bool:
    """Equality that keeps True apart from 1 and 1 apart from 1.0, as JSON does."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class ChoiceParameter:
    """A categorical parameter: one of `values` (JSON scalars, unordered)."""

    name: str
    values: tuple[Choice, ...]
    when: Condition | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not self.values:
            raise ConfigError("a choice parameter needs at least one value, got values=[]")
        for value in self.values:
            if not isinstance(value, str | int | float | bool):
                raise ConfigError(
                    f"choice values must be strings, numbers or booleans, got {value!r}"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"choice values must be finite, got {value!r}")
        for i, value in enumerate(self.values):
            if any(_same_choice(value, other) for other in self.values[:i]):
                raise ConfigError(f"choice values must be distinct, got {value!r} twice")

    def index(self, value: object) -> int:
        for i, candidate in enumerate(self.values):
            if _same_choice(candidate, value):
                return i
        raise ValueError(f"{value!r} is not one of {list(self.values)!r}")

    def to_unit(self, value: Choice) -> float:
        return (self.index(value) + 0.5) / len(self.values)

    def from_unit(self, u: float) -> Choice:
        return self.values[min(int(float(u) * len(self.values)), len(self.values) - 1)]

    def contains(self, value: object) -> bool:
        return any(_same_choice(candidate, value) for candidate in self.values)

    def to_dict(self) -> dict[str, Any]:
        return _with_condition({"type": "choice", "values": list(self.values)}, self.when)


Parameter: TypeAlias = FloatParameter | IntParameter | ChoiceParameter
NumericParameter: TypeAlias = FloatParameter | IntParameter
