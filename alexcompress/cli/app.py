"""The `alexcompress` command line: parse options, open files and streams, call the library, print with rich.

No algorithm lives here. Logs and tables go to stderr so stdout can carry data (`-o -`). Bad input is one
line on stderr and exit 1; bad usage is exit 2 (Typer/click's own handling).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import sys
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from alexcompress import __version__
from alexcompress.cli.tables import printable
from alexcompress.codec.encodings import CODERS
from alexcompress.errors import AlexCompressError
from alexcompress.fileio import (
    STDIO,
    Terminated,
    check_output,
    check_outputs,
    default_output,
    install_signal_handlers,
    is_regular,
    read_lines,
    stop_requested,
    write_output,
)
from alexcompress.models.archs import MAX_NUM_CLASSES
from alexcompress.sources import DEFAULT_ARCH, InferenceModel, ModelInput, inference_model, keyword_stem, plan_output, read_model

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="alexcompress",
    help="Deep Compression for AlexNet and any torchvision model: prune, quantize, Huffman-code into a real .dcz file, and back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


_reported = False  # whether the one error line has been printed


def _error_line(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"alexcompress: error: {printable(message)}", markup=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    global _reported
    _reported = True
    _error_line(message)
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
    if isinstance(exc, Terminated):
        return f"terminated by {exc.name}", 128 + exc.signum
    return "interrupted", 130


def _console(quiet: bool = False, stderr: bool = True) -> Console:
    # wide enough for the Table-4 report when output is a file or pipe; a terminal keeps its own width
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream is not None and stream.isatty() else 140
    return Console(stderr=stderr, quiet=quiet, highlight=False, width=width)


# ------------------------------------------------------------------------------------------ option groups


def option_group(**groups: "type | tuple[type, dict[str, Any]]") -> Callable[[F], F]:
    """Declare a dataclass of options once and give it to several commands: its fields become the command's
    options (with per-command default overrides), and the command receives one instance per group.

    Typer has no option groups; it reads the function's signature, so the wrapper presents one in which each
    group is spelled out, and folds the values back into the dataclass before calling the command.
    """

    def decorate(func: F) -> F:
        hints = typing.get_type_hints(func, include_extras=True)
        signature = inspect.signature(func)
        keyword = inspect.Parameter.KEYWORD_ONLY
        params = [
            p.replace(kind=keyword, annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name not in groups
        ]
        expanded: dict[str, type] = {}
        for group, spec in groups.items():
            cls, defaults = spec if isinstance(spec, tuple) else (spec, {})
            cls_hints = typing.get_type_hints(cls, include_extras=True)
            for f in dataclasses.fields(cls):
                params.append(inspect.Parameter(f.name, keyword, default=defaults.get(f.name, f.default), annotation=cls_hints[f.name]))
            expanded[group] = cls

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            for group, cls in expanded.items():
                kwargs[group] = cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
            return func(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


ModelArg = Annotated[
    str,
    typer.Argument(
        help="A state-dict .pt file, a .dcz, '-' for stdin, 'random[:SEED[:CLASSES]]' for a seeded random-init model (default seed 0, 1000 classes), or 'pretrained' for torchvision's weights (downloads once).",
        show_default=False,
        metavar="MODEL",
    ),
]
OutputOpt = Annotated[
    Optional[str], typer.Option("--output", "-o", help="Output path, or '-' for stdout. Default: derived from MODEL.", show_default=False)
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file (never the input).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
ArchOpt = Annotated[
    Optional[str],
    typer.Option(
        "--arch",
        help="Architecture: any torchvision classification model name (alexnet, resnet50, mobilenet_v2, vit_b_16, ...), 'none' for a state dict of your own model, or 'auto' (files: detected from keys and shapes; keywords: alexnet).",
        show_default=False,
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random init, k-means init and retraining batches.")]
IndexBitsOpt = Annotated[
    str,
    typer.Option(
        "--index-bits",
        help="Relative-index width per layer: 'auto' (smallest file; layers kept whole or mostly are then coded "
        "without an index) or 1-12 (paper: 4; every layer sparse, as readers before 0.4.0 need).",
    ),
]
Coder = Enum("Coder", {name: name for name in CODERS}, type=str)  # type: ignore[misc]
CoderOpt = Annotated[
    Coder,
    typer.Option(
        "--coder",
        help="Entropy coder of the weights, the smallest encoding kept per layer: auto (all), huffman (the paper's "
        "static Huffman codes alone: files that readers before 0.6.0 decode), context (context-modelled rANS alone).",
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
SparseOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--sparse/--dense",
        help="Run a .dcz from its compressed form (sparse and coded layers, no dense weights) or decode it dense. Default: sparse for a .dcz, dense for a .pt.",
        show_default=False,
    ),
]


class Quantizer(str, Enum):
    kmeans = "kmeans"
    ecsq = "ecsq"


class Importance(str, Enum):
    none = "none"
    grad2 = "grad2"


class InitMethod(str, Enum):
    linear = "linear"
    density = "density"
    random = "random"


def check_range(what: str, value: "int | float | None", low: "int | float", high: "int | float | None" = None) -> None:
    """One line, exit 1, for an option outside its range (before any model is read)."""
    if value is None:
        return
    if not (low <= value and (high is None or value <= high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise AlexCompressError(f"{what} must be {bound}, got {value}")


MAX_IMAGE_SIDE = 4096
MAX_SEED = 2**63 - 1


def parse_assignments(text: str, what: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """`conv1=0.84,features.*=0.4` -> {"conv1": 0.84, "features.*": 0.4}, or a one-line error."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = convert(value.strip())
        except ValueError:
            raise AlexCompressError(
                f"bad {what} item {item!r}: expected LAYER=VALUE, e.g. fc6={'0.09' if convert is float else '4'}"
            ) from None
    if not out:
        raise AlexCompressError(f"{what} is empty: expected LAYER=VALUE items, e.g. conv1=0.84,fc6=0.09")
    return out


