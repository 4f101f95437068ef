"""Study records made in-process: the real search (`CoarseToFine`) run on a Python function,
recorded exactly as the round loop stores it, for fast tests of status, importance and report.
The real-Redis, real-worker path is covered by test_observe.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from zoomtune.common.store_records import RoundRecord
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialStatus
from zoomtune.coordinator.export import StudyRecord
from zoomtune.coordinator.search import CoarseToFine


def simulate(
    spec: StudySpec, objective: Callable[[Mapping[str, Any]], float | None]
) -> StudyRecord:
    """Run every round of `spec` on `objective` (None or NaN: a failed trial)."""
    search = CoarseToFine(spec)
    rounds: list[RoundRecord] = []
    trials: list[Trial] = []
    while batch := search.ask():
        number = search.round
        rounds.append(RoundRecord(number, search.box.to_dict(spec.space), len(trials), len(batch)))
        told: list[tuple[Mapping[str, Any], float | None]] = []
        for params in batch:
            score = objective(params)
            ok = score is not None and math.isfinite(score)
            started = 1_800_000_000.0 + len(trials)
            trials.append(
                Trial(
                    study=spec.name,
                    number=len(trials),
                    round=number,
                    params=params,
                    status=TrialStatus.COMPLETE if ok else TrialStatus.FAILED,
                    score=score if ok else None,
                    error=None if ok else "objective returned NaN",
                    worker="w1@host",
                    host="host",
                    device="cpu",
                    queued_at=started - 1,
                    started_at=started,
                    finished_at=started + 0.5,
                )
            )
            told.append((params, score if ok else None))
        search.tell(told)
    return StudyRecord(spec, "complete", tuple(rounds), tuple(trials))


def nn_like(params: Mapping[str, Any]) -> float | None:
    """A validation accuracy shaped like a small network's: the learning rate decides most
    (best near 0.03, diverging above 0.5), momentum and width a little, the rest barely."""
    lr = float(params["learning_rate"])
    if lr > 0.5:
        return None  # diverged
    accuracy = 0.97 - 0.09 * (math.log10(lr) - math.log10(0.03)) ** 2
    accuracy -= 0.01 * abs(math.log10(1 - float(params.get("momentum", 0.9))) + 1)
    accuracy -= 0.005 * abs(math.log2(float(params.get("hidden_units", 64)) / 64))
    return max(0.1, accuracy)


NN_SPACE = """
learning_rate = { type = "float", low = 1e-5, high = 1.0, scale = "log" }
momentum      = { type = "float", low = 0.5, high = 0.999, scale = "reverse_log" }
hidden_units  = { type = "int", low = 16, high = 256, scale = "log" }
layers        = { type = "int", low = 1, high = 3 }
lr_schedule   = { type = "choice", values = ["constant", "invscaling", "adaptive"] }
"""
