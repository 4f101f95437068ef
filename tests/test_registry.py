"""The worker's allow-list of objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoomtune.common.errors import ObjectiveError
from zoomtune.common.objectives import BUILTIN_OBJECTIVES
from zoomtune.workers.registry import BUILTINS, ObjectiveRegistry, load_target


def test_builtins_are_registered_and_load_on_first_use() -> None:
    registry = ObjectiveRegistry.build()
    assert set(BUILTINS) <= set(registry.names())
    assert registry.get("branin").__name__ == "branin"


def test_the_coordinators_list_of_built_in_names_is_the_registrys() -> None:
    # The coordinator checks embedded studies against this list without importing workers.
    assert set(BUILTINS) == BUILTIN_OBJECTIVES


def test_an_unknown_name_is_refused_naming_what_is_known() -> None:
    registry = ObjectiveRegistry.build()
    with pytest.raises(ObjectiveError, match=r"'os:system' is not registered .*branin"):
        registry.get("os:system")


def test_an_objective_file_is_registered_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text("def score(params, trial):\n    return 42.0\n")
    registry = ObjectiveRegistry.build({"mine": f"{path}:score"})
    assert registry.get("mine")({}, None) == 42.0


def test_a_module_function_is_registered() -> None:
    registry = ObjectiveRegistry.build({"sq": "math:sqrt"})
    assert registry.get("sq")(16) == 4.0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:f", "cannot import"),
        ("math:no_such_function", "has no function"),
        ("/nonexistent/file.py:f", "not found"),
        ("not a target", "expected 'module:function'"),
    ],
)
def test_a_bad_target_fails_when_the_worker_starts(target: str, message: str) -> None:
    with pytest.raises(ObjectiveError, match=message):
        load_target(target)


@pytest.mark.parametrize("option", ["noequals", "=math:sqrt", "bad name=math:sqrt", "x=math"])
def test_the_objective_option_must_be_name_equals_target(option: str) -> None:
    with pytest.raises(ObjectiveError, match="--objective takes NAME=module:function"):
        ObjectiveRegistry.parse_option(option)


@pytest.mark.parametrize("option", ["mine\n=m:f", "mine=m:f\n"])
def test_an_objective_option_with_a_trailing_newline_is_refused(option: str) -> None:
    with pytest.raises(ObjectiveError, match="--objective takes NAME=module:function"):
        ObjectiveRegistry.parse_option(option)