@dataclass
class PruneOptions:
    sparsity: Annotated[
        Optional[float],
        typer.Option(
            "--sparsity", "-s", help="Global magnitude pruning: fraction of all coded weights to zero, in [0, 1).", show_default=False
        ),
    ] = None
    rates: Annotated[
        Optional[str],
        typer.Option(
            "--rates",
            help="Per-layer keep rates by key, glob or alias: 'features.*=0.4,classifier.1=0.09' or 'conv1=0.84,fc6=0.09' (layers not named are kept whole).",
            show_default=False,
        ),
    ] = None
    preset: Annotated[
        Optional[str],
        typer.Option(
            "--preset", help="A named keep-rate table of the architecture: 'paper' is the paper's Table 4 (AlexNet).", show_default=False
        ),
    ] = None
    std_scale: Annotated[
        Optional[float], typer.Option("--std-scale", help="Prune |w| < SCALE * std(layer) in every layer.", show_default=False)
    ] = None
    target_ratio: Annotated[
        Optional[float],
        typer.Option(
            "--target-ratio",
            help="Choose per-layer keep rates and bits from --curves to reach this compression ratio at the least predicted "
            "damage (the layers' divergence); prune with --val also measures the drop with every layer changed together.",
            show_default=False,
        ),
    ] = None
    max_drop: Annotated[
        Optional[float],
        typer.Option(
            "--max-drop",
            help="Choose per-layer keep rates and bits from --curves: the smallest file within this top-1 drop (pp) before "
            "retraining; prune with --val measures it with every layer changed together, else the curves' prediction.",
            show_default=False,
        ),
    ] = None
    curves: Annotated[
        Optional[str],
        typer.Option(
            "--curves",
            help="Sensitivity curves from `alexcompress sensitivity --save` (for --target-ratio/--max-drop).",
            show_default=False,
        ),
    ] = None

    def allocation(self, measured: bool = False) -> Any:
        """The automatic per-layer allocation asked for, or None (as the curves predict it). `measured`: a
        --max-drop that validation images will decide, so the prediction must not refuse it (on a model
        whose curves are noisy the summed predicted drop can exceed any budget the joint figure meets); the
        smallest file the curves offer stands in until `pipeline.measure_allocation` replaces it."""
        from alexcompress.compression.sensitivity import allocate, check_max_drop, least_compression

        if self.target_ratio is None and self.max_drop is None:
            if self.curves is not None:
                raise AlexCompressError("--curves is read by --target-ratio or --max-drop; give one of them")
            return None
        if self.target_ratio is not None and self.max_drop is not None:
            raise AlexCompressError("give --target-ratio or --max-drop, not both")
        if any(x is not None for x in (self.sparsity, self.rates, self.preset, self.std_scale)):
            raise AlexCompressError("--target-ratio/--max-drop choose the keep rates: drop --sparsity, --rates, --preset and --std-scale")
        if self.curves is None:
            raise AlexCompressError(
                "--target-ratio/--max-drop choose from measured curves: run 'alexcompress sensitivity MODEL --data VAL "
                "--save curves.json' first and pass --curves curves.json"
            )
        if measured and self.max_drop is not None:
            check_max_drop(self.max_drop)
            return least_compression(self.read_curves())
        return allocate(self.read_curves(), target_ratio=self.target_ratio, max_drop=self.max_drop)

    def read_curves(self) -> Any:
        from alexcompress.compression.sensitivity import read_curves

        return read_curves(self.curves)

    def spec(self, allocation: Any = None) -> Any:
        from alexcompress.compression.specs import PruneSpec

        if allocation is not None:
            return PruneSpec(rates=dict(allocation.rates))
        if self.target_ratio is not None or self.max_drop is not None:  # a command that does not allocate (report)
            raise AlexCompressError("--target-ratio/--max-drop work on prune and compress; give --rates there")
        if sum(x is not None for x in (self.sparsity, self.rates, self.preset, self.std_scale)) > 1:
            raise typer.BadParameter("give only one of --sparsity, --rates, --preset, --std-scale")
        rates = parse_assignments(self.rates, "--rates", float) if self.rates is not None else None
        return PruneSpec(sparsity=self.sparsity, rates=rates, preset=self.preset, std_scale=self.std_scale)


