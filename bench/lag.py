"""Search quality of rolling rounds: coarse to fine at `[search] lag` L against lag 0 (the
round barrier), at equal trials and rounds, on the synthetic problems of the search-quality
benchmark (bench.problems; the scikit-learn MLP is left out for time).

    python -m bench.lag --lags 0,8,16,24 --seeds 20

Prints, per lag and budget, the geometric mean over problems of the ratio of median regrets
(lag L / lag 0; below 1: better than the barrier) and how many problems it is no worse on.
Regret is the best value found minus the best value any run of that problem found.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence

from bench.problems import problems
from bench.run import Task, regrets, run_all


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lags", default="0,8,16,24")
    parser.add_argument("--budgets", default="16x6,8x12,32x3,8x8")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    lags = [int(x) for x in args.lags.split(",")]
    budgets = [tuple(int(v) for v in b.split("x")) for b in args.budgets.split(",")]
    chosen = [p for p in problems() if p.name != "mlp_digits"]
    tasks = [
        Task(p.name, q, rounds, f"c2f#{lag}", seed, (("lag", lag),))
        for p in chosen
        for q, rounds in budgets
        for lag in lags
        for seed in range(args.seeds)
    ]
    results = run_all(tasks, args.jobs)
    # Regret against the best any run found (not the known optimum: the ratio is what counts).
    table = regrets(results, {p.name: None for p in chosen})
    for q, rounds in budgets:
        for lag in lags[1:]:
            ratios = []
            for p in chosen:
                ours = statistics.median(table[(p.name, q, rounds, f"c2f#{lag}")].values())
                base = statistics.median(table[(p.name, q, rounds, f"c2f#{lags[0]}")].values())
                ratios.append((ours + 1e-12) / (base + 1e-12))
            geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
            no_worse = sum(r <= 1.0 for r in ratios)
            print(
                f"{q}x{rounds} lag {lag:>2} vs {lags[0]}: geometric mean of median-regret "
                f"ratios {geo:.3f}, no worse on {no_worse}/{len(ratios)} problems "
                f"(median ratio {statistics.median(ratios):.3f})"
            )


if __name__ == "__main__":
    main()
