"""Stopping a server the devtools started in a session of its own (its process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the group ``proc`` leads (``start_new_session``); SIGKILL what is left after
    ``timeout``, and whatever of the group outlives its leader."""
    if proc.poll() is None:
        # the whole group at once: SIGTERM to the leader alone may make it wait
        # for its children
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    signal_group(proc.pid, signal.SIGKILL)  # no process of the group may outlive it
