"""Looking at files: info (the paper's Table 4 from a real file) and report (figures)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from alexcompress.cli.base import (
    _announce,
    _console,
    _parse_index_bits,
    app,
    command,
    printable,
)
from alexcompress.cli.options import (
    ArchOpt,
    Coder,
    CoderOpt,
    ForceOpt,
    IndexBitsOpt,
    PruneOptions,
    QuantOptions,
    QuietOpt,
    SeedOpt,
    option_group,
)
from alexcompress.errors import AlexCompressError
from alexcompress.fileio import (
    STDIO,
    default_output,
)
from alexcompress.sources import keyword_stem, read_model

if TYPE_CHECKING:
    pass


@app.command()
@command
def info(
    model: Annotated[str, typer.Argument(help="A .dcz file (or a .pt state dict), or '-' for stdin.", metavar="FILE")],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also the most frequent codes and sample Huffman codes per layer.")
    ] = False,
    arch: ArchOpt = None,
) -> None:
    """The paper's Table 4 for a .dcz: per-layer bits, sizes and ratios; every number from the file."""
    from alexcompress import api
    from alexcompress.cli.tables import print_codes, print_info, print_state_dict

    console = _console(stderr=False)  # info's table is the data: it goes to stdout
    found = api.inspect(model, arch)
    if found.header is None:
        print_state_dict(console, found.state, found.arch, found.label)
        if found.note:
            _console().print(f"{printable(found.label)}: {found.note}", markup=False)
        return
    print_info(console, found.header, found.label)
    if verbose:
        print_codes(console, found.header, found.data)


@app.command()
@command
@option_group(method=PruneOptions, quant=QuantOptions)
def report(
    model: Annotated[
        str,
        typer.Argument(
            help="A .dcz file (drawn as it is), or any MODEL (compressed in memory first with the options below).",
            metavar="MODEL_OR_DCZ",
            show_default=False,
        ),
    ],
    output: Annotated[
        Optional[str], typer.Option("--output", "-o", help="Directory for the PNG figures. Default: <name>-report.", show_default=False)
    ] = None,
    seed: SeedOpt = 0,
    index_bits: IndexBitsOpt = "auto",
    coder: CoderOpt = "auto",  # type: ignore[assignment]
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    method: PruneOptions = PruneOptions(),
    quant: QuantOptions = QuantOptions(),
) -> None:
    """PNG figures of weights and codebooks, bytes by stream, the ladder, code lengths (needs the plot extra)."""
    from pathlib import Path

    from alexcompress import api
    from alexcompress.cli.plots import _pyplot, write_report
    from alexcompress.codec.container import parse_header
    from alexcompress.sources import is_dcz_file, read_dcz

    _pyplot()  # fail early, before any work, when matplotlib is missing
    spec, quant_spec, width = method.spec(), quant.spec(seed), _parse_index_bits(index_bits)
    if model == STDIO:
        raise AlexCompressError("report reads a file or a model keyword, not stdin")
    stem = keyword_stem(model, arch) or Path(default_output(model, "", None)).name
    out = Path(output if output is not None else f"{stem}-report")
    if out.is_symlink():
        raise AlexCompressError(f"{printable(str(out))}: is a symbolic link; refusing to write through it")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise AlexCompressError(f"{out}: already exists and is not an empty directory; use --force to write into it")
    console = _console(quiet)
    if is_dcz_file(model):
        data, original = read_dcz(model, "MODEL"), None
    else:
        source = read_model(model, arch)
        original = {k: v.copy() for k, v in source.state.items()}
        data = api.compress(source, spec, quant_spec, index_bits=width, coder=Coder(coder).value).data
        _announce(console, source)
    paths = write_report(out, parse_header(data), data, original)
    for path in paths:
        console.print(f"wrote {path}")
