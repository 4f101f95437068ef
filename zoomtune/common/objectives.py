"""The names of the objectives every worker has built in, for the coordinator to check against.

The coordinator never imports worker code, yet on the embedded default it starts the workers
itself and so knows exactly what they can run: the built-ins, plus the study's own entrypoint.
A study naming anything else would wait forever for a worker that never comes, so `plan` and
`start` refuse it up front. On a cluster the workers may register more (`worker start
--objective`, entry points), so there the coordinator cannot tell; a worker that lacks the
objective records the refusal on the trial instead (`StudyStore.reject`).

`zoomtune.workers.registry.BUILTINS` maps the same names to their functions; a test keeps the two
equal.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

BUILTIN_OBJECTIVES = frozenset(
    {
        "branin",
        "hartmann6",
        "quadratic",
        "sklearn-mlp-digits",
        "sklearn-svc-digits",
        "sleep",
        "synthetic-training",
        "torch-mlp-digits",
    }
)
"""Objective names that every `worker start` registers without being told."""

BUILTIN_OPTIONS: Mapping[str, frozenset[str]] = {
    "branin": frozenset({"duration"}),
    "hartmann6": frozenset({"duration"}),
    "quadratic": frozenset({"duration", "optimum", "log"}),
    "sklearn-mlp-digits": frozenset({"duration", "seed", "validation", "max_iter"}),
    "sklearn-svc-digits": frozenset({"duration", "seed", "validation"}),
    "sleep": frozenset({"duration"}),
    "synthetic-training": frozenset({"epochs", "scale", "curve"}),
    "torch-mlp-digits": frozenset({"seed", "threads", "validation", "epochs"}),
}
"""The `[objective] options` each built-in objective reads (zoomtune/workers/objectives/; a test
keeps them equal). Any other is a mistake that would be ignored, or fail every trial, so a study
file naming one is refused up front."""


def unknown_option_problems(name: str, options: Mapping[str, object]) -> list[str]:
    """Why `options` do not suit the built-in objective `name` (one line each), or []."""
    known = BUILTIN_OPTIONS.get(name)
    if known is None:
        return []
    problems = []
    for option in sorted(set(options) - known):
        close = difflib.get_close_matches(option, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(
            f"unknown option {option!r} for the built-in objective {name!r}; {hint}"
            f"it reads {', '.join(sorted(known))}"
        )
    return problems
