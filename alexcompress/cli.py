"""The `alexcompress` command line: parse options, open files and streams, call the library, print with rich.

No algorithm lives here. Logs and tables go to stderr so stdout can carry data (`-o -`). Bad input is one
line on stderr and exit 1; bad usage is exit 2 (Typer/click's own handling).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typing_extensions import Annotated

from . import __version__
from .errors import AlexCompressError
from .fileio import STDIO, Terminated, check_output, default_output, install_signal_handlers, read_input, read_prefix, stop_requested, write_output

if TYPE_CHECKING:
    import numpy as np

app = typer.Typer(
    name="alexcompress",
    help="Deep Compression for AlexNet: prune, quantize, Huffman-code into a real .dcz file, and back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"alexcompress: error: {message}", markup=False)
    return typer.Exit(code)


def command(func: F) -> F:
    """Run a subcommand with the project's error contract: one line on stderr, exit 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AlexCompressError as exc:
            raise _fail(str(exc)) from None
        except BrokenPipeError:
            # the reader went away (`| head`): say so once, and keep Python's exit-time flush quiet
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # no real stdout (tests, embedding): nothing to quieten
                pass
            raise _fail("output pipe closed before all data was written") from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see main): temporary files are already gone
            raise _fail(*_interrupted(exc)) from None
        except MemoryError:
            raise _fail("out of memory") from None
        except Exception as exc:
            interrupt = stop_requested()
            if interrupt is not None:  # a library (torch.save) turned our interrupt into its own error
                raise _fail(*_interrupted(interrupt)) from None
            if isinstance(exc, OSError):
                where = f"{exc.filename}: " if exc.filename else ""
                raise _fail(f"{where}{exc.strerror or exc}") from None
            raise  # anything else is a bug: let the traceback show

    return wrapper


def _interrupted(exc: BaseException) -> tuple[str, int]:
    return ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)


def _console(quiet: bool = False, stderr: bool = True) -> Console:
    # wide enough for the Table-4 report when output is a file or pipe; a terminal keeps its own width
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream is not None and stream.isatty() else 140
    return Console(stderr=stderr, quiet=quiet, highlight=False, width=width)


# ------------------------------------------------------------------------------------------ model input


@dataclass
class ModelInput:
    state: "dict[str, np.ndarray]"  # float32 numpy arrays, whatever the source
    arch: str
    label: str


_RANDOM = re.compile(r"random(?::(\d+))?(?::(\d+))?")

MODEL_HELP = (
    "A state-dict .pt file, a .dcz, '-' for stdin, 'random[:SEED[:CLASSES]]' for a seeded random-init "
    "model (default seed 0, 1000 classes), or 'pretrained' for torchvision's ImageNet AlexNet (downloads once)."
)


def read_model(spec: str, arch: Optional[str] = None) -> ModelInput:
    """Resolve a MODEL argument into numpy arrays (torch is imported only where a source needs it); an
    existing file always wins over a keyword of the same name."""
    from .models import get_arch, load_arrays, load_state_dict, numpy_state, pretrained_alexnet, random_model, to_float32

    if arch is not None:
        get_arch(arch)
    if spec != STDIO and not os.path.exists(spec):
        match = _RANDOM.fullmatch(spec)
        if match:
            seed = int(match.group(1) or 0)
            classes = int(match.group(2) or 1000)
            name = arch or "alexnet"
            return ModelInput(numpy_state(random_model(name, classes, seed)), name, spec)
        if spec == "pretrained":
            if arch not in (None, "alexnet"):
                raise AlexCompressError("'pretrained' is torchvision's AlexNet; other architectures need a file")
            return ModelInput(numpy_state(pretrained_alexnet()), "alexnet", spec)
    from .codec import decode_arrays
    from .container import MAGIC, is_dcz

    label = "<stdin>" if spec == STDIO else spec
    if spec == STDIO:
        data = read_input(spec, "MODEL")
        if is_dcz(data):
            state, found = decode_arrays(data)
            return ModelInput(state, found, label)
        tensors, found = load_state_dict(data, arch=arch, name=label)
        return ModelInput(to_float32(numpy_state(tensors)), found, label)
    if is_dcz(read_prefix(spec, len(MAGIC))):
        state, found = decode_arrays(read_input(spec, "MODEL"))
        return ModelInput(state, found, label)
    state, found = load_arrays(spec, arch=arch, name=label)
    return ModelInput(state, found, label)


