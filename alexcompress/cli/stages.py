"""The stages: init, prune, quantize, encode, decode, and compress (all three in one process)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from alexcompress.cli.base import (
    _announce,
    _console,
    _events,
    _job,
    _parse_index_bits,
    _print_masks_held,
    _print_pruning,
    _print_quantization,
    _save_state,
    _training_log,
    _wrote,
    app,
    command,
    flag_of,
    parse_size,
)
from alexcompress.cli.options import (
    ArchOpt,
    Coder,
    CoderOpt,
    ForceOpt,
    ImageOptions,
    IndexBitsOpt,
    ModelArg,
    OutputOpt,
    PruneOptions,
    QuantOptions,
    QuietOpt,
    SeedOpt,
    TrainOptions,
    option_group,
)
from alexcompress.errors import AlexCompressError, check_range
from alexcompress.fileio import (
    STDIO,
    check_folder,
    check_output,
    check_outputs,
    write_output,
    write_outputs,
)
from alexcompress.sources import DEFAULT_ARCH, plan_output, read_model

if TYPE_CHECKING:
    pass

# ------------------------------------------------------------------------------------------ commands


@app.command()
@command
def init(
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the state dict (.pt), or '-'.")] = "alexnet.pt",
    num_classes: Annotated[int, typer.Option("--num-classes", help="Output classes of the random-init model.")] = 1000,
    seed: SeedOpt = 0,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="torchvision's pretrained weights instead (needs the network once).")
    ] = False,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a starting model: a seeded random-init torchvision model (offline), or the pretrained one."""
    from alexcompress import api

    console = _console(quiet)
    check_output(output, force=force)
    name = arch if arch not in (None, "auto") else DEFAULT_ARCH
    _save_state(output, api.init(name, num_classes, seed, pretrained=pretrained), name)
    _wrote(console, output)


@app.command()
@command
@option_group(method=PruneOptions, training=TrainOptions, images=ImageOptions)
def prune(
    model: ModelArg,
    output: OutputOpt = None,
    iterations: Annotated[
        int, typer.Option("--iterations", help="Iterative pruning: this many prune->retrain rounds up to the target (with --data).")
    ] = 1,
    regrow: Annotated[
        bool,
        typer.Option(
            "--regrow",
            help="Retraining may bring pruned weights back: before each epoch but a round's first, and at each round's "
            "pruning, a layer keeps its largest weights, pruned ones included (same count; with --data).",
        ),
    ] = False,
    seed: SeedOpt = 0,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    method: PruneOptions = PruneOptions(),
    training: TrainOptions = TrainOptions(),
    images: ImageOptions = ImageOptions(),
) -> None:
    """Stage 1: zero small-magnitude weights (AlexNet: --preset paper, others: --sparsity 0.9); --data retrains."""
    from alexcompress import api

    allocation = method.allocation(measured=training.validates)
    spec = method.spec(allocation)
    check_range("iterations", iterations, 1, api.MAX_ITERATIONS)
    if iterations > 1 and training.data is None:
        raise AlexCompressError("--iterations needs --data: iterative pruning retrains between rounds")
    if regrow and training.data is None:
        raise AlexCompressError("--regrow needs --data: pruned weights come back during retraining")
    with _job(training) as group:
        console = _console(quiet or not group.is_main)
        target = plan_output(model, arch, output, ".pruned.pt", force)
        job = training.job(images, model, target, seed, regrow=regrow)
        source = read_model(model, arch, widened=False)  # as read: the stage widens what it works on
        with _training_log(console, training.log_every, job) as log:
            events = _events(console, log, source.arch, advice=True)
            if job is None:  # the report follows the detection note
                events.pruned = lambda result: None
            pruned = api.prune(
                source,
                spec,
                allocation=allocation,
                curves=method.read_curves() if allocation is not None else None,
                max_drop=method.max_drop,
                target_ratio=method.target_ratio,
                training=job,
                iterations=iterations,
                events=events,
                stream=True,
            )
        _announce(console, source)
        if group.is_main:  # under torchrun, rank 0 alone writes; without training, each tensor is pruned as it is written
            _save_state(target, pruned.state, source.arch)
        if pruned.result is not None:
            _print_pruning(console, pruned.result)
        else:
            _print_masks_held(console, pruned.state, source.arch)
        if group.is_main:
            _wrote(console, target)


