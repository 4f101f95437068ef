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
