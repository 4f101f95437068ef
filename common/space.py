"""Search spaces: parameters, their scales, and the warp to and from the unit interval.

Every parameter maps its values onto [0, 1] (its *unit coordinate*) so that equal lengths of the
unit interval are equally worth exploring:

- `linear`: uniform in the value.
- `log`: uniform in log(value), so every decade of a learning rate gets the same share.
- `reverse_log`: uniform in log(1 - value), for values close to 1 such as a momentum beta in
  [0.9, 0.999]: 0.9 -> 0.9005 barely matters, while 0.999 -> 0.9995 halves the averaging window.

Integers and stepped floats own a cell of the unit interval each (the interval runs from half a
step below `low` to half a step above `high`), so every allowed value is equally likely under a
linear scale. A choice parameter splits the unit interval into one equal cell per value.

Samplers and the coarse-to-fine narrowing work only in unit coordinates; a `Box` is a region of
them (an interval per numeric parameter, a subset of the values per choice parameter).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError
from common.parameters import (
    Choice,
    ChoiceParameter,
    IntParameter,
    Parameter,
    ParamValue,
)


@dataclass(frozen=True)
class Interval:
    """A closed interval of a numeric parameter's unit coordinate: 0 <= low <= high <= 1."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high <= 1.0):
            raise ConfigError(
                f"an interval needs 0 <= low <= high <= 1, got (low={self.low!r}, "
                f"high={self.high!r})"
            )

    @property
    def width(self) -> float:
        return self.high - self.low


Region: TypeAlias = Interval | tuple[Choice, ...]
"""The part of one parameter a box covers: an interval, or the allowed choices."""


