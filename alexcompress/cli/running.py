"""Running models: eval, sensitivity, predict."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from alexcompress.cli.base import (
    _announce,
    _console,
    _dataset,
    _device,
    _error_line,
    _job,
    _wrote,
    app,
    command,
    printable,
)
from alexcompress.cli.options import (
    ArchOpt,
    BatchOpt,
    DeviceOpt,
    ForceOpt,
    ImageOptions,
    ModelArg,
    QuietOpt,
    SeedOpt,
    SparseOpt,
    WorkersOpt,
    option_group,
)
from alexcompress.errors import AlexCompressError, check_range
from alexcompress.fileio import (
    STDIO,
    check_outputs,
    read_lines,
    write_output,
)
from alexcompress.sources import inference_model, read_model

if TYPE_CHECKING:
    pass


@app.command("eval")
@command
@option_group(images=ImageOptions)
def evaluate_command(
    model: ModelArg,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="ImageFolder tree (DIR/CLASS/IMAGE); class index = sorted folder order (ImageNet synsets match).",
            show_default=False,
        ),
    ],
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Evaluate at most this many images (per process under torchrun).", show_default=False)
    ] = None,
    arch: ArchOpt = None,
    quiet: QuietOpt = False,
    sparse: SparseOpt = None,
    images: ImageOptions = ImageOptions(),
) -> None:
    """Top-1, top-5 and loss of a .pt or .dcz on an ImageFolder tree (torchvision's ImageNet preprocessing)."""
    from rich.progress import Progress

    from alexcompress import api
    from alexcompress.train.data import epoch_order

    api.check_batches(batch_size, workers, limit)
    with _job(device=device) as group:  # under torchrun: each rank a shard, the counts summed
        console = _console(quiet or not group.is_main)
        dataset = _dataset(data, images)
        _device(device)
        source = inference_model(model, arch, sparse)
        api.check_classes(source, dataset)
        _announce(console, source)
        share = len(epoch_order(len(dataset), shuffle=False, rank=group.rank, world=group.world, pad=False))
        with Progress(console=console, transient=True) as display:
            task = display.add_task("evaluating", total=min(share, limit) if limit else share)
            result = api.evaluate(
                source,
                dataset,
                batch_size=batch_size,
                workers=workers,
                device=device,
                limit=limit,
                on_batch=lambda seen, _: display.update(task, completed=seen),
            )
        if group.is_main:
            _console(stderr=False).print(
                f"{printable(source.label)}: top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}  ({result.samples:,} images, {len(dataset.classes)} classes)",
                markup=False,
            )


def _grid(text: str, what: str, convert: Callable[[str], Any], low: float, high: float) -> tuple:
    try:
        values = tuple(sorted({convert(x) for x in text.split(",")}, reverse=True))
    except ValueError:
        raise AlexCompressError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or not all(low <= v <= high for v in values):
        raise AlexCompressError(f"{what} values must be between {low} and {high}, got {text!r}")
    return values


@app.command()
@command
@option_group(images=ImageOptions)
def sensitivity(
    model: ModelArg,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="ImageFolder tree of validation images (not the test set you report); with --val-fraction, the retraining "
            "images the stages split.",
            show_default=False,
        ),
    ],
    val_fraction: Annotated[
        Optional[float],
        typer.Option(
            "--val-fraction",
            help="Measure on this fraction of every class of --data, held out as prune/quantize/compress --val-fraction hold "
            "it out (the same --seed, the same images).",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = 0,
    save: Annotated[
        Optional[str], typer.Option("--save", help="Write the curves as JSON, for prune/compress --curves.", show_default=False)
    ] = None,
    plot: Annotated[
        Optional[str], typer.Option("--plot", help="Draw the curves to this PNG (needs matplotlib).", show_default=False)
    ] = None,
    keep_grid: Annotated[
        str, typer.Option("--keep-grid", help="Keep rates to try per layer.")
    ] = "1,0.7,0.5,0.35,0.25,0.15,0.1,0.07,0.05,0.03,0.02",
    bits_grid: Annotated[str, typer.Option("--bits-grid", help="Bit widths to try per layer.")] = "8,6,5,4,3,2",
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Score on at most this many images (per process under torchrun).", show_default=False)
    ] = None,
    batch_size: BatchOpt = 128,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    images: ImageOptions = ImageOptions(),
) -> None:
    """Validation top-1 with each layer alone pruned to each keep rate and quantized to each width (the
    paper's sensitivity curves), and how far the predictions move (KL divergence, what automatic allocation
    ranks by): the tables (stdout), --save for automatic allocation, --plot for the figure."""
    from alexcompress import api
    from alexcompress.cli.tables import print_curves

    keeps = _grid(keep_grid, "--keep-grid", float, 1e-4, 1.0)
    widths = _grid(bits_grid, "--bits-grid", int, 1, 8)
    api.check_batches(batch_size, workers, limit)
    if plot == STDIO:
        raise AlexCompressError("--plot needs a file name (a PNG does not go to stdout)")
    check_outputs(((save, "--save"), (plot, "--plot")), inputs=(model,), trees=(data,), force=force)
    with _job(device=device) as group:  # under torchrun: each rank scores a shard, the figures summed
        console = _console(quiet or not group.is_main)
        dataset = (
            _dataset(data, images)
            if val_fraction is None
            else api.held_out(data, images.preprocessing(), val_fraction, seed)
            if val_fraction is None
            else api.held_out(data, images.preprocessing(), val_fraction, seed)
        )
        _device(device)
        source = read_model(model, arch)
        _announce(console, source)
        curves = api.sensitivity(
            source,
            dataset,
            keep_grid=keeps,
            bits_grid=widths,
            batch_size=batch_size,
            workers=workers,
            device=device,
            limit=limit,
            on_step=lambda name, text: console.print(f"{name}: {text}", markup=False),
        )
        if not group.is_main:  # under torchrun, rank 0 alone prints and writes
            return
        out = _console(quiet, stderr=True) if save == STDIO else _console(stderr=False)  # stdout carries the JSON then
        print_curves(out, curves, keeps, widths)
        out.print(
            f"{curves.samples:,} validation images, {len(curves.layers) * (len(keeps) + len(widths)) + 2} evaluations, {curves.seconds:.0f} s"
        )
        warning = api.curves_warning(curves)
        if warning:
            console.print(warning, markup=False)
        if save is not None:
            write_output(save, (curves.to_json() + "\n").encode())
            _wrote(console, save)
        if plot is not None:
            from pathlib import Path

            from alexcompress.cli.plots import sensitivity_figure

            sensitivity_figure(Path(plot), curves)
            _wrote(console, plot)


