"""Child processes that end when the process that started them dies, however it dies.

The embedded default's coordinator starts a private redis-server and local workers. It stops
them on every way out it sees (the study ends, an error, SIGINT, SIGTERM, SIGHUP), but a
SIGKILL or a crash gives it no way out at all. So each child also watches its parent:

- on Linux, the kernel sends the child a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`,
  set between fork and exec by `die_with_parent`; it survives the exec, so it works for a
  redis-server, which cannot watch anything itself);
- a worker also runs `watch_parent`, a thread that polls its parent pid (everywhere, and on
  Linux a second line of defence). The coordinator asks for it through `PARENT_PID_ENV`, which
  the worker removes from its environment at once, so its own children never inherit it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger("zoomtune")

PARENT_PID_ENV = "ZOOMTUNE_PARENT_PID"
"""Set by the embedded default on its local workers: the pid whose death ends the worker."""

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when this process dies.

    Only on Linux (elsewhere it does nothing). If this process died between the fork and the
    prctl call, the signal would never come, so the child then ends at once."""
    parent = os.getpid()

    def arrange() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os._exit(1)

    return arrange


def watch_parent_from_env(
    env: MutableMapping[str, str] = os.environ, interval: float = 0.5
) -> threading.Thread | None:
    """If `PARENT_PID_ENV` is set, remove it and exit this process once that parent is gone."""
    value = env.pop(PARENT_PID_ENV, None)
    if value is None:
        return None
    if not value.isdigit():
        raise ValueError(f"{PARENT_PID_ENV} must be a process id, got {value!r}")
    return watch_parent(int(value), interval)


def watch_parent(parent: int, interval: float = 0.5) -> threading.Thread:
    """A daemon thread that ends this process (exit code 70) when `parent` is no longer its
    parent: it died, and this process was handed to init or a subreaper."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.error("the process that started this one (pid %d) is gone; exiting", parent)
        os._exit(70)

    thread = threading.Thread(target=watch, name="zoomtune-parent-watch", daemon=True)
    thread.start()
    return thread


__all__ = ["PARENT_PID_ENV", "die_with_parent", "watch_parent", "watch_parent_from_env"]
