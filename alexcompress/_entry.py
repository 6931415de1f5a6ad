"""The console entry point: signal handlers first, then the command line's imports, so that Ctrl-C (or any
terminating signal) at any moment, start-up included, ends in one line and the signal's exit code."""

from __future__ import annotations

import sys


def main() -> None:
    from .fileio import install_signal_handlers  # light: the package itself imports nothing up front

    install_signal_handlers()
    try:
        from .cli import main as run
    except KeyboardInterrupt as exc:
        from .fileio import Terminated

        name, code = (f"terminated by {exc.name}", 128 + exc.signum) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"alexcompress: error: {name}", file=sys.stderr)
        raise SystemExit(code) from None
    run()
