"""GPU discovery (nvidia-smi's output, and a fake nvidia-smi on PATH), the `--gpus` option, and
how `worker start` turns GPUs into pinned slots. No GPU needed."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.harness import REPO
from zoomtune.common.errors import GpuError
from zoomtune.coordinator.embedded import LocalWorkers, local_gpus
from zoomtune.workers.cli import gpus_to_pin, main
from zoomtune.workers.gpus import Gpu, GpuRequest, discover_gpus, parse_nvidia_smi, resolve_gpus
from zoomtune.workers.supervisor import Slot, plan_slots, slot_command, slot_env

# What `nvidia-smi --query-gpu=index,uuid,memory.total,name --format=csv,noheader,nounits`
# prints: one line per GPU, in the format of driver 550 on an 8 x H200 node (UUIDs shortened).
H200_NODE = "".join(
    f"{i}, GPU-{i}a1f6c2e-5b7d-4e0f-9c3a-00000000000{i}, 143771, NVIDIA H200\n" for i in range(8)
)
# A Grace Hopper superchip shares its memory with the CPU: nvidia-smi prints [N/A] for it.
GH200 = "0, GPU-7f3e9d10-aaaa-bbbb-cccc-123456789abc, [N/A], NVIDIA GH200 480GB\n"
NO_DEVICES = "No devices were found"
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running."
)


def fake_nvidia_smi(folder: Path, output: str, exit_code: int = 0) -> Path:
    """A `nvidia-smi` script in `folder` that prints `output` and exits with `exit_code`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "output.txt").write_text(output if output.endswith("\n") else output + "\n")
    script = folder / "nvidia-smi"
    # Shell builtins only: the tests run it with a PATH that may hold nothing else.
    script.write_text(
        "#!/bin/sh\n"
        f"while IFS= read -r line; do echo \"$line\"; done < '{folder / 'output.txt'}'\n"
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_nvidia_smi_output_is_parsed_into_gpus() -> None:
    gpus = parse_nvidia_smi(H200_NODE)
    assert [g.index for g in gpus] == [str(i) for i in range(8)]
    assert gpus[3] == Gpu(
        index="3",
        uuid="GPU-3a1f6c2e-5b7d-4e0f-9c3a-000000000003",
        name="NVIDIA H200",
        memory_mib=143771,
    )
    assert parse_nvidia_smi(GH200)[0].memory_mib == 0
    assert parse_nvidia_smi("\n") == []


def test_a_gpu_name_with_commas_stays_whole() -> None:
    (gpu,) = parse_nvidia_smi("0, GPU-x, 16384, Tesla V100, PCIe, 16GB\n")
    assert gpu.name == "Tesla V100, PCIe, 16GB"


def test_unreadable_nvidia_smi_output_is_an_error_quoting_the_line() -> None:
    with pytest.raises(GpuError, match=r"line 1 .*'No devices were found'"):
        parse_nvidia_smi(NO_DEVICES)


def test_discovery_runs_the_nvidia_smi_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "bin", H200_NODE)))
    assert [g.name for g in discover_gpus()] == ["NVIDIA H200"] * 8


@pytest.mark.parametrize(
    ("output", "code", "reason"),
    [
        (NO_DEVICES, 6, "found no usable GPU: No devices were found"),
        (NO_DRIVER, 9, "couldn't communicate with the NVIDIA driver"),
        ("", 0, "lists no GPU"),
    ],
)
def test_discovery_says_why_it_found_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, code: int, reason: str
) -> None:
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "bin", output, code)))
    with pytest.raises(GpuError, match=reason):
        discover_gpus()


def test_discovery_without_nvidia_smi_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GpuError, match="nvidia-smi not found on PATH"):
        discover_gpus()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", GpuRequest("all")),
        ("NONE", GpuRequest("none")),
        ("0,1,3", GpuRequest("ids", ("0", "1", "3"))),
        (" 2 ", GpuRequest("ids", ("2",))),
        ("GPU-3a1f6c2e-5b7d", GpuRequest("ids", ("GPU-3a1f6c2e-5b7d",))),
    ],
)
def test_the_gpus_option_takes_all_none_or_ids(value: str, expected: GpuRequest) -> None:
    assert GpuRequest.parse(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "got ''"),
        ("0,,1", "got '0,,1'"),
        ("first", "got 'first'"),
        ("-1", "got '-1'"),
        ("0,1,0", "GPU 0 given twice"),
    ],
)
def test_a_bad_gpus_option_is_refused_naming_the_value(value: str, problem: str) -> None:
    with pytest.raises(GpuError, match=problem):
        GpuRequest.parse(value)


def two_gpus() -> list[Gpu]:
    return parse_nvidia_smi(H200_NODE)[:2]


def no_gpu() -> list[Gpu]:
    raise GpuError("nvidia-smi not found on PATH")


def test_all_means_every_gpu_nvidia_smi_lists() -> None:
    assert resolve_gpus(GpuRequest("all"), {}, two_gpus) == ["0", "1"]


def test_all_means_the_gpus_a_scheduler_already_gave_this_worker() -> None:
    # Given Slurm (or a container runtime) set CUDA_VISIBLE_DEVICES for the worker daemon
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    # Then --gpus all pins one slot to each of those, without asking nvidia-smi
    assert resolve_gpus(GpuRequest("all"), env, no_gpu) == ["2", "3"]
    with pytest.raises(GpuError, match="hides every GPU"):
        resolve_gpus(GpuRequest("all"), {"CUDA_VISIBLE_DEVICES": ""}, two_gpus)