@app.command()
@command
@option_group(preprocessing=ImageOptions)
def predict(
    model: ModelArg,
    images: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (their images, recursively) or glob patterns; '-' reads paths from stdin, one per line.",
            show_default=False,
            metavar="IMAGE...",
        ),
    ],
    topk: Annotated[int, typer.Option("--topk", help="Classes to print per image.")] = 5,
    classes: Annotated[
        Optional[str],
        typer.Option(
            "--classes",
            help="Class names: a text file (one per line) or an ImageFolder tree (its sorted class folders). Default: ImageNet's for 1000 outputs, else indices.",
            show_default=False,
        ),
    ] = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    sparse: SparseOpt = None,
    arch: ArchOpt = None,
    quiet: QuietOpt = False,
    preprocessing: ImageOptions = ImageOptions(),
) -> None:
    """Top-k classes and probabilities of each image (stdout); a file that is not an image is reported and
    the rest still predicted (exit 1 at the end)."""
    from alexcompress import api
    from alexcompress.runtime.predict import class_names, expand_images
    from alexcompress.train.data import resolve_device

    check_range("topk", topk, 1)
    api.check_batches(batch_size, 0, None)
    prep = preprocessing.preprocessing()
    if model == STDIO and STDIO in images:
        raise AlexCompressError("MODEL and IMAGE cannot both be '-' (stdin)")
    if STDIO in images:
        listed = read_lines(STDIO, "IMAGE")
        images = [p for arg in images for p in (listed if arg == STDIO else [arg])]
    paths = expand_images(images)
    console = _console(quiet)
    resolve_device(device, "--device")
    source = inference_model(model, arch, sparse)
    names = class_names(source.outputs, classes)
    _announce(console, source)
    out = _console(stderr=False)
    failed = 0

    def report(path: str, reason: str) -> None:
        nonlocal failed
        failed += 1
        _error_line(reason)

    for result in api.predict(source, paths, prep, topk=topk, batch_size=batch_size, device=device, on_error=report):
        out.print(printable(result.path), markup=False)
        for index, probability in zip(result.classes, result.probabilities):
            name = f"{names[index]} ({index})" if names else f"class {index}"
            out.print(f"  {probability:8.4%}  {printable(name)}", markup=False)
    if failed:
        raise AlexCompressError(f"{failed} of {len(paths)} images could not be read (each reported above)")