@app.command()
@command
@option_group(quant=QuantOptions, training=(TrainOptions, {"lr": 1e-4}), images=ImageOptions)
def quantize(
    model: ModelArg,
    output: OutputOpt = None,
    seed: SeedOpt = 0,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    quant: QuantOptions = QuantOptions(),
    training: TrainOptions = TrainOptions(),
    images: ImageOptions = ImageOptions(),
) -> None:
    """Stage 2: per-layer k-means weight sharing (<= 2^bits values); --data fine-tunes the centroids."""
    from alexcompress import api

    spec = quant.spec(seed, trains=training.data is not None)
    with _job(training) as group:
        console = _console(quiet or not group.is_main)
        target = plan_output(model, arch, output, ".quantized.pt", force)
        job = training.job(images, model, target, seed)
        source = read_model(model, arch, widened=False)  # as read: the stage widens what it works on
        with _training_log(
            console, training.log_every, job
        ) as log:  # the tables follow the run, so that a refused checkpoint stays a one-line error
            state, result = api.quantize(source, spec, training=job, events=_events(console, log, source.arch), stream=True)
        _announce(console, source)
        if group.is_main:  # under torchrun, rank 0 alone writes; without training, each tensor is clustered as it is written
            _save_state(target, state, source.arch)
        _print_quantization(console, result)
        if group.is_main:
            _wrote(console, target)


@app.command()
@command
def encode(
    model: ModelArg,
    output: OutputOpt = None,
    index_bits: IndexBitsOpt = "auto",
    coder: CoderOpt = "auto",  # type: ignore[assignment]
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    lossless_floats: Annotated[
        bool,
        typer.Option(
            "--lossless-floats",
            help="Store floating tensors that are not quantized (bfloat16, float32) with their exponents Huffman-coded, "
            "as DFloat11 does, instead of raw; an unquantized model is then encoded losslessly rather than refused.",
        ),
    ] = False,
) -> None:
    """Stage 3: entropy-code a quantized model into a .dcz (lossless)."""
    from alexcompress import api
    from alexcompress.cli.tables import print_info

    width = _parse_index_bits(index_bits)
    console = _console(quiet)
    target = plan_output(model, arch, output, ".dcz", force)
    source = read_model(model, arch, widened=False)  # every tensor as it was given, coded one at a time
    encoded = api.encode_to(source, index_bits=width, coder=Coder(coder).value, lossless=lossless_floats)
    write_output(target, encoded.payload)
    _announce(console, source)
    print_info(console, encoded.header, target if target != STDIO else "<stdout>")