@dataclass
class QuantOptions:
    conv_bits: Annotated[int, typer.Option("--conv-bits", help="Bits per conv weight code (1-8).")] = 8
    fc_bits: Annotated[int, typer.Option("--fc-bits", help="Bits per weight code of the other coded layers (1-8).")] = 5
    bits: Annotated[
        Optional[int], typer.Option("--bits", help="Bits for every layer (overrides --conv-bits/--fc-bits).", show_default=False)
    ] = None
    layer_bits: Annotated[
        Optional[str],
        typer.Option(
            "--layer-bits",
            help="Per-layer bits by key, glob or alias, e.g. 'features.*=6,fc8=4' (wins over the others).",
            show_default=False,
        ),
    ] = None
    init: Annotated[InitMethod, typer.Option("--init", help="Centroid initialisation (linear is the paper's finding).")] = InitMethod.linear
    shared_codebook: Annotated[bool, typer.Option("--shared-codebook", help="One codebook for all layers (the seed script's method).")] = (
        False
    )
    quantizer: Annotated[
        Quantizer,
        typer.Option("--quantizer", help="kmeans (the paper) or ecsq (entropy-constrained: fewer, cheaper codes; a smaller file)."),
    ] = "kmeans"  # type: ignore[assignment]
    rate_weight: Annotated[
        float, typer.Option("--rate-weight", help="ecsq: weight of code length (bits) against squared error / weight variance.")
    ] = 0.02
    importance: Annotated[
        Importance,
        typer.Option(
            "--importance",
            help="Weigh each weight's error by its importance: grad2 = mean squared gradient over a few batches of --data (Choi et al.).",
        ),
    ] = Importance.none
    importance_batches: Annotated[
        int, typer.Option("--importance-batches", help="Batches of --data (at --batch-size) that --importance grad2 averages.")
    ] = 16

    def spec(self, seed: int, *, trains: bool = False) -> Any:
        """The quantization spec; widths checked with the flag names before a 230 MB model is read.
        `trains`: the command was given training images (`--importance` needs them)."""
        from alexcompress.compression.quantization import check_bits
        from alexcompress.compression.specs import QuantizeSpec

        importance = Importance(self.importance).value
        check_range("--importance-batches", self.importance_batches, 1, 1 << 20)
        if importance != "none" and not trains:
            raise AlexCompressError(f"--importance {importance} needs training images: give --data to quantize")

        for what, value in (("--conv-bits", self.conv_bits), ("--fc-bits", self.fc_bits), ("--bits", self.bits)):
            if value is not None:
                check_bits(what, value)
        layer_bits = parse_assignments(self.layer_bits, "--layer-bits", int) if self.layer_bits is not None else {}
        for name, value in layer_bits.items():
            check_bits(f"--layer-bits {name}", value)
        check_range("--rate-weight", self.rate_weight, 0, 100)
        return QuantizeSpec(
            self.conv_bits,
            self.fc_bits,
            self.bits,
            layer_bits,
            self.init.value,
            seed,
            self.shared_codebook,
            Quantizer(self.quantizer).value,
            self.rate_weight,
            importance,
            self.importance_batches,
        )


