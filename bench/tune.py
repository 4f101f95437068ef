"""How the `[search]` defaults were chosen: a sweep over knob values on the TUNING half only.

    python -m bench.tune                      # the sweep used for the defaults (~10 min)
    python -m bench.tune --group check        # the same sweep on the held-out half (a check)

Problems are split in two (`Problem.group`): the defaults are picked on the "tune" problems with
seeds 1000 and up, and `bench.run` reports all problems with seeds 0 and up. Each configuration
changes the defaults by the given `[search]` keys; it is scored by the geometric mean over
(problem, setting) rows of its mean-regret ratio against random search and against batched TPE,
both measured in the same run on the same seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.problems import problems
from bench.run import SETTINGS, Task, regrets, run_all, win_rate
from zoomtune.common.study_settings import SearchSettings

SWEEP: dict[str, Sequence[Any]] = {
    "top_k": ("auto", 1, 3, 0.05, 0.15),
    "margin": (0.0, 0.1, 0.25),
    "min_shrink": (0.5, 0.55, 0.6, 0.7),
    "explore": (0.0, 0.05, 0.1, 0.2),
}


def configs(sweep: Mapping[str, Sequence[Any]]) -> list[tuple[tuple[str, Any], ...]]:
    keys = sorted(sweep)
    return [
        tuple(zip(keys, values, strict=True))
        for values in itertools.product(*(sweep[k] for k in keys))
    ]


def score(
    reg: Mapping[tuple[str, int, int, str], Mapping[int, float]],
    names: Sequence[str],
    method: str,
    base: str,
) -> tuple[float, float]:
    """(geometric mean of mean-regret ratios, average win rate) of `method` against `base`."""
    logs: list[float] = []
    wins: list[float] = []
    for name in names:
        for q, rounds in SETTINGS:
            ours, theirs = reg[(name, q, rounds, method)], reg[(name, q, rounds, base)]
            a, b = statistics.mean(ours.values()), statistics.mean(theirs.values())
            logs.append(math.log(max(a, 1e-12) / max(b, 1e-12)))
            wins.append(win_rate(ours, theirs))
    return math.exp(statistics.mean(logs)), statistics.mean(wins)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="tune", choices=("tune", "check"))
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--sweep", help="JSON {key: [values]} replacing the built-in sweep")
    parser.add_argument("--top", type=int, default=20, help="how many configurations to print")
    args = parser.parse_args(argv)
    sweep = json.loads(args.sweep) if args.sweep else SWEEP

    chosen = [p for p in problems() if p.group == args.group and p.optimum is not None]
    names = [p.name for p in chosen]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [
        Task(p.name, q, rounds, method, seed)
        for p in chosen
        for q, rounds in SETTINGS
        for method in ("random", "tpe")
        for seed in seeds
    ]
    candidates = configs(sweep)
    for i, config in enumerate(candidates):
        tasks += [
            Task(p.name, q, rounds, f"c2f#{i}", seed, config)
            for p in chosen
            for q, rounds in SETTINGS
            for seed in seeds
        ]
    results = run_all(tasks, args.jobs)
    reg = regrets(results, {p.name: p.optimum for p in chosen})
    rows = []
    for i, config in enumerate(candidates):
        vs_random = score(reg, names, f"c2f#{i}", "random")
        vs_tpe = score(reg, names, f"c2f#{i}", "tpe")
        rows.append((vs_tpe[0], vs_random[0], vs_tpe[1], vs_random[1], dict(config)))
    rows.sort(key=lambda row: row[0] * row[1])
    defaults = SearchSettings()
    print(f"{len(rows)} configurations on {names}, seeds {seeds.start}-{seeds.stop - 1}")
    print("rank ratio/tpe ratio/random wins/tpe wins/random config")
    for rank, row in enumerate(rows, 1):
        mark = " <- defaults" if all(getattr(defaults, k) == v for k, v in row[4].items()) else ""
        if rank <= args.top or mark:
            print(
                f"{rank:4} {row[0]:9.3f} {row[1]:12.3f} {row[2]:8.0%} {row[3]:11.0%} {row[4]}{mark}"
            )
    print("best rank and ratio/tpe of each knob value (the other knobs at their best):")
    for key in sorted(sweep):
        cells = []
        for value in sweep[key]:
            rank, row = next((i, r) for i, r in enumerate(rows, 1) if r[4][key] == value)
            cells.append(f"{value!r}: #{rank} {row[0]:.3f}")
        print(f"  {key}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
