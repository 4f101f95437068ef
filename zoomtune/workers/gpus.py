"""GPU discovery and pinning for `worker start --gpus all|none|0,1,3`.

Discovery runs `nvidia-smi` (the driver's tool, on every machine with an NVIDIA driver), so the
worker itself needs no GPU library. Pinning is an environment variable: each GPU slot runs in
its own process with `CUDA_VISIBLE_DEVICES` set to one GPU, so PyTorch, JAX or TensorFlow in
that process see exactly that GPU, as device 0.

`--gpus all` means the GPUs this worker may use: the entries of `CUDA_VISIBLE_DEVICES` when a
scheduler (Slurm, a container runtime) has already set it, else every GPU nvidia-smi lists.
Explicit ids (`--gpus 0,1` or GPU/MIG UUIDs) are pinned as given; they are checked against
nvidia-smi when it is there, and trusted (with a warning) when it is not.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from zoomtune.common.errors import GpuError

log = logging.getLogger("zoomtune.worker")

NVIDIA_SMI_QUERY = (
    "--query-gpu=index,uuid,memory.total,name",
    "--format=csv,noheader,nounits",
)
"""One line per GPU: `0, GPU-5c0f..., 143771, NVIDIA H200` (the name last: it may hold commas)."""

NVIDIA_SMI_TIMEOUT = 30.0
"""Seconds nvidia-smi may take (it can be slow while the driver initialises)."""

DEVICE_ORDER = "PCI_BUS_ID"
"""CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi numbers them by PCI bus.
Slots set `CUDA_DEVICE_ORDER=PCI_BUS_ID` so that `--gpus 1` is the GPU nvidia-smi calls 1."""

_GPU_ID = re.compile(r"\d{1,3}|(GPU|MIG)-[A-Za-z0-9/-]{1,80}")


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi lists it."""

    index: str
    uuid: str
    name: str
    memory_mib: int

    def describe(self) -> str:
        return f"GPU {self.index}: {self.name}, {self.memory_mib} MiB ({self.uuid})"


@dataclass(frozen=True)
class GpuRequest:
    """The `--gpus` option: every GPU ("all"), none, or explicit ids."""

    mode: str  # "all", "none" or "ids"
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> GpuRequest:
        text = value.strip()
        if text.lower() in ("all", "none"):
            return cls(text.lower())
        ids = tuple(part.strip() for part in text.split(","))
        bad = [i for i in ids if not _GPU_ID.fullmatch(i)]
        if not text or bad:
            raise GpuError(
                f"--gpus takes 'all', 'none' or comma-separated GPU ids (0,1,3 or GPU-/MIG- "
                f"UUIDs), got {value!r}"
            )
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise GpuError(
                f"--gpus {value}: GPU {', '.join(duplicates)} given twice "
                "(use --trials-per-gpu for several trials on one GPU)"
            )
        return cls("ids", ids)

    @property
    def wants_gpus(self) -> bool:
        return self.mode != "none"


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """The GPUs in the output of `nvidia-smi` run with `NVIDIA_SMI_QUERY`."""
    gpus = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",", 3)]
        if len(fields) != 4 or not fields[0].isdigit():
            raise GpuError(f"cannot read line {number} of nvidia-smi's output: {line!r}")
        index, uuid, memory, name = fields
        try:
            memory_mib = int(float(memory))
        except ValueError:
            memory_mib = 0  # "[N/A]" on some virtual GPUs
        gpus.append(Gpu(index=index, uuid=uuid, name=name, memory_mib=memory_mib))
    return gpus


def discover_gpus(nvidia_smi: str = "nvidia-smi") -> list[Gpu]:
    """Every GPU nvidia-smi lists; GpuError saying why when it cannot tell."""
    binary = shutil.which(nvidia_smi)
    if binary is None:
        raise GpuError(f"{nvidia_smi} not found on PATH (no NVIDIA driver on this machine?)")
    try:
        done = subprocess.run(
            [binary, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpuError(f"{binary} failed: {exc}") from exc
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        reason = said[0] if said else f"exit code {done.returncode}"
        raise GpuError(f"{binary} found no usable GPU: {reason}")
    gpus = parse_nvidia_smi(done.stdout)
    if not gpus:
        raise GpuError(f"{binary} lists no GPU")
    return gpus


def resolve_gpus(
    request: GpuRequest,
    env: Mapping[str, str],
    discover: Callable[[], Sequence[Gpu]] = discover_gpus,
) -> list[str]:
    """The GPU ids to pin one slot each to (as CUDA_VISIBLE_DEVICES takes them).

    Raises GpuError when `--gpus all` finds no GPU, or an explicit id is not on this machine.
    """
    if request.mode == "none":
        return []
    inherited = env.get("CUDA_VISIBLE_DEVICES")
    if request.mode == "all":
        if inherited is not None:
            ids = [i.strip() for i in inherited.split(",") if i.strip()]
            if not ids or ids == ["-1"]:
                raise GpuError(
                    f"--gpus all: CUDA_VISIBLE_DEVICES={inherited!r} in this worker's "
                    "environment hides every GPU"
                )
            log.info("--gpus all: using CUDA_VISIBLE_DEVICES=%s from the environment", inherited)
            return ids
        gpus = discover()
        for gpu in gpus:
            log.info("found %s", gpu.describe())
        return [gpu.index for gpu in gpus]
    try:
        gpus = list(discover())
    except GpuError as exc:
        log.warning("cannot check --gpus %s (%s); pinning as given", ",".join(request.ids), exc)
        return list(request.ids)
    known = {g.index for g in gpus} | {g.uuid for g in gpus}
    unknown = [i for i in request.ids if i not in known and not i.startswith("MIG-")]
    if unknown:
        listed = ", ".join(g.index for g in gpus)
        raise GpuError(
            f"--gpus: no GPU {', '.join(unknown)} on this machine (nvidia-smi: {listed})"
        )
    return list(request.ids)


def pinned_env(base: Mapping[str, str], gpu: str | None) -> dict[str, str]:
    """`base` with CUDA_VISIBLE_DEVICES pinned to `gpu`, or hiding every GPU when None."""
    env = dict(base)
    env["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else gpu
    env.setdefault("CUDA_DEVICE_ORDER", DEVICE_ORDER)
    return env


__all__ = [
    "Gpu",
    "GpuRequest",
    "discover_gpus",
    "parse_nvidia_smi",
    "pinned_env",
    "resolve_gpus",
]