@dataclass
class ImageOptions:
    image_size: Annotated[int, typer.Option("--image-size", help="Centre-crop size fed to the model.")] = 224
    resize: Annotated[int, typer.Option("--resize", help="Resize the shorter side to this before cropping.")] = 256
    mean: Annotated[str, typer.Option("--mean", help="Normalisation mean (1 or 3 comma-separated values).")] = "0.485,0.456,0.406"
    std: Annotated[str, typer.Option("--std", help="Normalisation std (1 or 3 comma-separated values).")] = "0.229,0.224,0.225"

    def preprocessing(self) -> Any:
        from alexcompress.train.data import Preprocessing, parse_floats

        check_range("--image-size", self.image_size, 1, MAX_IMAGE_SIDE)
        check_range("--resize", self.resize, 1, MAX_IMAGE_SIDE)
        mean, std = parse_floats(self.mean, "--mean"), parse_floats(self.std, "--std")
        if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
            raise AlexCompressError(f"--mean must be finite and --std finite and > 0, got {self.mean} and {self.std}")
        return Preprocessing(self.image_size, self.resize, mean, std)


class Augment(str, Enum):
    none = "none"
    flip = "flip"
    crop_flip = "crop-flip"


class Schedule(str, Enum):
    constant = "constant"
    step = "step"
    cosine = "cosine"


class Amp(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class Keep(str, Enum):
    best = "best"
    last = "last"


@dataclass
class TrainOptions:
    """Everything a retraining stage needs from the command line (prune --data, quantize --data)."""

    data: Annotated[
        Optional[str],
        typer.Option("--data", help="ImageFolder tree (DIR/CLASS/IMAGE) to retrain on; without it, no retraining.", show_default=False),
    ] = None
    epochs: Annotated[int, typer.Option("--epochs", help="Retraining epochs (with --data).")] = 1
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate for retraining.")] = 1e-3
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd (with --momentum) or adam.")] = "sgd"
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum, in [0, 1).")] = 0.9
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="L2 weight decay.")] = 0.0
    schedule: Annotated[
        Schedule,
        typer.Option("--schedule", help="Learning rate over the run: constant, step (x0.1 every --step-size epochs) or cosine (to 0)."),
    ] = Schedule.constant
    warmup: Annotated[float, typer.Option("--warmup", help="Epochs of linear learning-rate warm-up from 0 (fractions allowed).")] = 0.0
    step_size: Annotated[int, typer.Option("--step-size", help="Epochs between decays of --schedule step (0: a third of the run).")] = 0
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Label smoothing of the cross-entropy, in [0, 1).")] = 0.0
    augment: Annotated[
        Augment,
        typer.Option(
            "--augment",
            help="Training augmentation: none (evaluation's preprocessing; right for any data), flip (mirror), crop-flip (random crops + mirror: AlexNet's ImageNet recipe).",
        ),
    ] = Augment.none
    val: Annotated[
        Optional[str],
        typer.Option("--val", help="ImageFolder tree evaluated after every epoch; the best epoch is kept.", show_default=False),
    ] = None
    val_fraction: Annotated[
        Optional[float],
        typer.Option(
            "--val-fraction", help="Hold out this fraction of every class of --data for validation (seeded by --seed).", show_default=False
        ),
    ] = None
    keep: Annotated[Keep, typer.Option("--keep", help="With validation: keep the best epoch by validation top-1, or the last.")] = Keep.best
    patience: Annotated[
        Optional[int],
        typer.Option("--patience", help="With validation: stop after this many epochs without a better top-1.", show_default=False),
    ] = None
    batch_size: BatchOpt = 64
    workers: WorkersOpt = 0
    device: DeviceOpt = "auto"
    checkpoint: Annotated[
        Optional[str],
        typer.Option(
            "--checkpoint",
            help="Checkpoint written every epoch and on Ctrl-C, removed on success (default: OUTPUT.ckpt).",
            show_default=False,
        ),
    ] = None
    checkpoint_every: Annotated[
        int,
        typer.Option("--checkpoint-every", help="Also checkpoint every this many batches, for mid-epoch resume (0: per epoch only)."),
    ] = 0
    amp: Annotated[Amp, typer.Option("--amp", help="Mixed precision: off, bf16 (CUDA or CPU) or fp16 (CUDA, with loss scaling).")] = "off"  # type: ignore[assignment]
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted retraining from its checkpoint.")] = False
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Leave the checkpoint behind after a successful run.")] = False
    log_every: Annotated[
        int, typer.Option("--log-every", help="When stderr is not a terminal: a progress line every this many batches.")
    ] = 50

    def config(self, model: str, output: str, seed: int) -> Any:
        """The training configuration, every value checked before a model is read."""
        from alexcompress.train.data import resolve_device
        from alexcompress.train.trainer import TrainConfig, default_checkpoint

        for what, value, low, high in (
            ("--epochs", self.epochs, 0, 100_000),
            ("--batch-size", self.batch_size, 1, 1 << 20),
            ("--workers", self.workers, 0, 1024),
            ("--step-size", self.step_size, 0, None),
            ("--log-every", self.log_every, 1, None),
            ("--checkpoint-every", self.checkpoint_every, 0, None),
            ("--patience", self.patience, 1, None),
        ):
            check_range(what, value, low, high)
        if self.val is not None and self.val_fraction is not None:
            raise AlexCompressError("give --val or --val-fraction, not both")
        if self.val is None and self.val_fraction is None and (self.patience is not None or self.keep is Keep.last):
            raise AlexCompressError("--patience and --keep need validation data: --val DIR or --val-fraction F")
        resolve_device(self.device, "--device")
        checkpoint = self.checkpoint or default_checkpoint(output)
        if checkpoint is not None:
            _check_checkpoint(checkpoint, model, output, self.resume)
        # neither may land among the images read (-o was checked for clobbering when it was planned)
        check_outputs(((output, "-o"), (checkpoint, "--checkpoint")), trees=(self.data, self.val), force=True)
        config = TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            workers=self.workers,
            seed=seed,
            device=self.device,
            schedule=self.schedule.value,
            warmup_epochs=self.warmup,
            step_size=self.step_size,
            label_smoothing=self.label_smoothing,
            keep=self.keep.value,
            patience=self.patience,
            checkpoint=checkpoint,
            resume=self.resume,
            keep_checkpoint=self.keep_checkpoint,
            checkpoint_every=self.checkpoint_every,
            amp=Amp(self.amp).value,
        )
        config.validate()
        return config

    def datasets(self, images: ImageOptions, seed: int) -> tuple[Any, Any]:
        """(training set, validation set or None)."""
        from alexcompress.train.data import image_folder, split_folder

        prep = images.preprocessing()
        if self.val_fraction is not None:
            return split_folder(self.data, prep, self.augment.value, self.val_fraction, seed)
        validation = image_folder(self.val, prep) if self.val is not None else None
        return image_folder(self.data, prep, self.augment.value), validation

    def job(self, images: ImageOptions, model: str, output: str, seed: int, *, regrow: bool = False) -> Any:
        """The retraining `api.Training` these options ask for, or None without --data."""
        from alexcompress.api import Training

        if self.data is None:
            return None
        config = self.config(model, output, seed)
        if regrow:
            config = dataclasses.replace(config, regrow=True)
        dataset, validation = self.datasets(images, seed)
        return Training(dataset, config, validation)

    @property
    def validates(self) -> bool:
        """Whether `datasets` will return a validation set."""
        return self.data is not None and (self.val is not None or self.val_fraction is not None)


