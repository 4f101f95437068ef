"""The worker's allow-list of objectives: the only code a task message can make a worker run.

A message names an objective; the worker looks the name up here and nowhere else. The list is
made when the worker starts, from three trusted sources:

1. the built-ins of `zoomtune.workers.objectives`;
2. `worker start --objective NAME=module:function` or `NAME=path/to/file.py:function`;
3. the `zoomtune.objectives` entry-point group of installed packages;
4. `sklearn-cv`, only with `worker start --allow-sklearn-payloads` (`add`, with the key).

Nothing named in a message is ever imported: a name missing here is refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from zoomtune.common.errors import ObjectiveError
from zoomtune.common.names import ENTRYPOINT, OBJECTIVE_NAME
from zoomtune.common.objectives import ENTRY_POINT_GROUP

Objective = Callable[[dict[str, Any], Any], Any]
"""objective(params, trial) -> float: a plain function; `trial` is a TrialContext."""


BUILTINS: Mapping[str, str] = {
    "sklearn-mlp-digits": "zoomtune.workers.objectives.digits:mlp_digits",
    "sklearn-svc-digits": "zoomtune.workers.objectives.digits:svc_digits",
    "branin": "zoomtune.workers.objectives.synthetic:branin",
    "hartmann6": "zoomtune.workers.objectives.synthetic:hartmann6",
    "quadratic": "zoomtune.workers.objectives.synthetic:quadratic",
    "sleep": "zoomtune.workers.objectives.synthetic:sleep",
    "synthetic-training": "zoomtune.workers.objectives.training:synthetic_training",
    "torch-mlp-digits": "zoomtune.workers.objectives.torch_digits:torch_mlp_digits",
}
"""Built-in objectives: name -> module:function inside this package."""


def load_target(target: str) -> Objective:
    """Import `module:function` or `path/to/file.py:function` (from the operator, not a message)."""
    match = ENTRYPOINT.fullmatch(target)
    if not match:
        raise ObjectiveError(
            f"expected 'module:function' or 'path/to/file.py:function', got {target!r}"
        )
    module_name, function_name = match["module"], match["function"]
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise ObjectiveError(f"objective file not found: {path}")
            unique = f"zoomtune_user_{abs(hash(str(path)))}"
            spec = importlib.util.spec_from_file_location(unique, path)
            if spec is None or spec.loader is None:
                raise ObjectiveError(f"cannot load objective file {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ObjectiveError:
        raise
    except Exception as exc:
        raise ObjectiveError(f"cannot import {module_name!r} for objective: {exc!r}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ObjectiveError(f"{module_name!r} has no function {function_name!r}")
    return function  # type: ignore[no-any-return]


@dataclass
class ObjectiveRegistry:
    """Objective names -> targets; targets are imported on first use and then kept."""

    targets: dict[str, str] = field(default_factory=dict)
    _loaded: dict[str, Objective] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        extra: Mapping[str, str] = {},
        *,
        entry_point_group: str = ENTRY_POINT_GROUP,
        preload: bool = True,
    ) -> ObjectiveRegistry:
        """The built-ins, then installed entry points, then `extra` (which wins).

        With `preload`, the `extra` objectives are imported now so that a typo fails at start.
        """
        registry = cls(dict(BUILTINS))
        for point in entry_points(group=entry_point_group):
            registry.targets[point.name] = point.value
        for name, target in extra.items():
            if not OBJECTIVE_NAME.fullmatch(name):
                raise ObjectiveError(f"bad objective name {name!r}")
            registry.targets[name] = target
            if preload:
                registry._loaded[name] = load_target(target)
        return registry

    @staticmethod
    def parse_option(option: str) -> tuple[str, str]:
        """'NAME=module:function' -> (NAME, 'module:function')."""
        name, sep, target = option.partition("=")
        if not sep or not OBJECTIVE_NAME.fullmatch(name) or not ENTRYPOINT.fullmatch(target):
            raise ObjectiveError(
                f"--objective takes NAME=module:function or NAME=path/to/file.py:function, "
                f"got {option!r}"
            )
        return name, target

    def add(self, name: str, objective: Objective, target: str) -> None:
        """Register an objective the worker built itself (`target` only names it in logs)."""
        if not OBJECTIVE_NAME.fullmatch(name):
            raise ObjectiveError(f"bad objective name {name!r}")
        self.targets[name] = target
        self._loaded[name] = objective

    def __contains__(self, name: object) -> bool:
        return name in self.targets

    def names(self) -> list[str]:
        return sorted(self.targets)

    def get(self, name: str) -> Objective:
        """The objective registered under `name`; ObjectiveError if there is none."""
        if name not in self.targets:
            raise ObjectiveError(
                f"objective {name!r} is not registered on this worker (known: {self.names()})"
            )
        if name not in self._loaded:
            self._loaded[name] = load_target(self.targets[name])
        return self._loaded[name]
