"""Narrowing: from the results so far to the box the next round samples (pure functions).

All geometry happens in the unit coordinates of the ORIGINAL space (see `zoomtune.common.space`), so
a box is comparable from round to round and may move outside the previous one when exploration
finds better trials elsewhere.

1. `top_k` keeps the k best completed trials; failed (None), NaN and infinite scores are never
   ranked (scikit-learn issue #20678 once picked a NaN score as the best).
2. `resolve_k` turns the `[search] top_k` setting into a count for the trials completed so far.
3. `narrow` builds the next box: per numeric parameter, the smallest interval centred on the best
   trial that holds every top-k trial once widened by `margin`, then raised to the floors
   (`min_shrink` x the previous width, `min_width`, and one step on each side for integers and
   stepped floats) and slid inside [0, 1]. A choice parameter keeps the values the top-k used,
   refilled from the next best trials so that it too shrinks no faster than `min_shrink`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, TypeGuard

from zoomtune.common.parameters import ChoiceParameter, NumericParameter, ParamValue
from zoomtune.common.space import Box, Interval, Region, SearchSpace

Params: TypeAlias = Mapping[str, ParamValue]
Result: TypeAlias = tuple[Params, float | None]
"""A trial's parameters and its score; None for a failed trial."""


def usable(score: object) -> TypeGuard[float]:
    """Whether a score can be ranked: a finite real number (not None, NaN, inf or a bool)."""
    return isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score)