def test_all_on_a_machine_without_gpus_is_an_error_saying_why() -> None:
    with pytest.raises(GpuError, match="nvidia-smi not found"):
        resolve_gpus(GpuRequest("all"), {}, no_gpu)


def test_explicit_ids_are_checked_when_nvidia_smi_can_tell() -> None:
    assert resolve_gpus(GpuRequest.parse("1"), {}, two_gpus) == ["1"]
    with pytest.raises(GpuError, match=r"no GPU 5 on this machine \(nvidia-smi: 0, 1\)"):
        resolve_gpus(GpuRequest.parse("0,5"), {}, two_gpus)


def test_explicit_ids_are_pinned_as_given_without_nvidia_smi(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert resolve_gpus(GpuRequest.parse("0,1"), {}, no_gpu) == ["0", "1"]
    assert "pinning as given" in caplog.text


def test_gpu_slots_run_one_trial_each_and_the_cpu_slot_sees_no_gpu() -> None:
    slots = plan_slots(["0", "1"], trials_per_gpu=1, cpu_processes=3)
    assert slots == [
        Slot(name="gpu0", queue="gpu", concurrency=1, device="gpu:0", gpu="0"),
        Slot(name="gpu1", queue="gpu", concurrency=1, device="gpu:1", gpu="1"),
        Slot(name="cpu", queue="cpu", concurrency=3, device="cpu", gpu=None),
    ]
    two_per_gpu = plan_slots(["3"], trials_per_gpu=2, cpu_processes=0)
    assert [(s.name, s.device, s.concurrency) for s in two_per_gpu] == [
        ("gpu3.1", "gpu:3", 1),
        ("gpu3.2", "gpu:3", 1),
    ]


def test_a_slot_runs_a_plain_worker_pinned_by_its_environment() -> None:
    slot = Slot(name="gpu1", queue="gpu", concurrency=1, device="gpu:1", gpu="1")
    command = slot_command(slot, "zoomtune-7@node3", ("mine=pkg.mod:fn",), "INFO")
    assert command[command.index("--gpus") + 1] == "none"  # a slot never supervises
    assert command[command.index("--queues") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "1"
    assert command[command.index("--device") + 1] == "gpu:1"
    assert command[command.index("--name") + 1] == "zoomtune-7-gpu1@node3"
    assert command[-2:] == ["--objective", "mine=pkg.mod:fn"]
    assert not any("redis://" in part for part in command)  # the URL may hold a password

    env = slot_env(slot, "redis://:secret@host:6379/0")
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # the numbering nvidia-smi uses
    assert env["ZOOMTUNE_BROKER_URL"] == "redis://:secret@host:6379/0"
    cpu = Slot(name="cpu", queue="cpu", concurrency=2, device="cpu", gpu=None)
    assert slot_env(cpu, "redis://h")["CUDA_VISIBLE_DEVICES"] == ""


def test_gpus_all_without_gpus_falls_back_to_the_cpu_slot_only_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING):
        assert gpus_to_pin(GpuRequest("all"), ["gpu", "cpu"]) == []
    assert "running the CPU slot only" in caplog.text
    with pytest.raises(GpuError, match=r"consumes only trials\.gpu"):
        gpus_to_pin(GpuRequest("all"), ["gpu"])


def worker_cli(args: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{path}:{Path(sys.executable).parent}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["ZOOMTUNE_BROKER_URL"] = "redis://127.0.0.1:1/0"  # never reached: these exit first
    return subprocess.run(
        [sys.executable, "-m", "zoomtune.workers.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_gpu_worker_on_a_machine_without_gpus_says_so_and_exits_non_zero(
    tmp_path: Path,
) -> None:
    done = worker_cli(["start", "--gpus", "all"], tmp_path)
    assert done.returncode == 1
    assert "nvidia-smi not found on PATH" in done.stderr
    assert "run it on a GPU node, or start a CPU worker (--queues cpu)" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "0", "--queues", "cpu"], "--queues cpu leaves gpu out"),
        (["--gpus", "0", "--concurrency", "4"], "add cpu to --queues"),
        (["--trials-per-gpu", "2"], "--trials-per-gpu needs --gpus"),
        (["--gpus", "0,0"], "GPU 0 given twice"),
    ],
)
def test_gpu_options_that_contradict_each_other_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["start", *args], env={"ZOOMTUNE_BROKER_URL": "redis://h"})
    assert result.exit_code != 0
    assert message in result.output


def test_worker_gpus_lists_what_worker_start_would_use(tmp_path: Path) -> None:
    done = worker_cli(["gpus"], fake_nvidia_smi(tmp_path / "bin", H200_NODE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (
        "GPU 1: NVIDIA H200, 143771 MiB (GPU-1a1f6c2e-5b7d-4e0f-9c3a-000000000001)"
    )
    missing = worker_cli(["gpus"], tmp_path / "empty")
    assert missing.returncode == 1
    assert "no GPU: nvidia-smi not found on PATH" in missing.stderr


def test_the_embedded_default_asks_the_worker_cli_for_local_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}")
    gpus, why = local_gpus()
    assert gpus == []
    assert "nvidia-smi not found" in why
    monkeypatch.setenv(
        "PATH", f"{fake_nvidia_smi(tmp_path / 'bin', H200_NODE)}:{os.environ['PATH']}"
    )
    gpus, why = local_gpus()
    assert len(gpus) == 8
    assert why == ""

    # With GPUs, local workers are GPU slots; --workers (CPU processes) does not apply to them
    command = LocalWorkers("redis://h", concurrency=4, queues=("gpu",), gpus="all").command()
    assert "--concurrency" not in command
    assert command[command.index("--gpus") + 1] == "all"
