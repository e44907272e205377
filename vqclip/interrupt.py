"""Stopping cleanly on Ctrl-C or SIGTERM: finish the current step, save the state, exit 130.

The handler only raises a flag; the run checks it after each step, writes state.pt and raises
`Interrupted`. A second signal while the state is being written is not lost: it stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving its state; the command line exits with 130."""


class StopFlag:
    def __init__(self):
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """Yield a StopFlag that becomes true on the first of `signals`; the second one interrupts."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be installed from the main thread
        return

    def handle(number, frame):
        if flag:  # a second signal: the user means it
            raise KeyboardInterrupt
        flag.signal = number

    previous = {number: signal.signal(number, handle) for number in signals}
    try:
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
