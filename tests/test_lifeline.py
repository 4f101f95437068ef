"""Children that end with the process that started them (`zoomtune.common.lifeline`), with real
processes: a middle process starts a child, then dies; the child must follow it within a second or
two."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import REPO, alive, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CHILD = """
import os, sys, time
from zoomtune.common.lifeline import PARENT_PID_ENV, watch_parent_from_env
watch_parent_from_env()
print(os.getpid(), PARENT_PID_ENV in os.environ, flush=True)
time.sleep(60)
"""


def middle(tmp_path: Path, how: str) -> int:
    """Run a process that starts CHILD `how` ("env": asking it to watch; "pdeathsig": with
    die_with_parent) and exits once the child runs; return the child's pid."""
    script = textwrap.dedent(
        f"""
        import os, signal, subprocess, sys
        from zoomtune.common.lifeline import PARENT_PID_ENV, die_with_parent
        env = dict(os.environ)
        if {how!r} == "env":
            env[PARENT_PID_ENV] = str(os.getpid())
        child = subprocess.Popen(
            [sys.executable, "-c", {CHILD!r}], env=env, stdout=open({str(tmp_path / "out")!r}, "w"),
            preexec_fn=die_with_parent(signal.SIGKILL) if {how!r} == "pdeathsig" else None,
        )
        while not open({str(tmp_path / "out")!r}).read():  # the child runs, then we die
            pass
        print(child.pid, flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[0])


@pytest.mark.parametrize("how", ["env", "pdeathsig"])
def test_a_child_ends_when_the_process_that_started_it_dies(tmp_path: Path, how: str) -> None:
    child = middle(tmp_path, how)
    try:
        wait_until(lambda: not alive(child), 10, what=f"child {child} to end")
    finally:
        if alive(child):
            os.kill(child, 9)


def test_the_request_to_watch_is_not_passed_on_to_the_childs_own_children(tmp_path: Path) -> None:
    # watch_parent_from_env removes the variable, so the child's own children never see it
    child = middle(tmp_path, "env")
    try:
        assert (tmp_path / "out").read_text().split() == [str(child), "False"]
    finally:
        if alive(child):
            os.kill(child, 9)
