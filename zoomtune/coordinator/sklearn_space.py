"""`ZoomSearchCV`'s `param_distributions`, mapped onto zoomtune's search space with the right
scale.

| given | zoomtune parameter |
|---|---|
| `scipy.stats.loguniform(a, b)` (also `reciprocal`) | float in [a, b], `scale = "log"` |
| `scipy.stats.uniform(loc, scale)` | float in [loc, loc + scale], linear |
| `scipy.stats.randint(low, high)` | int in [low, high - 1] (randint's high is exclusive) |
| a list of strings, numbers or booleans | choice of those values |
| a list holding anything else (estimators, None, tuples) | choice of an index into the list |
| a zoomtune spec: `{"type": "float", "low": 0.9, "high": 0.99, "scale": "reverse_log"}` | as is |
| a `FloatParameter`, `IntParameter` or `ChoiceParameter` | itself, under the dict's key |

Other distributions have no bounded range to narrow and are refused with a message that names
the parameter. Index choices keep their objects in `MappedSpace.choices` (they travel in the
study's payload, never in a message).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoomtune.common.errors import ConfigError, SearchParameterError
from zoomtune.common.parameters import ChoiceParameter, FloatParameter, IntParameter

LOG_NAMES = frozenset({"loguniform", "reciprocal"})


@dataclass(frozen=True)
class MappedSpace:
    """The study file's `[space]` table, and the objects behind index choices."""

    space: Mapping[str, Mapping[str, Any]]
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's params as estimator parameters (index choices become their objects)."""
        return {
            name: self.choices[name][int(value)] if name in self.choices else value
            for name, value in params.items()
        }


def _scalar(value: object) -> object:
    """numpy scalars as Python ones (np.float64(0.1) -> 0.1); other values unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value


def _is_json_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


def _frozen_scipy(name: str, value: Any) -> dict[str, Any]:
    dist = value.dist.name
    low, high = (float(bound) for bound in value.support())
    where = f"param_distributions[{name!r}]"
    if dist in LOG_NAMES:
        if not math.isclose(float(value.median()), math.sqrt(low * high), rel_tol=1e-9):
            raise SearchParameterError(
                f"{where}: a shifted or scaled {dist} (loc/scale) is not log-uniform on its "
                f"range [{low:g}, {high:g}]; give loguniform(low, high) without loc or scale"
            )
        return {"type": "float", "low": low, "high": high, "scale": "log"}
    if dist == "uniform":
        return {"type": "float", "low": low, "high": high, "scale": "linear"}
    if dist == "randint":
        return {"type": "int", "low": int(low), "high": int(high), "scale": "linear"}
    raise SearchParameterError(
        f"{where}: scipy.stats.{dist} is not supported (zoomtune narrows bounded ranges); use "
        "loguniform, uniform, randint, a list of choices or a zoomtune parameter spec such as "
        '{"type": "float", "low": 0.9, "high": 0.999, "scale": "reverse_log"}'
    )


def _entry(name: str, value: Any, choices: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    if isinstance(value, FloatParameter | IntParameter | ChoiceParameter):
        return value.to_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "dist") and hasattr(value, "support") and hasattr(value, "rvs"):
        return _frozen_scipy(name, value)
    if isinstance(value, Sequence | range) and not isinstance(value, str | bytes):
        values = [_scalar(v) for v in value]
        if not values:
            raise SearchParameterError(f"param_distributions[{name!r}]: an empty list of choices")
        if all(_is_json_scalar(v) for v in values):
            return {"type": "choice", "values": values}
        choices[name] = tuple(value)
        return {"type": "choice", "values": list(range(len(values)))}
    if hasattr(value, "tolist") and hasattr(value, "ndim") and value.ndim == 1:  # numpy arrays
        return _entry(name, value.tolist(), choices)
    raise SearchParameterError(
        f"param_distributions[{name!r}]: expected a scipy.stats distribution (loguniform, "
        "uniform, randint), a list of choices or a zoomtune parameter spec, got "
        f"{type(value).__name__} {value!r}"
    )


def map_distributions(param_distributions: object) -> MappedSpace:
    """`param_distributions` as zoomtune's space; SearchParameterError naming each problem."""
    if not isinstance(param_distributions, Mapping):
        kind = "a list of dicts" if isinstance(param_distributions, list) else "a"
        raise SearchParameterError(
            "param_distributions must be a dict of parameter name -> distribution, got "
            f"{kind} {type(param_distributions).__name__}"
            + (" (several subspaces are not supported: run one search each)" if kind != "a" else "")
        )
    if not param_distributions:
        raise SearchParameterError("param_distributions is empty: give at least one parameter")
    choices: dict[str, tuple[Any, ...]] = {}
    space = {}
    for name, value in param_distributions.items():
        if not isinstance(name, str):
            raise SearchParameterError(f"parameter names must be strings, got {name!r}")
        space[name] = _entry(name, value, choices)
    return MappedSpace(space, choices)


def problems_as_error(exc: ConfigError) -> SearchParameterError:
    """A study-validation error about the generated spec, re-labelled for a ZoomSearchCV user."""
    return SearchParameterError(
        [p.replace("<ZoomSearchCV>: [space.", "param_distributions[") for p in exc.problems]
    )