@app.command()
@command
def decode(
    model: Annotated[str, typer.Argument(help="A .dcz file, or '-' for stdin.", metavar="FILE.dcz")],
    output: OutputOpt = None,
    shard_size: Annotated[
        Optional[str],
        typer.Option(
            "--shard-size",
            help="With -o NAME.safetensors.index.json: the most each shard NAME-0000K-of-0000N.safetensors holds "
            "(e.g. 2GB, 500MiB; default 5GB); a larger tensor gets a shard of its own.",
            metavar="SIZE",
        ),
    ] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode a .dcz back into a state dict that the model loads (bit-exact): a .pt, a .safetensors, or a
    sharded safetensors checkpoint (-o NAME.safetensors.index.json)."""
    from alexcompress import api
    from alexcompress.sources import read_dcz

    console = _console(quiet)
    shard_bytes = parse_size("--shard-size", shard_size) if shard_size is not None else None
    target = plan_output(model, None, output, ".decoded.pt", force)
    outputs = api.decode_outputs(read_dcz(model, mapped=True), target, shard_bytes)
    check_outputs(tuple((path, "-o") for path, _ in outputs if path != target), inputs=(model,), force=force)  # the shards
    write_outputs(outputs)
    for path, _ in outputs:
        _wrote(console, path)


COMPRESS_TRAINING = {"epochs": 2, "lr": 1e-4, "optimizer": "adam"}  # the search's retraining (the paper recipe's)
MAX_RUNGS = 6  # compression.search.MAX_RUNGS, without importing numpy to draw --help (tests hold the two equal)


def _changed(options: Any, defaults: Any) -> list[str]:
    """The fields of an option group given other than their defaults."""
    import dataclasses

    return [f.name for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(defaults, f.name)]


@app.command()
@command
@option_group(
    method=PruneOptions,
    quant=QuantOptions,
    training=(TrainOptions, COMPRESS_TRAINING),
    images=ImageOptions,
)
def compress(
    model: ModelArg,
    output: OutputOpt = None,
    seed: SeedOpt = 0,
    index_bits: IndexBitsOpt = "auto",
    coder: CoderOpt = "auto",  # type: ignore[assignment]
    verify: Annotated[bool, typer.Option("--verify", help="Decode the written file and check it against the quantized model.")] = False,
    plot: Annotated[
        Optional[str],
        typer.Option("--plot", help="With --data: draw the candidates' ratio against validation top-1 to this PNG.", show_default=False),
    ] = None,
    rungs: Annotated[
        int, typer.Option("--rungs", help="With --data: at most this many pruning steps, each retrained for --epochs.")
    ] = MAX_RUNGS,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    method: PruneOptions = PruneOptions(),
    quant: QuantOptions = QuantOptions(),
    training: TrainOptions = TrainOptions(),
    images: ImageOptions = ImageOptions(),
) -> None:
    """All three stages in one process (AlexNet defaults to --preset paper, others to --sparsity 0.9). With
    --data, --val/--val-fraction and --max-drop PP (or --target-ratio R): the search for the smallest file
    within PP of validation top-1, every choice (keep rates, widths, quantizer) made on validation, with
    retraining; resumable (--resume) from its work folder (--checkpoint, default OUTPUT.search)."""
    from alexcompress import api
    from alexcompress.cli.tables import print_info, print_ladder

    if training.data is not None:
        return _search(model, output, seed, index_bits, coder, verify, plot, rungs, arch, force, quiet, method, quant, training, images)
    if plot is not None:
        raise AlexCompressError("--plot draws the search's candidates: give --data (and --val or --val-fraction)")
    from alexcompress.train.distributed import launched

    if launched().active:  # N processes would each write the same file
        raise AlexCompressError("under torchrun compress runs only its search (--data); run it as one process")
    given = (
        _changed(training, TrainOptions(**COMPRESS_TRAINING)) + _changed(images, ImageOptions()) + (["rungs"] if rungs != MAX_RUNGS else [])
    )
    if given:
        raise AlexCompressError(
            f"{', '.join(flag_of(name) for name in given)}: the search's options; give --data (and --val or --val-fraction)"
        )
    allocation = method.allocation()
    spec, quant_spec, width = method.spec(allocation), quant.spec(seed), _parse_index_bits(index_bits)
    console = _console(quiet)
    target = plan_output(model, arch, output, ".dcz", force)
    source = read_model(model, arch, widened=False)  # api.compress streams it, tensor by tensor, where it can
    events = _events(console, None, source.arch)
    result = api.compress(
        source,
        spec,
        quant_spec,
        allocation=allocation,
        curves=method.read_curves() if allocation is not None else None,
        target_ratio=method.target_ratio,
        index_bits=width,
        coder=Coder(coder).value,
        check=verify,
        events=events,
    )
    _announce(console, source)
    _print_pruning(console, result.pruning)
    _print_quantization(console, result.quantization)
    if verify:
        console.print("verified: the file decodes bit for bit to the quantized model")
    write_output(target, result.payload)
    header = result.header
    print_info(console, header, target if target != STDIO else "<stdout>")
    print_ladder(console, header)


def _search(
    model: str,
    output: Optional[str],
    seed: int,
    index_bits: str,
    coder: str,
    verify: bool,
    plot: Optional[str],
    rungs: int,
    arch: Optional[str],
    force: bool,
    quiet: bool,
    method: PruneOptions,
    quant: QuantOptions,
    training: TrainOptions,
    images: ImageOptions,
) -> None:
    """compress --data: `api.search`, its table and plot, the file."""
    from alexcompress import api
    from alexcompress.cli.tables import print_info, print_search
    from alexcompress.codec.container import parse_header

    if any(x is not None for x in (method.sparsity, method.rates, method.preset, method.std_scale)):
        raise AlexCompressError("compress --data searches the keep rates: drop --sparsity, --rates, --preset and --std-scale")
    if quant != QuantOptions():
        raise AlexCompressError(
            "compress --data chooses the widths and the quantizer (k-means and ECSQ) on validation: drop the quantize options"
        )
    if not training.validates:
        raise AlexCompressError("compress --data chooses on validation images: give --val DIR or --val-fraction F")
    spec = api.SearchSpec(max_drop=method.max_drop, target_ratio=method.target_ratio, rungs=rungs, seed=seed)
    spec.check()
    width = _parse_index_bits(index_bits)
    if plot == STDIO:
        raise AlexCompressError("--plot needs a file name (a PNG does not go to stdout)")
    target = plan_output(model, arch, output, ".dcz", force)
    work = training.checkpoint or search_folder(target, model, arch)
    # before torchrun's ranks meet (the rendezvous waits for every rank): rank 0 then creates the folder
    check_folder(work, resume=training.resume, option="--checkpoint", trees=(training.data, training.val))
    check_outputs(((plot, "--plot"),), inputs=(model,), trees=(training.data, training.val), force=force)
    with _job(training) as group:
        console = _console(quiet or not group.is_main)
        job = training.job(images, model, target, seed, checkpoints=False)
        curves = method.read_curves() if method.curves is not None else None
        source = read_model(model, arch)
        _announce(console, source)
        with _training_log(console, training.log_every, job) as log:
            events = _events(console, log, source.arch)
            events.candidate = lambda c: console.print(
                f"rung {c.rung}, {c.label}: {c.ratio:.1f}x, validation top-1 {c.top1:.2%} ({-c.drop:+.2f} pp), loss {c.loss:.4f}",
                markup=False,
            )
            result = api.search(
                source,
                job,
                spec,
                work,
                curves=curves,
                resume=training.resume,
                index_bits=width,
                coder=Coder(coder).value,
                check=verify,
                events=events,
            )
        if not group.is_main:  # under torchrun, rank 0 alone writes
            return
        print_search(console, result, spec)
        if verify:
            console.print("verified: every file the search wrote decodes bit for bit to its quantized model")
        write_output(target, result.data)
        print_info(console, parse_header(result.data), target if target != STDIO else "<stdout>")
        if plot is not None:
            from pathlib import Path

            from alexcompress.cli.plots import search_figure

            search_figure(Path(plot), result, spec)
            _wrote(console, plot)


def search_folder(target: str, model: str, arch: Optional[str]) -> str:
    """The search's work folder: beside the output (`out.dcz.search`), or after the model for stdout."""
    from alexcompress.fileio import default_output
    from alexcompress.sources import keyword_stem

    if target != STDIO:
        return target + ".search"
    if model == STDIO:
        raise AlexCompressError("from stdin to stdout the search has no name for its work folder: give --checkpoint DIR")
    return default_output(model, ".search", keyword_stem(model, arch))
