"""ZoomSearchCV against scikit-learn's RandomizedSearchCV with the same number of fits.

    python -m bench.sklearn_search [--seeds 10] [--rounds 4] [--trials-per-round 8]

An RBF SVC on scikit-learn's digits (1797 images, no download), C ~ loguniform(1e-2, 1e4) and
gamma ~ loguniform(1e-6, 1e0), 3-fold stratified CV on a 70 % training split; the other 30 % is
held out to score the refit best estimator. For each seed both searches get rounds x
trials_per_round candidates (the same number of fits) and the same random_state. ZoomSearchCV
runs on one private redis-server with local workers started once (`worker start
--allow-sklearn-payloads`, 2 processes), RandomizedSearchCV with n_jobs=2; the best CV score,
the held-out accuracy and the wall time of each fit are printed per seed, then their medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import loguniform
from sklearn.datasets import load_digits
from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold, train_test_split
from sklearn.svm import SVC

from zoomtune.common.sklearn_payload import KEY_ENV, new_key
from zoomtune.coordinator.embedded import LocalWorkers
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.sklearn import ZoomSearchCV

SPACE = {"C": loguniform(1e-2, 1e4), "gamma": loguniform(1e-6, 1e0)}


@dataclass(frozen=True)
class Row:
    seed: int
    method: str
    cv_score: float
    test_score: float
    seconds: float


def run_seed(seed: int, rounds: int, per_round: int) -> list[Row]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    searches = {
        "zoomtune": ZoomSearchCV(
            SVC(), SPACE, rounds=rounds, trials_per_round=per_round, cv=cv, random_state=seed
        ),
        "random": RandomizedSearchCV(
            SVC(), SPACE, n_iter=rounds * per_round, cv=cv, random_state=seed, n_jobs=2
        ),
    }
    rows = []
    for method, search in searches.items():
        started = time.perf_counter()
        search.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        test = float(search.score(x_test, y_test))
        rows.append(Row(seed, method, float(search.best_score_), test, seconds))
        print(f"seed {seed} {method:8s} cv {search.best_score_:.4f} test {test:.4f} {seconds:.1f}s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trials-per-round", type=int, default=8)
    args = parser.parse_args()
    key = new_key().hex()
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis").start()
        workers = LocalWorkers(
            broker_url=server.url,
            concurrency=2,
            flags=("--allow-sklearn-payloads",),
            extra_env={KEY_ENV: key},
            log_path=Path(folder) / "workers.log",
        ).start()
        os.environ.update({"ZOOMTUNE_BROKER_URL": server.url, KEY_ENV: key})
        try:
            rows = [
                r
                for s in range(args.seeds)
                for r in run_seed(s, args.rounds, args.trials_per_round)
            ]
        finally:
            workers.stop()
            server.kill()
    fits = args.rounds * args.trials_per_round
    print(f"\nmedians over {args.seeds} seeds, {fits} candidates x 3 folds each")
    print("| method | best CV accuracy | held-out accuracy | wall time (s) |")
    print("|---|---|---|---|")
    for method in ("zoomtune", "random"):
        mine = [r for r in rows if r.method == method]
        print(
            f"| {method} | {statistics.median(r.cv_score for r in mine):.4f} "
            f"| {statistics.median(r.test_score for r in mine):.4f} "
            f"| {statistics.median(r.seconds for r in mine):.1f} |"
        )
    wins = sum(z.cv_score > r.cv_score for z, r in zip(rows[::2], rows[1::2], strict=True))
    print(f"zoomtune's best CV score is higher on {wins} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
