"""The objectives every worker has built in, and their options, for the coordinator to check.

The coordinator never imports worker code, yet on the embedded default it starts the workers
itself and so knows exactly what they can run: the built-ins, plus the study's own entrypoint.
A study naming anything else would wait forever for a worker that never comes, so `plan` and
`start` refuse it up front. On a cluster the workers may register more (`worker start
--objective`, entry points), so there the coordinator cannot tell; a worker that lacks the
objective records the refusal on the trial instead (`StudyStore.reject`).

`zoomtune.workers.registry.BUILTINS` maps the same names to their functions; a test keeps the two
equal. Each built-in reads its `[objective] options` through a model here, which `plan` and
`start` check a study file against on the embedded default.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class BuiltinOptions(BaseModel):
    """The `[objective] options` of one built-in objective: names, types, bounds, defaults.

    The objective itself reads its options through its model (`read_options`), and `plan` and
    `start` check a study file's options against the same model, so a misspelt option or a bad
    value (`scale = -1`) is refused before any trial runs, not found by every trial failing."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
HeldOutShare = Annotated[float, Field(ge=0.01, le=0.99)]
"""The digits split's validation share: each side keeps at least one image of each class."""


class SleepOptions(BuiltinOptions):
    duration: Seconds = 0.0
    """Seconds a trial sleeps first, to stand in for training time."""


class QuadraticOptions(SleepOptions):
    optimum: dict[str, float] = Field(default_factory=dict)
    """The optimum of each parameter (0 for those not named)."""
    log: list[str] = Field(default_factory=list)
    """Parameters whose distance is taken in log10 (e.g. a learning rate)."""


class SvcDigitsOptions(SleepOptions):
    seed: int = 0
    validation: HeldOutShare = 0.3


class MlpDigitsOptions(SvcDigitsOptions):
    max_iter: Count = 30
    """Epochs; the objective reports after each."""


Curve = Literal["predictive", "crossing"]
"""The synthetic-training objective's learning curves (zoomtune.workers.objectives.training)."""


class TrainingOptions(BuiltinOptions):
    epochs: Count = 27
    scale: Seconds = 0.05
    """Seconds one epoch of a mid-sized model takes (0: no sleep)."""
    curve: Curve = "predictive"


class TorchDigitsOptions(BuiltinOptions):
    seed: int = 0
    threads: Count = 1
    """Torch threads of a trial on a CPU slot."""
    validation: HeldOutShare = 0.3
    epochs: Count = 20


BUILTIN_OPTIONS: Mapping[str, type[BuiltinOptions]] = {
    "branin": SleepOptions,
    "hartmann6": SleepOptions,
    "quadratic": QuadraticOptions,
    "sklearn-mlp-digits": MlpDigitsOptions,
    "sklearn-svc-digits": SvcDigitsOptions,
    "sleep": SleepOptions,
    "synthetic-training": TrainingOptions,
    "torch-mlp-digits": TorchDigitsOptions,
}
"""The options model of each built-in objective (zoomtune/workers/objectives/; a test keeps the
names equal to BUILTIN_OBJECTIVES, and each objective reads its options through its model)."""

LAST_STEP_OPTION: Mapping[str, str] = {
    "sklearn-mlp-digits": "max_iter",
    "synthetic-training": "epochs",
    "torch-mlp-digits": "epochs",
}
"""For the built-ins that report steps (1, 2, ... after each epoch), the option that says how
many; the others report none, so early stopping never acts on them."""

M = TypeVar("M", bound=BuiltinOptions)


def read_options(model: type[M], options: Mapping[str, object]) -> M:
    """`options` as `model`; a ValueError naming each bad option (one line each) otherwise."""
    problems = option_problems(model, options)
    if problems:
        raise ValueError("; ".join(problems))
    return model.model_validate(dict(options))


def builtin_option_problems(name: str, options: Mapping[str, object]) -> list[str]:
    """Why `options` do not suit the built-in objective `name` (one line each), or []."""
    model = BUILTIN_OPTIONS.get(name)
    if model is None:
        return []
    return option_problems(model, options, f" for the built-in objective {name!r}")


def option_problems(
    model: type[BuiltinOptions], options: Mapping[str, object], owner: str = ""
) -> list[str]:
    """One line per option of `options` that `model` refuses: an unknown name (with the
    closest known one) or a bad value (what is wrong, and the value); `owner` follows the
    option's name (" for the built-in objective 'x'")."""
    try:
        model.model_validate(dict(options))
    except ValidationError as exc:
        known = sorted(model.model_fields)
        problems = []
        for error in exc.errors(include_url=False):
            option = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] == "extra_forbidden":
                close = difflib.get_close_matches(option, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append(
                    f"unknown option {option!r}{owner}; {hint}it reads {', '.join(known)}"
                )
            else:
                where = ".".join(str(part) for part in error["loc"])
                message = error["msg"][0].lower() + error["msg"][1:]
                problems.append(f"option {where}{owner}: {message}, got {error['input']!r}")
        return problems
    return []


def last_reported_step(name: str, options: Mapping[str, object]) -> int | None:
    """The last step the built-in objective `name` reports with these options: its epochs,
    0 for a built-in that reports none, None when it is not a built-in (or its options are
    bad, which `builtin_option_problems` says)."""
    model = BUILTIN_OPTIONS.get(name)
    if model is None or option_problems(model, options):
        return None
    option = LAST_STEP_OPTION.get(name)
    if option is None:
        return 0
    steps = getattr(model.model_validate(dict(options)), option)
    return int(steps)
