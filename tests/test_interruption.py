"""How `coordinator start` stops on a signal (zoomtune.coordinator.launch.Interruption)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SIGNAL_IN_A_DESTRUCTOR = textwrap.dedent(
    """
    import os, signal
    from zoomtune.coordinator.launch import Interrupted, Interruption

    class Dropper:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside __del__

    with Interruption() as interruption:
        Dropper()
        print("went on")
        try:
            interruption.check()
        except Interrupted as exc:
            print("raised again:", exc.signal_name)
    print("restored:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """
)


def test_a_signal_python_drops_inside_a_destructor_is_raised_again_at_the_next_check() -> None:
    # Given `coordinator start`'s signal handling, and a SIGTERM that lands inside a __del__
    # method (numpy's, while sampling), where Python drops whatever the handler raises
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_A_DESTRUCTOR],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then the program went on there, but the round loop's next check raises it again, and
    # the dropped one printed no traceback
    assert done.stdout.splitlines()[:2] == ["went on", "raised again: SIGTERM"], done.stderr
    assert done.stderr == ""
    # ... and once the block ends, the process's own handling is back
    assert done.stdout.splitlines()[2:] == ["restored: True"]
