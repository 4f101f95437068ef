"""The objectives every worker has built in, and their options, for the coordinator to check.

The coordinator never imports worker code, yet on the embedded default it starts the workers
itself and so knows exactly what they can run: the built-ins, the objectives installed packages
register (`installed_objectives`, which win over a built-in's name), and the study's own
entrypoint.
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
from importlib.metadata import entry_points
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zoomtune.common.study_settings import ObjectiveSpec

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

ENTRY_POINT_GROUP = "zoomtune.objectives"
"""The entry-point group through which an installed package registers objectives on every
worker of this Python environment, over a built-in of the same name."""


def installed_objectives() -> frozenset[str]:
    """The objective names installed packages register (`ENTRY_POINT_GROUP`): the embedded
    default's local workers run them too, and under a built-in's name they run instead of it."""
    return frozenset(point.name for point in entry_points(group=ENTRY_POINT_GROUP))


class BuiltinOptions(BaseModel):
    """The `[objective] options` of one built-in objective: names, types, bounds, defaults.

    The objective itself reads its options through its model (`read_options`), and `plan` and
    `start` check a study file's options against the same model, so a misspelt option or a bad
    value (`scale = -1`) is refused before any trial runs, not found by every trial failing."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @property
    def last_step(self) -> int:
        """The last step the objective reports (it reports steps 1, 2, ..., this one, each
        followed by `trial.should_prune()`); 0 for an objective that reports none, which early
        stopping therefore never stops."""
        return 0


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A seed for numpy and scikit-learn, which take 0 .. 2**32 - 1."""
HeldOutShare = Annotated[float, Field(ge=0.01, le=0.99)]
"""The digits split's validation share: each side keeps at least one image of each class."""


class SleepOptions(BuiltinOptions):
    duration: Seconds = 0.0
    """Seconds a trial sleeps first, to stand in for training time."""


class QuadraticOptions(SleepOptions):
    optimum: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=dict)
    """The optimum of each parameter (0 for those not named)."""
    log: list[str] = Field(default_factory=list)
    """Parameters whose distance is taken in log10 (e.g. a learning rate): each needs a
    positive optimum."""

    @model_validator(mode="after")
    def _log_optimum_positive(self) -> QuadraticOptions:
        for name in self.log:
            if name not in self.optimum:
                raise ValueError(
                    f"option log names {name!r}, whose distance is taken in log10, but "
                    f"optimum.{name} is not given (its default 0 has no logarithm)"
                )
            if self.optimum[name] <= 0:
                raise ValueError(
                    f"option log names {name!r}, whose distance is taken in log10, so "
                    f"optimum.{name} must be > 0, got {self.optimum[name]!r}"
                )
        return self


class SvcDigitsOptions(SleepOptions):
    seed: Seed = 0
    """The seed of the train/validation split (and of the model, where it has one)."""
    validation: HeldOutShare = 0.3
    """The share of the digits held out to score the model."""


class MlpDigitsOptions(SvcDigitsOptions):
    max_iter: Count = 30
    """Epochs; the objective reports the validation accuracy after each."""

    @property
    def last_step(self) -> int:
        return self.max_iter


Curve = Literal["predictive", "crossing"]
"""The synthetic-training objective's learning curves (zoomtune.workers.objectives.training)."""


class TrainingOptions(BuiltinOptions):
    epochs: Count = 27
    """Epochs; the objective reports the accuracy after each."""
    scale: Seconds = 0.05
    """Seconds one epoch of a mid-sized model takes (0: no sleep)."""
    curve: Curve = "predictive"
    """Whether early rankings predict the final one, or invert (short-horizon bias)."""

    @property
    def last_step(self) -> int:
        return self.epochs


class TorchDigitsOptions(BuiltinOptions):
    seed: Seed = 0
    """The seed of the split, the weights and the batch order."""
    threads: Count = 1
    """Torch threads of a trial on a CPU slot."""
    validation: HeldOutShare = 0.3
    """The share of the digits held out to score the model."""
    epochs: Count = 20
    """Epochs; the objective reports the validation accuracy after each."""

    @property
    def last_step(self) -> int:
        return self.epochs


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

M = TypeVar("M", bound=BuiltinOptions)


def read_options(model: type[M], options: Mapping[str, object]) -> M:
    """`options` as `model`; a ValueError naming each bad option (one line each) otherwise."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ValueError("; ".join(_problems(exc, model, owner=""))) from None


def builtin_option_problems(name: str, options: Mapping[str, object]) -> list[str]:
    """Why `options` do not suit the built-in objective `name` (one line each), or [] (also
    when an installed package registers its own objective under that name)."""
    model = BUILTIN_OPTIONS.get(name)
    if model is None or name in installed_objectives():
        return []
    try:
        model.model_validate(dict(options))
    except ValidationError as exc:
        return _problems(exc, model, owner=f" for the built-in objective {name!r}")
    return []


def _problems(exc: ValidationError, model: type[BuiltinOptions], owner: str) -> list[str]:
    """One line per option that `model` refused: an unknown name (with the closest known one)
    or a bad value (what is wrong, and the value); `owner` follows the option's name."""
    known = sorted(model.model_fields)
    problems = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        message = message[0].lower() + message[1:]
        if not error["loc"]:  # a rule between options (QuadraticOptions' log and optimum)
            problems.append(f"{owner.strip()}: {message}" if owner else message)
        elif error["type"] == "extra_forbidden":
            option = str(error["loc"][0])
            close = difflib.get_close_matches(option, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"unknown option {option!r}{owner}; {hint}it reads {', '.join(known)}")
        else:
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"option {where}{owner}: {message}, got {error['input']!r}")
    return problems


def builtin_options(name: str, options: Mapping[str, object]) -> BuiltinOptions | None:
    """`options` as the built-in objective `name` reads them; None when `name` is not a
    built-in (or an installed package registers its own under that name) or the options are
    bad (which `builtin_option_problems` says)."""
    model = BUILTIN_OPTIONS.get(name)
    if model is None or name in installed_objectives():
        return None
    try:
        return model.model_validate(dict(options))
    except ValidationError:
        return None


def builtin_last_step(objective: ObjectiveSpec) -> int | None:
    """The last step the study's objective reports, known up front for a built-in from its
    options (0: it reports none); None for an objective of the user's own, whose steps only
    its trials tell."""
    if objective.entrypoint is not None:
        return None
    options = builtin_options(objective.name, objective.options)
    return options.last_step if options is not None else None
