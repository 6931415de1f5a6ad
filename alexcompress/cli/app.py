"""The `alexcompress` command line: parse options, open files and streams, call the library, print with rich.

No algorithm lives here. Logs and tables go to stderr so stdout can carry data (`-o -`). Bad input is one
line on stderr and exit 1; bad usage is exit 2 (Typer/click's own handling).
"""

from __future__ import annotations

import os
import warnings
from typing import Annotated

import typer

from alexcompress import __version__
from alexcompress.cli import base

# isort: off
# each registers its commands on `app`, in this order in --help: the stages, running models, inspecting files
from alexcompress.cli import stages  # noqa: F401
from alexcompress.cli import running  # noqa: F401
from alexcompress.cli import inspection  # noqa: F401

# isort: on
from alexcompress.cli.base import _fail, _interrupted, app
from alexcompress.fileio import install_signal_handlers, stop_requested


def _version(value: bool) -> None:
    if value:
        print(f"alexcompress {__version__}")
        raise typer.Exit()


#: the commands that run data-parallel under torchrun (the others would have every rank write one output)
DATA_PARALLEL = ("prune", "quantize", "eval", "sensitivity", "compress")  # compress: its search (--data) only


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    max_elements: Annotated[
        int,
        typer.Option(
            "--max-elements",
            min=1,
            max=1 << 48,
            help="The most elements (weights and other tensor entries) a model or .dcz may hold in all; files declaring more are refused before any work.",
        ),
    ] = 1 << 33,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            max=256,
            help="Workers for the per-tensor work (each tensor's pruning, k-means/ECSQ and coding): forked processes, threads once torch is loaded; 0: one per core. The output is the same for any number.",
        ),
    ] = 1,
) -> None:
    """Deep Compression for AlexNet and any torchvision model: prune, quantize, Huffman-code into a real .dcz file, and back."""
    from alexcompress.codec.container import set_max_elements
    from alexcompress.parallel import set_jobs

    set_max_elements(max_elements)
    set_jobs(jobs)
    if ctx.invoked_subcommand not in DATA_PARALLEL and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise _fail(f"{ctx.invoked_subcommand} does not run under torchrun (only {', '.join(DATA_PARALLEL)} do); run it as one process")


def main() -> None:
    install_signal_handlers()
    with warnings.catch_warnings():  # libraries' notices (torch, PIL) are not for the user's stderr; restored on return
        warnings.simplefilter("ignore")
        _run()


def _run() -> None:
    try:
        app(prog_name="alexcompress")
    except KeyboardInterrupt as exc:  # while Typer builds the command, before any handler of its own
        message, code = _interrupted(stop_requested() or exc)
        _fail(message, code)
        raise SystemExit(code) from None
    except SystemExit as exc:
        interrupt = stop_requested()
        # Typer turns an interrupt outside a command body (building the command, parsing options) into a
        # silent exit 130: say it, with the signal's own code
        if interrupt is not None and not base._reported:
            message, code = _interrupted(interrupt)
            _fail(message, code)
            raise SystemExit(code) from None
        raise exc from None
