"""Samplers: `n` points of a search space, or of a box inside it, from a seeded generator.

Every sampler draws an (n, d) array of unit points (one column per parameter, in the space's
sorted order) from a `np.random.Generator`; `sample` maps those points into the box and decodes
them into parameter dicts. Same generator state in, same trials out.

- `random`: independent uniform points (the baseline every tuner is measured against).
- `sobol`: a scrambled Sobol sequence (scipy.stats.qmc): random, but spread more evenly than
  independent points, so no region of the box is left empty by bad luck. Sobol points come in
  powers of two; we draw the next power of two and keep the first n, which are still balanced.
- `lhs`: a Latin hypercube: each parameter's range is cut into n equal slices and every slice is
  used exactly once (each parameter alone is perfectly stratified).
- `grid`: here to show why random search wins. With L = the smallest integer such that
  L**d >= n, each dimension gets L levels at the cell centres (i + 0.5) / L, and n of the L**d
  grid points are picked at random. Every parameter then sees only L distinct values: with
  n = 25 trials over two parameters, 5 learning rates instead of 25.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
import numpy.typing as npt
from scipy.stats import qmc

from common.errors import ConfigError
from common.parameters import ParamValue
from common.space import Box, SearchSpace
from common.study_settings import SAMPLERS

UnitPoints = npt.NDArray[np.float64]

_ENUMERATE_LIMIT = 1 << 20
"""Grids with at most this many points are drawn without replacement from an explicit index."""


def random_points(n: int, d: int, rng: np.random.Generator) -> UnitPoints:
    """n independent uniform points of the unit cube [0, 1)^d."""
    return rng.random((n, d))


def sobol_points(n: int, d: int, rng: np.random.Generator) -> UnitPoints:
    """The first n points of a scrambled Sobol sequence in [0, 1)^d."""
    if n == 0:
        return np.empty((0, d))
    engine = qmc.Sobol(d, scramble=True, rng=rng)
    # random_base2 avoids scipy's warning about sample sizes that are not powers of two.
    points: UnitPoints = engine.random_base2(math.ceil(math.log2(n)))
    return points[:n]


def lhs_points(n: int, d: int, rng: np.random.Generator) -> UnitPoints:
    """n points of a Latin hypercube in [0, 1)^d (each point placed at random in its cell)."""
    if n == 0:
        return np.empty((0, d))
    points: UnitPoints = qmc.LatinHypercube(d, rng=rng).random(n)
    return points


def grid_levels(n: int, d: int) -> int:
    """The number of levels per dimension of the smallest full grid with at least n points."""
    if n <= 1:
        return 1
    root: float = n ** (1.0 / d)
    levels = max(1, round(root))
    while levels**d < n:
        levels += 1
    while levels > 1 and (levels - 1) ** d >= n:
        levels -= 1
    return levels


def grid_points(n: int, d: int, rng: np.random.Generator) -> UnitPoints:
    """n distinct points, chosen at random, of the full grid with `grid_levels(n, d)` levels."""
    levels = grid_levels(n, d)
    if levels**d <= _ENUMERATE_LIMIT:
        flat = rng.choice(levels**d, size=n, replace=False)
        indices = np.stack(np.unravel_index(flat, (levels,) * d), axis=1)
    else:
        # A huge grid (many dimensions): draw cells at random and drop the rare repeats.
        seen: set[tuple[int, ...]] = set()
        rows: list[tuple[int, ...]] = []
        while len(rows) < n:
            for row in map(tuple, rng.integers(0, levels, size=(n, d)).tolist()):
                if row not in seen and len(rows) < n:
                    seen.add(row)
                    rows.append(row)
        indices = np.array(rows, dtype=np.int64).reshape(n, d)
    return (indices.astype(np.float64) + 0.5) / levels


def unit_points(method: str, n: int, d: int, rng: np.random.Generator) -> UnitPoints:
    """n points of [0, 1)^d drawn by the named sampler."""
    if n < 0 or d < 1:
        raise ValueError(f"need n >= 0 and d >= 1, got (n={n}, d={d})")
    if method == "random":
        return random_points(n, d, rng)
    if method == "sobol":
        return sobol_points(n, d, rng)
    if method == "lhs":
        return lhs_points(n, d, rng)
    if method == "grid":
        return grid_points(n, d, rng)
    close = difflib.get_close_matches(method, SAMPLERS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {list(SAMPLERS)!r}"
    raise ConfigError(f"unknown sampler {method!r}{hint}")


def sample(
    space: SearchSpace,
    n: int,
    rng: np.random.Generator,
    *,
    method: str = "sobol",
    box: Box | None = None,
) -> list[dict[str, ParamValue]]:
    """n parameter dicts (keys in sorted order) drawn by `method` inside `box` (default: all).

    Numeric values lie between the values at the ends of the box's interval, on the parameter's
    step; choice values are among the box's allowed values.
    """
    points = unit_points(method, n, len(space), rng)
    return [space.decode(point.tolist(), box) for point in points]
