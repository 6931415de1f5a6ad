"""The options shared by commands, as dataclasses that `option_group` spreads into a command's signature, and
the checks that name a flag."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from alexcompress.cli.base import F
from alexcompress.errors import AlexCompressError, check_range
from alexcompress.fileio import check_output, check_outputs

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
#: `codec.encodings.CODERS`' names, without importing numpy to draw --help (a test holds the two equal)
CODER_NAMES = ("auto", "huffman", "context")
Coder = Enum("Coder", {name: name for name in CODER_NAMES}, type=str)  # type: ignore[misc]
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


MAX_IMAGE_SIDE = 4096


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
        from alexcompress.compression.specs import parse_assignments

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
        float,
        typer.Option(
            "--rate-weight",
            help="ecsq: weight of code length (bits) against squared error / weight variance. Useful: 0.001-0.004, with "
            "widths 1-2 bits above what k-means would take (at the same widths ECSQ gains little); 0.002 -> 0.004 can cost "
            "pp: `compress --data ... --max-drop` tries these on validation and picks.",
        ),
    ] = 0.002
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
        check_range("importance_batches", self.importance_batches, 1, 1 << 20)
        if importance != "none" and not trains:
            raise AlexCompressError(f"--importance {importance} needs training images: give --data to quantize")

        for what, value in (("--conv-bits", self.conv_bits), ("--fc-bits", self.fc_bits), ("--bits", self.bits)):
            if value is not None:
                check_bits(what, value)
        from alexcompress.compression.specs import parse_assignments

        layer_bits = parse_assignments(self.layer_bits, "--layer-bits", int) if self.layer_bits is not None else {}
        for name, value in layer_bits.items():
            check_bits(f"--layer-bits {name}", value)
        check_range("rate_weight", self.rate_weight, 0, 100)
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

        check_range("image_size", self.image_size, 1, MAX_IMAGE_SIDE)
        check_range("resize", self.resize, 1, MAX_IMAGE_SIDE)
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
    keep: Annotated[
        Keep,
        typer.Option(
            "--keep", help="With validation: keep the best epoch by validation top-1 (a tie: the lower validation loss), or the last."
        ),
    ] = Keep.best
    patience: Annotated[
        Optional[int],
        typer.Option(
            "--patience",
            help="With validation: stop after this many epochs without a better one (top-1, ties by loss).",
            show_default=False,
        ),
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

    def config(self, model: str, output: str, seed: int, *, checkpoints: bool = True) -> Any:
        """The training configuration, every value checked before a model is read. `checkpoints` False: the
        caller places the checkpoints itself (the search, in its work folder), --resume is its own."""
        from alexcompress.train.checkpoint import default_checkpoint
        from alexcompress.train.config import TrainConfig
        from alexcompress.train.data import resolve_device

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
            resume=self.resume,
            keep_checkpoint=self.keep_checkpoint,
            checkpoint_every=self.checkpoint_every,
            amp=Amp(self.amp).value,
        )
        config.check_ranges()  # the library's rules; messages name the flags (`base.flag_of`)
        check_range("log_every", self.log_every, 1)
        if self.val is not None and self.val_fraction is not None:
            raise AlexCompressError("give --val or --val-fraction, not both")
        if self.val is None and self.val_fraction is None and (self.patience is not None or self.keep is Keep.last):
            raise AlexCompressError("--patience and --keep need validation data: --val DIR or --val-fraction F")
        resolve_device(self.device, "--device")
        checkpoint = (self.checkpoint or default_checkpoint(output)) if checkpoints else None
        if not checkpoints:
            config = dataclasses.replace(config, resume=False)
        if checkpoint is not None:  # written as the run goes: the output policy, with --resume as its --force
            exists = "a checkpoint already exists: --resume continues it, or remove it to start over"
            check_output(checkpoint, inputs=(model,), force=self.resume, option="--checkpoint", exists=exists)
        # neither may land among the images read (-o was checked for clobbering when it was planned)
        check_outputs(((output, "-o"), (checkpoint, "--checkpoint")), trees=(self.data, self.val), force=True)
        config = dataclasses.replace(config, checkpoint=checkpoint)
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

    def job(self, images: ImageOptions, model: str, output: str, seed: int, *, regrow: bool = False, checkpoints: bool = True) -> Any:
        """The retraining `api.Training` these options ask for, or None without --data."""
        from alexcompress.api import Training

        if self.data is None:
            return None
        config = self.config(model, output, seed, checkpoints=checkpoints)
        if regrow:
            config = dataclasses.replace(config, regrow=True)
        dataset, validation = self.datasets(images, seed)
        return Training(dataset, config, validation)

    @property
    def validates(self) -> bool:
        """Whether `datasets` will return a validation set."""
        return self.data is not None and (self.val is not None or self.val_fraction is not None)
