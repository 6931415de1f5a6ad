"""The console entry point: signal handlers first, then the command line's imports, so that Ctrl-C (or any
terminating signal) at any moment, start-up included, ends in one line and the signal's exit code.

Importing this module installs start-up handlers at once, before anything but `os` and `signal` is
imported: until the command line is imported and a command runs nothing has been written, so a signal
there prints the line and ends the process on the spot. `main` then replaces them with `fileio`'s, which
unwind (atomic writers remove their temporary files) instead.
"""

from __future__ import annotations

import os
import signal

#: the catchable terminating signals; `fileio.STOP_SIGNALS` handles the same (a test holds them equal)
STARTUP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF")
    if hasattr(signal, name)
)


def _stop_during_start_up(signum: int, frame: object) -> None:
    interrupted = signum == signal.SIGINT
    name = "interrupted" if interrupted else f"terminated by {signal.Signals(signum).name}"
    os.write(2, f"alexcompress: error: {name}\n".encode())
    os._exit(130 if interrupted else 128 + signum)


for _signum in STARTUP_SIGNALS:
    try:
        signal.signal(_signum, _stop_during_start_up)
    except (OSError, ValueError):  # not in the main thread, or not catchable here
        pass


def main() -> None:
    from alexcompress.cli.app import main as run  # under the start-up handlers: nothing is written before a command runs
    from alexcompress.fileio import install_signal_handlers

    install_signal_handlers()
    run()