def _check_checkpoint(checkpoint: str, model: str, output: str, resume: bool) -> None:
    """A checkpoint never replaces the input or the output, and never an existing file by surprise."""
    path = os.path.realpath(checkpoint)
    for other, what in ((model, "the input"), (output, "the output")):
        if other != STDIO and (
            path == os.path.realpath(other) or (os.path.exists(other) and os.path.exists(path) and os.path.samefile(other, path))
        ):
            raise AlexCompressError(f"{checkpoint}: is {what}; choose another --checkpoint")
    if os.path.islink(checkpoint):
        raise AlexCompressError(f"{checkpoint}: is a symbolic link; refusing to write through it (choose another --checkpoint)")
    if os.path.isdir(checkpoint):
        raise AlexCompressError(f"{checkpoint}: is a directory; give a file name with --checkpoint")
    if os.path.exists(checkpoint) and not is_regular(checkpoint):
        raise AlexCompressError(f"{checkpoint}: is not a regular file (a FIFO, socket or device); choose another --checkpoint")
    if os.path.lexists(checkpoint) and not resume:
        raise AlexCompressError(f"{checkpoint}: a checkpoint already exists: --resume continues it, or remove it to start over")


# ------------------------------------------------------------------------------------------ model input


def _announce(console: Console, source: "ModelInput | InferenceModel") -> None:
    """How the model was read (its architecture's detection, or how a .dcz runs), one line per note."""
    notes = source.notes if isinstance(source, InferenceModel) else [source.note] if source.note else []
    for note in notes:
        console.print(f"{printable(source.label)}: {note}", markup=False)


def _save_state(target: str, state: Any, arch: Optional[str] = None) -> None:
    from alexcompress.models.state import save_state_dict

    write_output(target, lambda handle: save_state_dict(state, handle, arch))  # streamed: no 230 MB copy in memory


def _wrote(console: Console, target: str) -> None:
    if target != STDIO:
        console.print(f"wrote {printable(target)} ({os.path.getsize(target):,} bytes)", markup=False)


