"""The `worker start` daemon of a GPU node: one Celery worker process per slot, supervised.

A slot is one `worker start --gpus none` child process with its own queue, concurrency and
device label. A GPU slot is pinned to one GPU (`CUDA_VISIBLE_DEVICES`), runs one trial at a
time (concurrency 1) and consumes `trials.gpu`; the CPU slot, when asked for, is a pool of
processes that see no GPU and consume `trials.cpu`.

The supervisor starts the slots, restarts one that dies (after a pause that doubles while it
keeps dying young), forwards SIGTERM (warm shutdown; SIGINT too) and SIGQUIT (cold shutdown)
to every slot, and exits once they have all stopped. On Linux each slot is also told to shut
down cold if the supervisor itself dies (SIGKILL), so no orphaned slot keeps taking trials
while a new supervisor starts another one on the same GPU.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from zoomtune.common.settings import worker_command
from zoomtune.workers.gpus import pinned_env

log = logging.getLogger("zoomtune.worker")

RESTART_DELAY = 1.0
"""Seconds before a slot that died is started again; doubled while it keeps dying young."""

MAX_RESTART_DELAY = 30.0

YOUNG = 10.0
"""A slot that dies within this many seconds of its start is restarted after a longer pause."""

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Slot:
    """One child worker process: what it consumes, how many trials at once, which device."""

    name: str  # "gpu0", "gpu0.2" (a second slot on GPU 0), "cpu"
    queue: str  # "gpu" or "cpu"
    concurrency: int
    device: str  # recorded with each trial: "gpu:0" or "cpu"
    gpu: str | None  # CUDA_VISIBLE_DEVICES for the slot; None hides every GPU


def plan_slots(gpu_ids: Sequence[str], trials_per_gpu: int, cpu_processes: int) -> list[Slot]:
    """`trials_per_gpu` single-trial slots per GPU, then one CPU slot of `cpu_processes`."""
    slots = []
    for gpu in gpu_ids:
        label = gpu if gpu.isdigit() else gpu.split("-", 1)[-1][:8]
        for k in range(1, trials_per_gpu + 1):
            name = f"gpu{label}" if trials_per_gpu == 1 else f"gpu{label}.{k}"
            slots.append(Slot(name=name, queue="gpu", concurrency=1, device=f"gpu:{gpu}", gpu=gpu))
    if cpu_processes > 0:
        slots.append(
            Slot(name="cpu", queue="cpu", concurrency=cpu_processes, device="cpu", gpu=None)
        )
    return slots


def _die_with_supervisor() -> None:
    """Ask Linux to send the slot SIGQUIT (cold shutdown) when its supervisor dies.

    Runs in the child between fork and exec; the setting survives the exec."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)


@dataclass
class SlotProcess:
    """A slot and the process currently running it."""

    slot: Slot
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restart_delay: float = RESTART_DELAY
    restarts: int = 0
    last_exit: int | None = None


@dataclass
class Supervisor:
    """Runs `slots` as child processes until a signal stops them; `run()` returns the exit code."""

    slots: Sequence[Slot]
    command: Callable[[Slot], list[str]]
    env: Callable[[Slot], Mapping[str, str]]
    poll_interval: float = 0.2
    _children: list[SlotProcess] = field(default_factory=list, repr=False)
    _stopping: signal.Signals | None = field(default=None, repr=False)

    def run(self) -> int:
        self._children = [SlotProcess(slot) for slot in self.slots]
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        }
        try:
            for child in self._children:
                if self._stopping is None:
                    self._start(child)
            while not self._all_stopped():
                self._watch()
                time.sleep(self.poll_interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        failed = [c for c in self._children if c.last_exit not in (0, None)]
        log.info("all slots stopped%s", f" ({len(failed)} with an error)" if failed else "")
        return 1 if failed else 0

    def _start(self, child: SlotProcess) -> None:
        slot = child.slot
        child.process = subprocess.Popen(
            self.command(slot), env=dict(self.env(slot)), preexec_fn=_die_with_supervisor
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        if self._stopping is not None:  # the signal came while the process was being made
            child.process.send_signal(self._stopping)
        log.info(
            "slot %s started: pid %d, device %s, CUDA_VISIBLE_DEVICES=%r, queue trials.%s, "
            "%d process(es)",
            slot.name,
            child.process.pid,
            slot.device,
            "" if slot.gpu is None else slot.gpu,
            slot.queue,
            slot.concurrency,
        )

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.process is not None:
                code = child.process.poll()
                if code is None:
                    continue
                child.process, child.last_exit = None, code
                if self._stopping is not None:
                    log.info("slot %s stopped (exit code %d)", child.slot.name, code)
                    continue
                young = now - child.started_at < YOUNG
                child.restart_delay = (
                    min(child.restart_delay * 2, MAX_RESTART_DELAY) if young else RESTART_DELAY
                )
                child.restart_at = now + child.restart_delay
                log.warning(
                    "slot %s died (exit code %d); restarting it in %.0fs",
                    child.slot.name,
                    code,
                    child.restart_delay,
                )
            elif (
                self._stopping is None and child.restart_at is not None and now >= child.restart_at
            ):
                child.restarts += 1
                self._start(child)

    def _all_stopped(self) -> bool:
        return self._stopping is not None and all(c.process is None for c in self._children)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        forward = signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM
        if self._stopping is None or forward is signal.SIGQUIT:
            log.info(
                "%s: %s shutdown of %d slot(s)",
                signal.Signals(signum).name,
                "cold" if forward is signal.SIGQUIT else "warm",
                len(self._children),
            )
        self._stopping = forward
        for child in self._children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(forward)


__all__ = ["Slot", "SlotProcess", "Supervisor", "plan_slots"]


def slot_command(
    slot: Slot,
    node: str,
    objectives: tuple[str, ...],
    loglevel: str,
    health_file: Path | None = None,
    allow_sklearn_payloads: bool = False,
) -> list[str]:
    """The `worker start` command line of one slot: a plain Celery worker, no GPU search.

    Every slot touches the same health file, so it stays fresh while any slot is consuming
    (the supervisor restarts slots that die)."""
    left, at, right = node.partition("@")
    command = [
        *worker_command("start"),
        "--gpus",
        "none",
        "--queues",
        slot.queue,
        "--concurrency",
        str(slot.concurrency),
        "--device",
        slot.device,
        "--name",
        f"{left}-{slot.name}{at}{right}",
        "--loglevel",
        loglevel,
    ]
    for objective in objectives:
        command += ["--objective", objective]
    if health_file is not None:
        command += ["--health-file", str(health_file)]
    if allow_sklearn_payloads:
        command.append("--allow-sklearn-payloads")
    return command


def slot_env(slot: Slot, broker_url: str) -> dict[str, str]:
    """The slot's environment: pinned to its GPU (or to none); the broker URL, which may hold
    a password, travels here rather than on the command line."""
    env = pinned_env(os.environ, slot.gpu)
    env["ZOOMTUNE_BROKER_URL"] = broker_url
    return env