def top_k(results: Sequence[Result], k: int, maximize: bool) -> list[tuple[Params, float]]:
    """The k best results with a usable score, best first; ties keep their original order."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got k={k}")
    ranked = [(params, float(score)) for params, score in results if usable(score)]
    # sorted() is stable, so equal scores stay in the order they were told.
    ranked.sort(key=lambda item: -item[1] if maximize else item[1])
    return ranked[:k]


def resolve_k(setting: int | float | str, completed: int) -> int:
    """How many top trials define the next box, given the `top_k` setting.

    - an int: that many (or all completed trials, if fewer);
    - a float in (0, 1]: that share of the completed trials, rounded up;
    - "auto": ceil(sqrt(completed) / 4), so k grows slowly with the history: 1 up to 16
      completed trials, 2 up to 64, 3 up to 144, 8 at 1000. A small k lets the box shrink at
      the `min_shrink` rate around the best trial while the top trials agree, and keeps it
      wide where they disagree (the benchmark in BENCHMARKS.md chose it over fixed shares).

    The result is never more than `completed`, and at least 1 when anything completed.
    """
    if completed < 0:
        raise ValueError(f"completed must be >= 0, got {completed}")
    if setting == "auto":
        # ceil(sqrt(n) / 4) in integers: the smallest k with 16 k^2 >= n.
        k = math.isqrt(completed - 1) // 4 + 1 if completed else 0
    elif isinstance(setting, bool) or not isinstance(setting, int | float):
        raise ValueError(f"top_k must be an int, a float in (0, 1] or 'auto', got {setting!r}")
    elif isinstance(setting, int):
        if setting < 1:
            raise ValueError(f"top_k must be >= 1, got {setting}")
        k = setting
    else:
        if not 0 < setting <= 1:
            raise ValueError(f"a top_k fraction must be in (0, 1], got {setting}")
        k = math.ceil(setting * completed - 1e-9)
    return min(completed, max(1, k)) if completed else 0


def narrow(
    space: SearchSpace,
    previous: Box,
    top: Sequence[tuple[Params, Any]],
    *,
    margin: float,
    min_shrink: float,
    min_width: float,
    runners_up: Sequence[tuple[Params, Any]] = (),
    top_k_setting: int | float | str | None = None,
    pruned: Sequence[Params] = (),
) -> Box:
    """The next round's box around `top` (best first), in unit coordinates of the whole space.

    Per numeric parameter the interval:
    - contains every top trial, widened by `margin` x the top trials' spread on each side;
    - is centred on the best trial (so it reaches as far on each side as the farthest top trial);
    - is at least `min_shrink` x the previous box's width, and at least `min_width`;
    - for an integer or stepped float with two or more values, reaches the neighbouring value
      on each side of the best (at least two values stay possible);
    - lies inside [0, 1]: an interval that sticks out is slid back in, and clipped only if it
      is wider than 1.

    A choice parameter keeps, in its declared order, the values the top trials used. Like an
    interval it shrinks no faster than `min_shrink`: it keeps at least `min_shrink` x its
    previous number of values (rounded up), refilled with the values of the best `runners_up`
    (the other completed trials, best first). Without that floor a small k can drop the right
    choice after one round because its trials were unlucky in the other parameters. With
    min_shrink above 0.5 a choice never narrows below its two best values.

    A conditional parameter (one with a `when`) is narrowed from the trials in which it was
    active only: its top trials are the best `resolve_k(top_k_setting, n)` of the n ranked
    trials (`top` then `runners_up`) that have it, n counting the `pruned` trials (early
    stopping) that had it as well, as the search counts them for the box's k (with
    `top_k_setting` None: those of `top` that have it), the rest its runners-up. Fallback:
    when no ranked trial has it, its region is the previous one, unchanged (nothing is known
    about it; it is not narrowed from noise).
    The children of a choice value the box drops stay in the box as they are, unreachable
    (`SearchSpace.reachable`), until the value comes back.

    With no top trials the previous box is returned unchanged.
    """
    if not top:
        return previous
    for name, value in (("margin", margin), ("min_shrink", min_shrink), ("min_width", min_width)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
    regions: dict[str, Region] = {}
    for param in space:
        region = previous[param.name]
        param_top, param_runners_up = top, runners_up
        if param.when is not None:
            param_top, param_runners_up = _active_ranking(
                param.name, top, runners_up, top_k_setting, pruned
            )
            if not param_top:
                regions[param.name] = region
                continue
        values = [params[param.name] for params, _ in param_top]
        if isinstance(param, ChoiceParameter):
            if isinstance(region, Interval):
                raise ValueError(f"the previous box gives {region!r} for choice {param.name!r}")
            # At least min_shrink x the previous count, as for an interval's width.
            keep = max(1, math.ceil(min_shrink * len(region) - 1e-9))
            regions[param.name] = _choices(param, values, param_runners_up, keep)
            continue
        if not isinstance(region, Interval):
            raise ValueError(f"the previous box gives {region!r} for numeric {param.name!r}")
        floor = max(min_shrink * region.width, min_width)
        regions[param.name] = _interval(param, values, floor=floor, margin=margin)
    return Box(regions)


def _active_ranking(
    name: str,
    top: Sequence[tuple[Params, Any]],
    runners_up: Sequence[tuple[Params, Any]],
    setting: int | float | str | None,
    pruned: Sequence[Params],
) -> tuple[Sequence[tuple[Params, Any]], Sequence[tuple[Params, Any]]]:
    """The top trials and runners-up of a conditional parameter: the ranked trials in which it
    was active, split at `resolve_k(setting, n)`, n counting the `pruned` trials in which it
    was active too (setting None: where `top` ends)."""
    if setting is None:
        active_top = [item for item in top if name in item[0]]
        return active_top, [item for item in runners_up if name in item[0]]
    active = [item for item in (*top, *runners_up) if name in item[0]]
    k = resolve_k(setting, len(active) + sum(1 for params in pruned if name in params))
    return active[:k], active[k:]


def _choices(
    param: ChoiceParameter,
    values: Sequence[ParamValue],
    runners_up: Sequence[tuple[Params, Any]],
    keep: int,
) -> tuple[ParamValue, ...]:
    used = {param.index(value) for value in values}
    for params, _ in runners_up:
        if len(used) >= keep:
            break
        used.add(param.index(params[param.name]))
    return tuple(param.values[i] for i in sorted(used))


def _interval(
    param: NumericParameter, values: Sequence[ParamValue], *, floor: float, margin: float
) -> Interval:
    units = [param.to_unit(float(value)) for value in values]
    best = units[0]
    spread = max(units) - min(units)
    low, high = min(units) - margin * spread, max(units) + margin * spread
    half = max(best - low, high - best, floor / 2, _neighbour_distance(param, values[0]))
    return _inside_unit(best - half, best + half)


def _neighbour_distance(param: NumericParameter, value: ParamValue) -> float:
    """How far, in unit coordinates, the farther neighbouring value of `value` lies (0: none)."""
    step = param.step
    if step is None or param.low == param.high:
        return 0.0
    here = param.to_unit(float(value))
    distances = [
        abs(param.to_unit(neighbour) - here)
        for neighbour in (float(value) - step, float(value) + step)
        if param.low - step / 2 <= neighbour <= param.high + step / 2
    ]
    return max(distances, default=0.0)


def _inside_unit(low: float, high: float) -> Interval:
    """[low, high] slid inside [0, 1] without changing its width (clipped if wider than 1)."""
    width = high - low
    if width >= 1.0:
        return Interval(0.0, 1.0)
    if low < 0.0:
        low, high = 0.0, width
    elif high > 1.0:
        low, high = 1.0 - width, 1.0
    return Interval(max(0.0, low), min(1.0, high))