def _parse_index_bits(text: str) -> Optional[int]:
    from alexcompress.codec.sparse_index import MAX_INDEX_BITS, MIN_INDEX_BITS

    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise AlexCompressError(f"--index-bits must be 'auto' or an integer, got {text!r}") from None
    if not MIN_INDEX_BITS <= value <= MAX_INDEX_BITS:
        raise AlexCompressError(f"--index-bits must be between {MIN_INDEX_BITS} and {MAX_INDEX_BITS}, got {value}")
    return value


# ------------------------------------------------------------------------------------------ printing


def _training_log(console: Console, every: int, job: Any) -> Any:
    """Training's progress display while `job` retrains; nothing without one."""
    import contextlib

    from alexcompress.cli.progress import training_log

    return training_log(console, every) if job is not None else contextlib.nullcontext(None)


def _events(console: Console, log: Any, arch: str, *, advice: bool = False) -> Any:
    """An `api.Events` that prints: notes, each pruning's table, allocation probes and the allocation (with
    `advice`, the --layer-bits that quantize should be given)."""
    from alexcompress.api import Events
    from alexcompress.cli.tables import print_allocation

    def allocation(chosen: Any) -> None:
        print_allocation(console, chosen, arch)
        if advice:
            console.print(f"quantize the result with: --layer-bits '{chosen.bits_option()}'", markup=False)

    return Events(
        note=lambda text: console.print(text, markup=False),
        pruned=lambda result: _print_pruning(console, result),
        probe=lambda a, drop: console.print(
            f"allocation at {a.predicted_ratio:.1f}x: validation top-1 {0.0 - drop:+.2f} pp, every layer changed together", markup=False
        ),
        allocation=allocation,
        log=log,
    )