def _plan_output(spec: str, arch: Optional[str], output: Optional[str], suffix: str, force: bool) -> str:
    """The output path (given, or derived from MODEL), refused before any work if it would clobber."""
    target = output if output is not None else default_output(spec, suffix, _keyword_stem(spec, arch))
    check_output(target, inputs=(spec,), force=force)
    return target


def _keyword_stem(spec: str, arch: Optional[str]) -> Optional[str]:
    if spec != STDIO and not os.path.exists(spec):
        if _RANDOM.fullmatch(spec):
            return f"{arch or 'alexnet'}-random"
        if spec == "pretrained":
            return "alexnet-pretrained"
    return None


def _save_state(target: str, state: Any) -> None:
    import torch

    from .models import torch_state

    tensors = torch_state(state)
    write_output(target, lambda handle: torch.save(tensors, handle))  # streamed: no 230 MB copy in memory


def _wrote(console: Console, target: str) -> None:
    if target != STDIO:
        console.print(f"wrote {target} ({os.path.getsize(target):,} bytes)")


# ------------------------------------------------------------------------------------------ options

ModelArg = Annotated[str, typer.Argument(help=MODEL_HELP, show_default=False, metavar="MODEL")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Output path, or '-' for stdout. Default: derived from MODEL.", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file (never the input).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="Architecture: alexnet (default), vgg16, resnet18. Files are detected.", show_default=False)]


class Preset(str, Enum):
    paper = "paper"


class InitMethod(str, Enum):
    linear = "linear"
    density = "density"
    random = "random"


@dataclass
class PruneOptions:
    sparsity: Optional[float] = None
    rates: Optional[str] = None
    preset: Optional[Preset] = None
    std_scale: Optional[float] = None

    def chosen(self) -> int:
        return sum(x is not None for x in (self.sparsity, self.rates, self.preset, self.std_scale))


def _run_prune(state: Any, arch: str, options: PruneOptions, console: Console) -> Any:
    from .prune import parse_rates, prune_by_rates, prune_by_std, prune_global, prune_paper

    if options.preset is not None:
        if arch != "alexnet":
            raise AlexCompressError(f"--preset paper holds AlexNet's keep rates; for {arch} use --sparsity or --rates")
        result = prune_paper(state, inplace=True)
    elif options.rates is not None:
        result = prune_by_rates(state, parse_rates(options.rates), arch=arch, inplace=True)
    elif options.std_scale is not None:
        result = prune_by_std(state, options.std_scale, arch=arch, inplace=True)
    else:
        result = prune_global(state, options.sparsity if options.sparsity is not None else 0.9, arch=arch, inplace=True)
    table = Table(title=f"pruning: {result.method}", title_justify="left")
    for column in ("layer", "weights", "kept", "kept %", "threshold"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers:
        table.add_row(layer.name, f"{layer.weights:,}", f"{layer.kept:,}", f"{layer.kept_fraction:.2%}", f"{layer.threshold:.8f}")
    console.print(table)
    if options.sparsity is not None or options.chosen() == 0:
        console.print(f"Pruning threshold: {result.layers[0].threshold:.8f}" if result.layers else "")
    console.print(f"Total non-zero weights: {result.kept:,} / {result.weights:,}")
    console.print(f"Achieved sparsity: {result.sparsity:.2%}")
    return result


def _run_quantize(state: Any, arch: str, console: Console, **kwargs: Any) -> Any:
    from .quantize import quantize

    result = quantize(state, arch=arch, inplace=True, **kwargs)
    table = Table(title="quantization: per-layer k-means" + (" (shared codebook)" if kwargs.get("shared_codebook") else ""), title_justify="left")
    for column in ("layer", "bits", "nonzeros", "clusters", "mean |error|", "iterations"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers:
        table.add_row(layer.name, str(layer.bits), f"{layer.nonzeros:,}", str(layer.clusters), f"{layer.mean_abs_error:.3e}", str(layer.iterations))
    console.print(table)
    return result


def _check_bit_options(conv_bits: int, fc_bits: int, bits: Optional[int]) -> None:
    """Refuse bad widths before a 230 MB model is read (quantize() checks again for library users)."""
    from .quantize import check_bits

    for what, value in (("--conv-bits", conv_bits), ("--fc-bits", fc_bits), ("--bits", bits)):
        if value is not None:
            check_bits(what, value)


def _parse_index_bits(text: str) -> Optional[int]:
    from .sparse import MAX_INDEX_BITS, MIN_INDEX_BITS

    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise AlexCompressError(f"--index-bits must be 'auto' or an integer, got {text!r}") from None
    if not MIN_INDEX_BITS <= value <= MAX_INDEX_BITS:
        raise AlexCompressError(f"--index-bits must be between {MIN_INDEX_BITS} and {MAX_INDEX_BITS}, got {value}")
    return value


SparsityOpt = Annotated[Optional[float], typer.Option("--sparsity", "-s", help="Global magnitude pruning: fraction of all conv/fc weights to zero, in [0, 1).", show_default=False)]
RatesOpt = Annotated[Optional[str], typer.Option("--rates", help="Per-layer keep rates, e.g. conv1=0.84,fc6=0.09 (layers not named are kept whole).", show_default=False)]
PresetOpt = Annotated[Optional[Preset], typer.Option("--preset", help="'paper': the keep rates of the paper's Table 4 (AlexNet).", show_default=False)]
StdOpt = Annotated[Optional[float], typer.Option("--std-scale", help="Prune |w| < SCALE * std(layer) in every layer.", show_default=False)]
ConvBitsOpt = Annotated[int, typer.Option("--conv-bits", help="Bits per conv weight code (1-8).")]
FcBitsOpt = Annotated[int, typer.Option("--fc-bits", help="Bits per fc weight code (1-8).")]
BitsOpt = Annotated[Optional[int], typer.Option("--bits", help="Bits for every layer (overrides --conv-bits/--fc-bits).", show_default=False)]
InitOpt = Annotated[InitMethod, typer.Option("--init", help="Centroid initialisation (linear is the paper's finding).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random init (and anything random).")]
SharedOpt = Annotated[bool, typer.Option("--shared-codebook", help="One codebook for all layers (the seed script's method).")]
IndexBitsOpt = Annotated[str, typer.Option("--index-bits", help="Relative-index width per layer: 'auto' (smallest file) or 1-12 (paper: 4).")]


DataOpt = Annotated[Optional[str], typer.Option("--data", help="ImageFolder tree (DIR/CLASS/IMAGE) to retrain on; without it, no retraining.", show_default=False)]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Retraining epochs (with --data).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate for retraining.")]
OptimizerOpt = Annotated[str, typer.Option("--optimizer", help="sgd (with --momentum) or adam.")]
MomentumOpt = Annotated[float, typer.Option("--momentum", help="SGD momentum.")]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="L2 weight decay.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
CheckpointOpt = Annotated[Optional[str], typer.Option("--checkpoint", help="Checkpoint written every epoch and on Ctrl-C (default: OUTPUT.ckpt).", show_default=False)]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted retraining from its checkpoint.")]
ImageSizeOpt = Annotated[int, typer.Option("--image-size", help="Centre-crop size fed to the model.")]
ResizeOpt = Annotated[int, typer.Option("--resize", help="Resize the shorter side to this before cropping.")]
MeanOpt = Annotated[str, typer.Option("--mean", help="Normalisation mean (1 or 3 comma-separated values).")]
StdDevOpt = Annotated[str, typer.Option("--std", help="Normalisation std (1 or 3 comma-separated values).")]


@dataclass
class Training:
    """Everything a retraining stage needs from the command line."""

    data: Optional[str]
    epochs: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    batch_size: int
    workers: int
    device: str
    checkpoint: Optional[str]
    resume: bool
    seed: int
    image_size: int
    resize: int
    mean: str
    std: str

    def config(self, output: str) -> Any:
        from .train import TrainConfig, default_checkpoint

        config = TrainConfig(
            epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, momentum=self.momentum,
            weight_decay=self.weight_decay, batch_size=self.batch_size, workers=self.workers, seed=self.seed,
            device=self.device, checkpoint=self.checkpoint or default_checkpoint(output), resume=self.resume,
        )
        config.validate()
        return config

    def dataset(self, train: bool) -> Any:
        from .data import Preprocessing, image_folder, parse_floats

        prep = Preprocessing(self.image_size, self.resize, parse_floats(self.mean, "--mean"), parse_floats(self.std, "--std"))
        return image_folder(self.data, prep, train=train)


def _progress(console: Console) -> Any:
    """A rich progress display on stderr and the hook that feeds it (stage, epoch, batch, loss, accuracy)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    display = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), console=console, transient=False,
    )
    tasks: dict[tuple[str, int], Any] = {}

    def hook(stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float, accuracy: float) -> None:
        key = (stage, epoch)
        if key not in tasks:
            tasks[key] = display.add_task(f"{stage} epoch {epoch}/{epochs}", total=batches, stats="")
        display.update(tasks[key], completed=batch, stats=f"loss {loss:.4f}  acc {accuracy:.2%}")

    return display, hook


def _prune_options(sparsity: Optional[float], rates: Optional[str], preset: Optional[Preset], std_scale: Optional[float]) -> PruneOptions:
    options = PruneOptions(sparsity, rates, preset, std_scale)
    if options.chosen() > 1:
        raise typer.BadParameter("give only one of --sparsity, --rates, --preset, --std-scale")
    return options


# ------------------------------------------------------------------------------------------ commands


@app.command()
@command
def init(
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the state dict (.pt), or '-'.")] = "alexnet.pt",
    num_classes: Annotated[int, typer.Option("--num-classes", help="Output classes of the random-init model.")] = 1000,
    seed: SeedOpt = 0,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="torchvision's ImageNet AlexNet weights instead (needs the network once).")] = False,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a starting model: a seeded random-init AlexNet (offline), or the pretrained one."""
    from .models import pretrained_alexnet, random_model

    console = _console(quiet)
    check_output(output, force=force)
    if pretrained:
        if arch not in (None, "alexnet"):
            raise AlexCompressError("--pretrained is available for alexnet only")
        state = pretrained_alexnet()
    else:
        state = random_model(arch or "alexnet", num_classes, seed)
    _save_state(output, state)
    _wrote(console, output)


def _training(ctx_locals: dict[str, Any]) -> Training:
    return Training(**{name: ctx_locals[name] for name in Training.__dataclass_fields__})


@app.command()
@command
def prune(
    model: ModelArg,
    output: OutputOpt = None,
    sparsity: SparsityOpt = None,
    rates: RatesOpt = None,
    preset: PresetOpt = None,
    std_scale: StdOpt = None,
    data: DataOpt = None,
    epochs: EpochsOpt = 1,
    iterations: Annotated[int, typer.Option("--iterations", help="Iterative pruning: this many prune->retrain rounds up to the target (with --data).")] = 1,
    lr: LrOpt = 1e-3,
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    weight_decay: WeightDecayOpt = 0.0,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    checkpoint: CheckpointOpt = None,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    image_size: ImageSizeOpt = 224,
    resize: ResizeOpt = 256,
    mean: MeanOpt = "0.485,0.456,0.406",
    std: StdDevOpt = "0.229,0.224,0.225",
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stage 1: zero small-magnitude weights (default --sparsity 0.9); --data retrains the survivors."""
    options = _prune_options(sparsity, rates, preset, std_scale)
    if iterations < 1:
        raise AlexCompressError(f"--iterations must be at least 1, got {iterations}")
    if iterations > 1 and data is None:
        raise AlexCompressError("--iterations needs --data: iterative pruning retrains between rounds")
    console = _console(quiet)
    target = _plan_output(model, arch, output, ".pruned.pt", force)
    training = _training(locals())
    config = training.config(target) if data is not None else None
    dataset = training.dataset(train=True) if data is not None else None
    source = read_model(model, arch)
    if data is None:
        state = _run_prune(source.state, source.arch, options, console).state
    else:
        from .train import retrain_pruned

        original = source.state

        def prune_round(current: Any, r: int) -> Any:
            schedule = PruneOptions(**vars(options))
            fraction = r / iterations  # keep fraction shrinks geometrically to the target
            if options.sparsity is not None or options.chosen() == 0:
                target_sparsity = options.sparsity if options.sparsity is not None else 0.9
                schedule.sparsity = 1 - (1 - target_sparsity) ** fraction
            elif options.std_scale is not None:
                schedule.std_scale = options.std_scale * fraction
            else:
                from .models import PAPER_KEEP_RATES
                from .prune import parse_rates

                rates_now = PAPER_KEEP_RATES if options.preset is not None else parse_rates(options.rates or "")
                schedule.preset = None
                schedule.rates = ",".join(f"{k}={v ** fraction:.6f}" for k, v in rates_now.items())
            console.print(f"round {r}/{iterations}")
            return _run_prune(current, source.arch, schedule, console).state

        display, hook = _progress(console)
        with display:
            state = retrain_pruned(original, source.arch, dataset, config, prune_round=prune_round, rounds=iterations, progress=hook)
        _print_masks_held(console, state)
    _save_state(target, state)
    _wrote(console, target)


def _print_masks_held(console: Console, state: Any) -> None:
    import numpy as np

    from .models import as_numpy, is_compressible

    keys = [k for k, v in state.items() if is_compressible(k, v)]
    kept = sum(int(np.count_nonzero(as_numpy(state[k]))) for k in keys)
    total = sum(as_numpy(state[k]).size for k in keys)
    console.print(f"after retraining: {kept:,} / {total:,} weights nonzero (sparsity {1 - kept / total:.2%})")


@app.command()
@command
def quantize(
    model: ModelArg,
    output: OutputOpt = None,
    conv_bits: ConvBitsOpt = 8,
    fc_bits: FcBitsOpt = 5,
    bits: BitsOpt = None,
    init: InitOpt = InitMethod.linear,
    shared_codebook: SharedOpt = False,
    data: DataOpt = None,
    epochs: EpochsOpt = 1,
    lr: LrOpt = 1e-4,
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    weight_decay: WeightDecayOpt = 0.0,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    checkpoint: CheckpointOpt = None,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    image_size: ImageSizeOpt = 224,
    resize: ResizeOpt = 256,
    mean: MeanOpt = "0.485,0.456,0.406",
    std: StdDevOpt = "0.229,0.224,0.225",
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stage 2: per-layer k-means weight sharing (<= 2^bits values); --data fine-tunes the centroids."""
    _check_bit_options(conv_bits, fc_bits, bits)
    console = _console(quiet)
    target = _plan_output(model, arch, output, ".quantized.pt", force)
    training = _training(locals())
    config = training.config(target) if data is not None else None
    dataset = training.dataset(train=True) if data is not None else None
    source = read_model(model, arch)
    state = _run_quantize(
        source.state, source.arch, console, conv_bits=conv_bits, fc_bits=fc_bits, bits=bits,
        init=init.value, seed=seed, shared_codebook=shared_codebook,
    ).state
    if data is not None:
        from .train import finetune_centroids

        display, hook = _progress(console)
        with display:
            state = finetune_centroids(state, source.arch, dataset, config, progress=hook)
    _save_state(target, state)
    _wrote(console, target)


@app.command("eval")
@command
def evaluate_command(
    model: ModelArg,
    data: Annotated[str, typer.Option("--data", help="ImageFolder tree (DIR/CLASS/IMAGE); class index = sorted folder order (ImageNet synsets match).", show_default=False)],
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate at most this many images.", show_default=False)] = None,
    image_size: ImageSizeOpt = 224,
    resize: ResizeOpt = 256,
    mean: MeanOpt = "0.485,0.456,0.406",
    std: StdDevOpt = "0.229,0.224,0.225",
    arch: ArchOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Top-1, top-5 and loss of a .pt or .dcz on an ImageFolder tree (torchvision's ImageNet preprocessing)."""
    from .data import Preprocessing, image_folder, loader, parse_floats, resolve_device
    from .evaluate import evaluate
    from .models import build_model, num_classes_of

    if limit is not None and limit < 1:
        raise AlexCompressError(f"--limit must be at least 1, got {limit}")
    console = _console(quiet)
    prep = Preprocessing(image_size, resize, parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    dataset = image_folder(data, prep)
    target_device = resolve_device(device)
    source = read_model(model, arch)
    net = build_model(source.state, source.arch)
    classes = len(dataset.classes)
    outputs = num_classes_of(source.state, source.arch)
    if classes > outputs:
        raise AlexCompressError(f"{data}: {classes} class folders, but the model has only {outputs} outputs")
    total = min(len(dataset), limit) if limit else len(dataset)
    from rich.progress import Progress

    with Progress(console=console, transient=True) as display:
        task = display.add_task("evaluating", total=total)
        result = evaluate(net, loader(dataset, batch_size=batch_size, workers=workers), device=target_device, limit=limit,
                          on_batch=lambda seen, _: display.update(task, completed=seen))
    out = _console(stderr=False)
    out.print(f"{source.label}: top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}  ({result.samples:,} images, {classes} classes)")


@app.command()
@command
def encode(
    model: ModelArg,
    output: OutputOpt = None,
    index_bits: IndexBitsOpt = "auto",
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stage 3: Huffman-code a quantized model into a .dcz (lossless)."""
    from .codec import encode as encode_state
    from .container import parse_header
    from .report import print_info

    width = _parse_index_bits(index_bits)
    console = _console(quiet)
    target = _plan_output(model, arch, output, ".dcz", force)
    source = read_model(model, arch)
    data = encode_state(source.state, arch=source.arch, index_bits=width, options={"index_bits": index_bits})
    write_output(target, data)
    print_info(console, parse_header(data), target if target != STDIO else "<stdout>")


@app.command()
@command
def decode(
    model: Annotated[str, typer.Argument(help="A .dcz file, or '-' for stdin.", metavar="FILE.dcz")],
    output: OutputOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode a .dcz back into a state dict .pt that torchvision's model loads (bit-exact)."""
    from .codec import decode as decode_bytes
    from .container import is_dcz

    console = _console(quiet)
    target = _plan_output(model, None, output, ".decoded.pt", force)
    data = read_input(model, "FILE")
    if not is_dcz(data):
        raise AlexCompressError(f"{model}: not a .dcz file (bad magic number)")
    state, _ = decode_bytes(data)
    _save_state(target, state)
    _wrote(console, target)


@app.command()
@command
def info(
    model: Annotated[str, typer.Argument(help="A .dcz file (or a .pt state dict), or '-' for stdin.", metavar="FILE")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also the most frequent codes and sample Huffman codes per layer.")] = False,
) -> None:
    """The paper's Table 4 for a .dcz: per-layer bits, sizes and ratios; every number from the file."""
    from .container import is_dcz, parse_header
    from .report import print_info

    console = _console(stderr=False)  # info's table is the data: it goes to stdout
    data = read_input(model, "FILE")
    label = "<stdin>" if model == STDIO else model
    if not is_dcz(data):
        _info_state_dict(console, data, label)
        return
    header = parse_header(data)
    print_info(console, header, label)
    if verbose:
        _print_codes(console, header, data)


def _print_codes(console: Console, header: Any, data: bytes) -> None:
    from .container import decode_streams
    from .models import layer_names
    from .report import print_codes

    sparse = [t for t in header.tensors if t.encoding == "sparse_huffman"]
    names = layer_names(header.arch, [t.name for t in sparse])
    for entry in sparse:
        streams = decode_streams(header, data, entry)
        print_codes(console, entry, names[entry.name], streams.codes, streams.code_lengths, streams.codebook)


def _info_state_dict(console: Console, data: bytes, label: str) -> None:
    from .models import is_compressible, layer_names, load_state_dict, num_classes_of

    state, arch = load_state_dict(data, name=label)
    keys = [k for k, v in state.items() if is_compressible(k, v)]
    names = layer_names(arch, keys)
    table = Table(title=f"{label}: {arch} state dict, {num_classes_of(state, arch)} classes", title_justify="left")
    for column in ("layer", "weights", "nonzeros", "kept", "distinct nonzero values"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for key in keys:
        flat = state[key].reshape(-1)
        nonzero = flat[flat != 0]
        table.add_row(names[key], f"{flat.numel():,}", f"{nonzero.numel():,}", f"{nonzero.numel() / max(flat.numel(), 1):.2%}", f"{nonzero.unique().numel():,}")
    console.print(table)
    total = sum(v.numel() * v.element_size() for v in state.values())
    console.print(f"dense size: {total:,} bytes")


@dataclass
class CompressOptions:
    prune: PruneOptions
    conv_bits: int
    fc_bits: int
    bits: Optional[int]
    init: str
    seed: int
    shared_codebook: bool
    index_bits: str

    def check(self) -> Optional[int]:
        """Validate what can be validated before any work; returns the forced index width (or None)."""
        _check_bit_options(self.conv_bits, self.fc_bits, self.bits)
        return _parse_index_bits(self.index_bits)


def _compress_in_memory(source: ModelInput, options: CompressOptions, console: Console) -> tuple[Any, bytes]:
    """Prune, quantize and encode `source` (its arrays are pruned in place); returns (quantized, file)."""
    from .codec import encode as encode_state

    width = options.check()
    if options.prune.chosen() == 0 and source.arch == "alexnet":
        options.prune.preset = Preset.paper
    pruned = _run_prune(source.state, source.arch, options.prune, console)
    quantized = _run_quantize(
        pruned.state, source.arch, console, conv_bits=options.conv_bits, fc_bits=options.fc_bits, bits=options.bits,
        init=options.init, seed=options.seed, shared_codebook=options.shared_codebook,
    )
    recorded = {
        "prune": pruned.method, "conv_bits": options.bits or options.conv_bits, "fc_bits": options.bits or options.fc_bits,
        "init": options.init, "seed": options.seed, "shared_codebook": options.shared_codebook, "index_bits": options.index_bits,
    }
    return quantized.state, encode_state(quantized.state, arch=source.arch, index_bits=width, options=recorded)


@app.command()
@command
def compress(
    model: ModelArg,
    output: OutputOpt = None,
    sparsity: SparsityOpt = None,
    rates: RatesOpt = None,
    preset: PresetOpt = None,
    std_scale: StdOpt = None,
    conv_bits: ConvBitsOpt = 8,
    fc_bits: FcBitsOpt = 5,
    bits: BitsOpt = None,
    init: InitOpt = InitMethod.linear,
    seed: SeedOpt = 0,
    shared_codebook: SharedOpt = False,
    index_bits: IndexBitsOpt = "auto",
    verify: Annotated[bool, typer.Option("--verify", help="Decode the written file and check it against the quantized model.")] = False,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """All three stages in one process (AlexNet defaults to --preset paper, others to --sparsity 0.9)."""
    from .codec import decode_arrays
    from .container import parse_header
    from .report import print_info, print_ladder

    options = CompressOptions(_prune_options(sparsity, rates, preset, std_scale), conv_bits, fc_bits, bits, init.value, seed, shared_codebook, index_bits)
    options.check()
    console = _console(quiet)
    target = _plan_output(model, arch, output, ".dcz", force)
    source = read_model(model, arch)
    quantized, data = _compress_in_memory(source, options, console)
    if verify:
        decoded, _ = decode_arrays(data)
        bad = [k for k, v in quantized.items() if not _same_bits(decoded[k], v)]
        if bad:
            raise AlexCompressError(f"verification failed: {', '.join(bad)} differ after decoding (a bug: please report it)")
        console.print("verified: the file decodes bit for bit to the quantized model")
    write_output(target, data)
    header = parse_header(data)
    print_info(console, header, target if target != STDIO else "<stdout>")
    print_ladder(console, header)


@app.command()
@command
def report(
    model: Annotated[str, typer.Argument(help="A .dcz file (drawn as it is), or any MODEL (compressed in memory first with the options below).", metavar="MODEL_OR_DCZ", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Directory for the PNG figures. Default: <name>-report.", show_default=False)] = None,
    sparsity: SparsityOpt = None,
    rates: RatesOpt = None,
    preset: PresetOpt = None,
    std_scale: StdOpt = None,
    conv_bits: ConvBitsOpt = 8,
    fc_bits: FcBitsOpt = 5,
    bits: BitsOpt = None,
    init: InitOpt = InitMethod.linear,
    seed: SeedOpt = 0,
    index_bits: IndexBitsOpt = "auto",
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """PNG figures of weights and codebooks, bytes by stream, the ladder, code lengths (needs the plot extra)."""
    from pathlib import Path

    from .container import MAGIC, is_dcz, parse_header
    from .plots import _pyplot, write_report

    _pyplot()  # fail early, before any work, when matplotlib is missing
    options = CompressOptions(_prune_options(sparsity, rates, preset, std_scale), conv_bits, fc_bits, bits, init.value, seed, False, index_bits)
    options.check()
    if model == STDIO:
        raise AlexCompressError("report reads a file or a model keyword, not stdin")
    stem = _keyword_stem(model, arch) or Path(default_output(model, "", None)).name
    out = Path(output if output is not None else f"{stem}-report")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise AlexCompressError(f"{out}: already exists and is not an empty directory; use --force to write into it")
    console = _console(quiet)
    if os.path.isfile(model) and is_dcz(read_prefix(model, len(MAGIC))):
        data, original = read_input(model, "MODEL"), None
    else:
        source = read_model(model, arch)
        original = {k: v.copy() for k, v in source.state.items()}
        _, data = _compress_in_memory(source, options, Console(stderr=True, quiet=True))
    paths = write_report(out, parse_header(data), data, original)
    for path in paths:
        console.print(f"wrote {path}")


def _same_bits(a: Any, b: Any) -> bool:
    import numpy as np

    from .models import as_numpy, c_contiguous

    a, b = c_contiguous(as_numpy(a)), c_contiguous(as_numpy(b))
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def _version(value: bool) -> None:
    if value:
        print(f"alexcompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Deep Compression for AlexNet: prune, quantize, Huffman-code into a real .dcz file, and back."""


def main() -> None:
    install_signal_handlers()
    app(prog_name="alexcompress")