@dataclass(frozen=True)
class Box:
    """A region of a search space in unit coordinates, one `Region` per parameter.

    A box keeps a region for every parameter, even for the children of a choice branch the box
    has pruned (so the region is there again if the branch comes back); `to_dict` leaves those
    out, as `SearchSpace.reachable` says.
    """

    regions: Mapping[str, Region]

    def __getitem__(self, name: str) -> Region:
        return self.regions[name]

    def to_dict(self, space: SearchSpace) -> dict[str, dict[str, Any]]:
        """JSON form with both the unit interval and the values it spans, for people and files."""
        out: dict[str, dict[str, Any]] = {}
        reachable = space.reachable(self)
        for param in space:
            if param.name not in reachable:
                continue  # a child of a pruned choice branch: it left the box with the branch
            region = self.regions[param.name]
            if isinstance(region, Interval):
                if isinstance(param, ChoiceParameter):
                    raise ConfigError(f"box gives an interval for choice parameter {param.name!r}")
                out[param.name] = {
                    "unit_low": region.low,
                    "unit_high": region.high,
                    "low": param.from_unit(region.low),
                    "high": param.from_unit(region.high),
                }
            else:
                out[param.name] = {"values": list(region)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Box:
        regions: dict[str, Region] = {}
        for name, entry in data.items():
            if "values" in entry:
                regions[name] = tuple(entry["values"])
            else:
                regions[name] = Interval(float(entry["unit_low"]), float(entry["unit_high"]))
        return cls(regions)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, kept sorted by name so every dict and array has one order."""

    parameters: tuple[Parameter, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.parameters:
            raise ConfigError("a search space needs at least one parameter")
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"parameter names must be unique, got {duplicates!r} twice")
        object.__setattr__(self, "parameters", tuple(sorted(self.parameters, key=lambda p: p.name)))
        problems = condition_problems(self.parameters)
        if problems:
            raise ConfigError([f"{name}: when: {message}" for name, message in problems])

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __getitem__(self, name: str) -> Parameter:
        for param in self.parameters:
            if param.name == name:
                return param
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def whole_box(self) -> Box:
        """The box that covers the entire space."""
        regions: dict[str, Region] = {}
        for param in self.parameters:
            if isinstance(param, ChoiceParameter):
                regions[param.name] = param.values
            else:
                regions[param.name] = Interval(0.0, 1.0)
        return Box(regions)

    def decode(self, point: Sequence[float], box: Box | None = None) -> dict[str, ParamValue]:
        """Turn a point of the unit cube into parameter values inside `box` (default: all)."""
        if len(point) != len(self.parameters):
            raise ValueError(f"expected a point of {len(self.parameters)} coordinates")
        box = box or self.whole_box()
        params: dict[str, ParamValue] = {}
        for param, u in zip(self.parameters, point, strict=True):
            region = box[param.name]
            if isinstance(param, ChoiceParameter):
                allowed = param.values if isinstance(region, Interval) else region
                params[param.name] = allowed[min(int(float(u) * len(allowed)), len(allowed) - 1)]
            else:
                interval = region if isinstance(region, Interval) else Interval(0.0, 1.0)
                params[param.name] = param.from_unit(interval.low + float(u) * interval.width)
        if not self.conditional:
            return params
        # Every coordinate is decoded, then the inactive ones are dropped: the draw (and so its
        # coverage) stays a function of the seed, whatever the choices turn out to be.
        return {name: value for name, value in params.items() if self.is_active(name, params)}

    def to_unit(
        self, params: Mapping[str, Any], *, inactive: float = -1.0
    ) -> npt.NDArray[np.float64]:
        """The unit coordinates of a parameter dict, in the space's (sorted) order; a parameter
        absent from `params` (inactive) gets the coordinate `inactive`."""
        return np.array(
            [p.to_unit(params[p.name]) if p.name in params else inactive for p in self.parameters],
            dtype=np.float64,
        )

    def problems(self, params: Mapping[str, Any]) -> list[str]:
        """Why `params` is not a point of this space: missing, unknown or out-of-range values."""
        found: list[str] = []
        for name in sorted(set(params) - set(self.names)):
            found.append(f"unknown parameter {name!r}")
        for param in self.parameters:
            if not self.is_active(param.name, params):
                if param.name in params and param.when is not None:
                    found.append(
                        f"{param.name}={params[param.name]!r} is given but inactive (it applies "
                        f"only when {self.chain(param.name)})"
                    )
                continue
            if param.name not in params:
                found.append(f"missing parameter {param.name!r}")
            elif not param.contains(params[param.name]):
                found.append(f"{param.name}={params[param.name]!r} is outside {param.to_dict()!r}")
        return found

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.parameters}

    # -- conditions ------------------------------------------------------------------------------

    @property
    def conditional(self) -> bool:
        """Whether some parameter has a `when` condition."""
        return any(p.when is not None for p in self.parameters)

    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether parameter `name` applies, given the choice values in `params`: every
        condition on the way up its chain holds (an absent parent counts as failing)."""
        condition = self[name].when
        while condition is not None:
            if not condition.holds(params.get(condition.parent, _ABSENT)):
                return False
            condition = self[condition.parent].when
        return True

    def chain(self, name: str) -> str:
        """The conditions that make `name` active, e.g. "solver = 'sgd' and schedule = 'step'"."""
        parts: list[str] = []
        condition = self[name].when
        while condition is not None:
            parts.insert(0, condition.describe())
            condition = self[condition.parent].when
        return " and ".join(parts)

    def reachable(self, box: Box) -> tuple[str, ...]:
        """The parameters that can be active inside `box`: for each condition up the chain, the
        box keeps at least one of the values it needs. The children of a pruned branch leave."""
        found: list[str] = []
        for param in self.parameters:
            condition = param.when
            while condition is not None:
                region = box[condition.parent]
                if isinstance(region, Interval) or not any(condition.holds(v) for v in region):
                    break
                condition = self[condition.parent].when
            else:
                found.append(param.name)
        return tuple(found)

    def children(self, name: str | None) -> tuple[Parameter, ...]:
        """The parameters whose condition names `name` (None: those without a condition)."""
        if name is None:
            return tuple(p for p in self.parameters if p.when is None)
        return tuple(p for p in self.parameters if p.when is not None and p.when.parent == name)

    def tree(self) -> list[tuple[int, Parameter]]:
        """Every parameter with its depth, depth first: the unconditional ones by name, each
        followed by the parameters conditioned on it (depth + 1), and so on down the chains."""
        out: list[tuple[int, Parameter]] = []

        def visit(name: str | None, depth: int) -> None:
            for param in self.children(name):
                out.append((depth, param))
                visit(param.name, depth + 1)

        visit(None, 0)
        return out


_ABSENT = object()


def condition_problems(parameters: Sequence[Parameter]) -> list[tuple[str, str]]:
    """What is wrong with the `when` conditions of `parameters`, as (parameter name, message):
    a condition on an unknown or non-choice parameter, on a value the choice does not have, or
    conditions that form a cycle."""
    by_name = {p.name: p for p in parameters}
    found: list[tuple[str, str]] = []
    for param in parameters:
        condition = param.when
        if condition is None:
            continue
        written = f"got when = {condition.toml()}"
        parent = by_name.get(condition.parent)
        if parent is None:
            close = difflib.get_close_matches(condition.parent, list(by_name), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            found.append(
                (
                    param.name,
                    f"{condition.parent!r} is not a parameter of the space, {written}{hint}",
                )
            )
        elif not isinstance(parent, ChoiceParameter):
            kind = "an int" if isinstance(parent, IntParameter) else "a float"
            found.append(
                (
                    param.name,
                    f"a condition needs a choice parameter, {condition.parent!r} is {kind} "
                    f"parameter, {written}",
                )
            )
        else:
            for value in condition.values:
                if not parent.contains(value):
                    found.append(
                        (
                            param.name,
                            f"{value!r} is not a value of choice {parent.name!r} "
                            f"(values {list(parent.values)!r}), {written}",
                        )
                    )
    for param in parameters:
        path = [param.name]
        condition = param.when
        while condition is not None and condition.parent in by_name:
            if condition.parent == param.name:
                cycle = " -> ".join([*path, param.name])
                found.append((param.name, f"conditions form a cycle: {cycle}"))
                break
            if condition.parent in path:
                break  # a cycle further up: reported for the parameters on it
            path.append(condition.parent)
            condition = by_name[condition.parent].when
    return found