def _print_pruning(console: Console, result: Any) -> None:
    table = Table(title=f"pruning: {result.method}", title_justify="left")
    for column in ("layer", "weights", "kept", "kept %", "threshold"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers:
        table.add_row(layer.name, f"{layer.weights:,}", f"{layer.kept:,}", f"{layer.kept_fraction:.2%}", f"{layer.threshold:.8f}")
    console.print(table)
    if result.method.startswith("global") and result.layers:
        console.print(f"Pruning threshold: {result.layers[0].threshold:.8f}")
    console.print(f"Total non-zero weights: {result.kept:,} / {result.weights:,}")
    console.print(f"Achieved sparsity: {result.sparsity:.2%}")


def _print_quantization(console: Console, result: Any, shared: bool) -> None:
    table = Table(title="quantization: per-layer k-means" + (" (shared codebook)" if shared else ""), title_justify="left")
    for column in ("layer", "bits", "nonzeros", "clusters", "mean |error|", "iterations"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers:
        table.add_row(
            layer.name, str(layer.bits), f"{layer.nonzeros:,}", str(layer.clusters), f"{layer.mean_abs_error:.3e}", str(layer.iterations)
        )
    console.print(table)


def _print_masks_held(console: Console, state: Any, arch: str) -> None:
    import numpy as np

    from alexcompress.models.state import as_numpy, compressible_keys

    keys = compressible_keys(state, arch)
    kept = sum(int(np.count_nonzero(as_numpy(state[k]))) for k in keys)
    total = sum(as_numpy(state[k]).size for k in keys)
    console.print(f"after retraining: {kept:,} / {total:,} weights nonzero (sparsity {1 - kept / max(total, 1):.2%})")


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
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--num-classes", num_classes, 1, MAX_NUM_CLASSES)
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
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--iterations", iterations, 1, 1000)
    if iterations > 1 and training.data is None:
        raise AlexCompressError("--iterations needs --data: iterative pruning retrains between rounds")
    if regrow and training.data is None:
        raise AlexCompressError("--regrow needs --data: pruned weights come back during retraining")
    with _job(training) as group:
        console = _console(quiet or not group.is_main)
        target = plan_output(model, arch, output, ".pruned.pt", force)
        job = training.job(images, model, target, seed, regrow=regrow)
        source = read_model(model, arch)
        with _training_log(console, training.log_every, job) as log:
            events = _events(console, log, source.arch, advice=True)
            if job is None:  # the report follows the detection note
                events.pruned = lambda result: None
            pruned = api.prune(
                source,
                spec,
                allocation=allocation,
                curves=method.read_curves() if allocation is not None and job is not None and job.validation is not None else None,
                max_drop=method.max_drop,
                training=job,
                iterations=iterations,
                events=events,
            )
        _announce(console, source)
        if pruned.result is not None:
            _print_pruning(console, pruned.result)
        else:
            _print_masks_held(console, pruned.state, source.arch)
        if group.is_main:  # under torchrun, rank 0 alone writes
            _save_state(target, pruned.state, source.arch)
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
    check_range("--seed", seed, 0, MAX_SEED)
    with _job(training) as group:
        console = _console(quiet or not group.is_main)
        target = plan_output(model, arch, output, ".quantized.pt", force)
        job = training.job(images, model, target, seed)
        source = read_model(model, arch)
        with _training_log(
            console, training.log_every, job
        ) as log:  # the tables follow the run, so that a refused checkpoint stays a one-line error
            state, result = api.quantize(source, spec, training=job, events=_events(console, log, source.arch))
        _announce(console, source)
        _print_quantization(console, result, spec.shared_codebook)
        if group.is_main:  # under torchrun, rank 0 alone writes
            _save_state(target, state, source.arch)
            _wrote(console, target)


def _job(training: "TrainOptions | None" = None, device: Optional[str] = None) -> Any:
    """The process group of a data-parallel run under torchrun (see `distributed`) for a command that trains
    (`--data`) or evaluates; a world of one otherwise."""
    import contextlib

    from alexcompress.train.distributed import Group, launched, session

    if training is not None:
        device = training.device if training.data is not None else None
    if device is None and launched().active:  # N processes would each write the same output
        raise AlexCompressError(
            "under torchrun only retraining (--data), eval and sensitivity run data-parallel; run this without torchrun"
        )
    return session(device) if device is not None else contextlib.nullcontext(Group())


def _device(name: str) -> None:
    """--device checked (and for torchrun, this rank's) before a model is read."""
    from alexcompress.train.distributed import rank_device

    rank_device(name, "--device")


def _dataset(root: str, images: ImageOptions) -> Any:
    from alexcompress.train.data import image_folder

    return image_folder(root, images.preprocessing())


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

    check_range("--limit", limit, 1)
    check_range("--batch-size", batch_size, 1, 1 << 20)
    check_range("--workers", workers, 0, 1024)
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


def _nats(value: float) -> str:
    """A divergence in at most five characters: 0.283, 4e-05, 0.

    >>> _nats(0.28312), _nats(0.0000412), _nats(0.0)
    ('0.283', '4e-05', '0')
    """
    return "0" if value == 0 else f"{value:.3f}" if value >= 0.001 else f"{value:.0e}"


@app.command()
@command
@option_group(images=ImageOptions)
def sensitivity(
    model: ModelArg,
    data: Annotated[
        str, typer.Option("--data", help="ImageFolder tree of validation images (not the test set you report).", show_default=False)
    ],
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

    keeps = _grid(keep_grid, "--keep-grid", float, 1e-4, 1.0)
    widths = _grid(bits_grid, "--bits-grid", int, 1, 8)
    check_range("--limit", limit, 1)
    check_range("--batch-size", batch_size, 1, 1 << 20)
    check_range("--workers", workers, 0, 1024)
    if plot == STDIO:
        raise AlexCompressError("--plot needs a file name (a PNG does not go to stdout)")
    check_outputs(((save, "--save"), (plot, "--plot")), inputs=(model,), trees=(data,), force=force)
    with _job(device=device) as group:  # under torchrun: each rank scores a shard, the figures summed
        console = _console(quiet or not group.is_main)
        dataset = _dataset(data, images)
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
        for what, grid, label in (("keep", keeps, lambda k: f"{k:.0%}"), ("bits", widths, lambda b: f"{b} bits")):
            changed = "pruned" if what == "keep" else "quantized"
            for suffix, title, cell in (
                ("", f"validation top-1 with one layer {changed} (baseline {curves.baseline:.2%})", lambda v: f"{100 * v:.1f}"),
                ("_kl", f"divergence from the original's predictions (mean KL, nats) with one layer {changed}", _nats),
            ):
                table = Table(title=title)
                table.add_column("layer")
                for point in grid:
                    table.add_column(label(point), justify="right")
                for layer in curves.layers:
                    table.add_row(printable(layer.name), *(cell(getattr(layer, what + suffix)[p]) for p in grid))
                out.print(table)
        out.print(
            f"{curves.samples:,} validation images, {len(curves.layers) * (len(keeps) + len(widths)) + 2} evaluations, {curves.seconds:.0f} s"
        )
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
    from alexcompress.runtime.predict import class_names, expand_images, predict_images
    from alexcompress.train.data import resolve_device

    check_range("--topk", topk, 1)
    check_range("--batch-size", batch_size, 1, 1 << 20)
    prep = preprocessing.preprocessing()
    if model == STDIO and STDIO in images:
        raise AlexCompressError("MODEL and IMAGE cannot both be '-' (stdin)")
    if STDIO in images:
        listed = read_lines(STDIO, "IMAGE")
        images = [p for arg in images for p in (listed if arg == STDIO else [arg])]
    paths = expand_images(images)
    console = _console(quiet)
    target_device = resolve_device(device, "--device")
    source = inference_model(model, arch, sparse)
    names = class_names(source.outputs, classes)
    _announce(console, source)
    out = _console(stderr=False)
    failed = 0

    def report(path: str, reason: str) -> None:
        nonlocal failed
        failed += 1
        _error_line(reason)

    for result in predict_images(source.module, paths, prep, topk=topk, batch_size=batch_size, device=target_device, on_error=report):
        out.print(printable(result.path), markup=False)
        for index, probability in zip(result.classes, result.probabilities):
            name = f"{names[index]} ({index})" if names else f"class {index}"
            out.print(f"  {probability:8.4%}  {printable(name)}", markup=False)
    if failed:
        raise AlexCompressError(f"{failed} of {len(paths)} images could not be read (each reported above)")


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
) -> None:
    """Stage 3: entropy-code a quantized model into a .dcz (lossless)."""
    from alexcompress import api
    from alexcompress.cli.tables import print_info
    from alexcompress.codec.container import parse_header

    width = _parse_index_bits(index_bits)
    console = _console(quiet)
    target = plan_output(model, arch, output, ".dcz", force)
    source = read_model(model, arch)
    data = api.encode(source, index_bits=width, coder=Coder(coder).value)
    write_output(target, data)
    _announce(console, source)
    print_info(console, parse_header(data), target if target != STDIO else "<stdout>")


@app.command()
@command
def decode(
    model: Annotated[str, typer.Argument(help="A .dcz file, or '-' for stdin.", metavar="FILE.dcz")],
    output: OutputOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode a .dcz back into a state dict .pt that the model loads (bit-exact)."""
    from alexcompress import api
    from alexcompress.sources import read_dcz

    console = _console(quiet)
    target = plan_output(model, None, output, ".decoded.pt", force)
    state, arch = api.decode(read_dcz(model))
    _save_state(target, state, arch)
    _wrote(console, target)


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
def compress(
    model: ModelArg,
    output: OutputOpt = None,
    seed: SeedOpt = 0,
    index_bits: IndexBitsOpt = "auto",
    coder: CoderOpt = "auto",  # type: ignore[assignment]
    verify: Annotated[bool, typer.Option("--verify", help="Decode the written file and check it against the quantized model.")] = False,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    method: PruneOptions = PruneOptions(),
    quant: QuantOptions = QuantOptions(),
) -> None:
    """All three stages in one process (AlexNet defaults to --preset paper, others to --sparsity 0.9)."""
    from alexcompress import api
    from alexcompress.cli.tables import print_info, print_ladder
    from alexcompress.codec.container import parse_header

    allocation = method.allocation()
    spec, quant_spec, width = method.spec(allocation), quant.spec(seed), _parse_index_bits(index_bits)
    check_range("--seed", seed, 0, MAX_SEED)
    console = _console(quiet)
    target = plan_output(model, arch, output, ".dcz", force)
    source = read_model(model, arch)
    events = _events(console, None, source.arch)
    result = api.compress(
        source, spec, quant_spec, allocation=allocation, index_bits=width, coder=Coder(coder).value, check=verify, events=events
    )
    _announce(console, source)
    _print_pruning(console, result.pruning)
    _print_quantization(console, result.quantization, quant_spec.shared_codebook)
    if verify:
        console.print("verified: the file decodes bit for bit to the quantized model")
    write_output(target, result.data)
    header = parse_header(result.data)
    print_info(console, header, target if target != STDIO else "<stdout>")
    print_ladder(console, header)


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
    check_range("--seed", seed, 0, MAX_SEED)
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


def _version(value: bool) -> None:
    if value:
        print(f"alexcompress {__version__}")
        raise typer.Exit()


#: the commands that run data-parallel under torchrun (the others would have every rank write one output)
DATA_PARALLEL = ("prune", "quantize", "eval", "sensitivity")


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Deep Compression for AlexNet and any torchvision model: prune, quantize, Huffman-code into a real .dcz file, and back."""
    if ctx.invoked_subcommand not in DATA_PARALLEL and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise _fail(f"{ctx.invoked_subcommand} does not run under torchrun (only {', '.join(DATA_PARALLEL)} do); run it as one process")


def main() -> None:
    install_signal_handlers()
    warnings.simplefilter("ignore")  # libraries' notices (torch, PIL) are not for the user's stderr
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
        if interrupt is not None and not _reported:
            message, code = _interrupted(interrupt)
            _fail(message, code)
            raise SystemExit(code) from None
        raise exc from None
