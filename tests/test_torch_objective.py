"""The built-in PyTorch objective `torch-mlp-digits`: it trains on the CPU here (CI installs the
CPU build of torch only where it is on local disk), and says clearly what is missing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.harness import REPO
from zoomtune.common.study import StudySpec
from zoomtune.workers.objectives.torch_digits import torch_mlp_digits
from zoomtune.workers.registry import ObjectiveRegistry


@dataclass
class RecordingTrial:
    """What a worker passes an objective, keeping what it reports."""

    options: Mapping[str, Any]
    device: str = "cpu"
    reports: list[tuple[int, float]] = field(default_factory=list)

    def report(self, step: int, value: float) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return False


def test_the_torch_objective_trains_an_mlp_on_the_cpu() -> None:
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    params = {
        "learning_rate": 3e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "batch_size": 32,
        "hidden_units": 32,
        "layers": 2,
        "lr_decay": 0.1,
    }
    trial = RecordingTrial(options={"epochs": 4})

    accuracy = torch_mlp_digits(params, trial)

    # Far above chance (0.1) after a few epochs, reported after every epoch
    assert accuracy > 0.85
    assert [step for step, _ in trial.reports] == [1, 2, 3, 4]
    assert trial.reports[-1][1] == accuracy
    # And the same seed gives the same score (each trial seeds its own generators)
    assert torch_mlp_digits(params, RecordingTrial(options={"epochs": 4})) == accuracy
    # SGD with momentum trains too
    sgd = {"learning_rate": 0.05, "momentum": 0.9, "batch_size": 64}
    assert torch_mlp_digits(sgd, RecordingTrial(options={"epochs": 3})) > 0.85


def test_a_gpu_slot_where_torch_sees_no_gpu_fails_the_trial_instead_of_using_the_cpu() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU that torch can use")
    with pytest.raises(RuntimeError, match=r"GPU slot gpu:1, but PyTorch .* sees no GPU"):
        torch_mlp_digits({}, RecordingTrial(options={"epochs": 1}, device="gpu:1"))


def test_bad_params_are_named() -> None:
    pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(ValueError, match=r"unknown parameters \['dropout'\]"):
        torch_mlp_digits({"dropout": 0.5}, RecordingTrial(options={}))
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd', got 'lbfgs'"):
        torch_mlp_digits({"optimizer": "lbfgs"}, RecordingTrial(options={"epochs": 1}))


def test_without_torch_the_objective_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'zoomtune\[torch\]'"):
        torch_mlp_digits({}, RecordingTrial(options={}))


def test_the_torch_objective_is_built_in_and_nothing_imports_torch_before_a_trial() -> None:
    assert "torch-mlp-digits" in ObjectiveRegistry.build()
    # A fresh interpreter: the coordinator and a CPU worker load without touching torch
    check = (
        "import sys, zoomtune.coordinator.cli, zoomtune.workers.cli\n"
        "import zoomtune.workers.objectives.torch_digits\n"
        "from zoomtune.workers.registry import ObjectiveRegistry\n"
        "ObjectiveRegistry.build().get('torch-mlp-digits')\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_example_study_fits_the_objective() -> None:
    spec = StudySpec.from_file(REPO / "examples" / "torch_mlp_digits.toml")
    assert spec.objective.name == "torch-mlp-digits"
    assert spec.resources.queue == "gpu"
    from zoomtune.workers.objectives.torch_digits import TORCH_PARAMS

    assert set(spec.space.names) <= TORCH_PARAMS
