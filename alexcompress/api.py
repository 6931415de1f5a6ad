"""Every operation a command performs, as one call: what `alexcompress COMMAND` does, a notebook does with
the same result (`tests/test_api.py` holds each pair equal). The command line only parses options into
these calls' arguments and prints what they return and report.

Models come in as `sources.ModelInput` (`read_model("random:0:10")`, a file, stdin, a `.dcz`); long
operations report through an `Events` (all optional: a notebook may pass `Events(note=print)`).

>>> from alexcompress.api import PruneSpec, QuantizeSpec
>>> source = read_model("random:0:10")
>>> compressed = compress(source, PruneSpec(sparsity=0.9), QuantizeSpec(bits=4), check=True)  # decoded, compared
>>> state, arch = decode(compressed.data)
>>> arch, round(compressed.ratio) > 20
('alexnet', True)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Optional

from alexcompress.errors import AlexCompressError, check_range
from alexcompress.sources import DEFAULT_ARCH, InferenceModel, ModelInput, inference_model, read_model

#: the names this module hands out from the layers below, imported when first used: `info` and `--help`
#: must not pay for the search and the stages (PEP 562)
_LAZY = {
    "SearchResult": "alexcompress.compression.search",
    "SearchSpec": "alexcompress.compression.search",
    "Compressed": "alexcompress.compression.specs",
    "PruneSpec": "alexcompress.compression.specs",
    "QuantizeSpec": "alexcompress.compression.specs",
    "Streamed": "alexcompress.compression.streaming",
    "Spooled": "alexcompress.codec.container",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from alexcompress.codec.container import Spooled
    from alexcompress.compression.pruning import PruneResult
    from alexcompress.compression.quantization import QuantizeResult
    from alexcompress.compression.search import Candidate, SearchResult, SearchSpec
    from alexcompress.compression.sensitivity import Allocation, Curves
    from alexcompress.compression.specs import Compressed, PruneSpec, QuantizeSpec
    from alexcompress.compression.streaming import Streamed
    from alexcompress.fileio import Payload
    from alexcompress.runtime.predict import Prediction
    from alexcompress.train.config import TrainConfig
    from alexcompress.train.evaluate import Accuracy
    from alexcompress.train.log import TrainingLog

__all__ = [
    "Compressed",
    "Spooled",
    "Streamed",
    "Events",
    "InferenceModel",
    "ModelInput",
    "PruneSpec",
    "QuantizeSpec",
    "SearchResult",
    "SearchSpec",
    "Training",
    "compress",
    "decode",
    "decode_outputs",
    "decode_to",
    "encode",
    "encode_to",
    "evaluate",
    "inference_model",
    "init",
    "load",
    "predict",
    "prune",
    "quantize",
    "read_model",
    "search",
    "sensitivity",
    "verify",
]


MAX_ITERATIONS = 1000  # prune -> retrain rounds


def _ignore(*args: Any) -> None:
    pass


@dataclass
class Events:
    """Where a long operation reports as it goes. Every field is optional."""

    note: Callable[[str], None] = _ignore  # one line of news (how a model was detected, a warning)
    pruned: "Callable[[PruneResult], None]" = _ignore  # each pruning (each round's, when retraining)
    probe: "Callable[[Allocation, float], None]" = _ignore  # each allocation measured on validation (its drop, pp)
    allocation: "Callable[[Allocation], None]" = _ignore  # the allocation chosen
    candidate: "Callable[[Candidate], None]" = _ignore  # each file the search tried (encoded and scored)
    log: "Optional[TrainingLog]" = None  # training progress (None: silent)


@dataclass
class Training:
    """Retraining (fine-tuning) data and settings: the `--data`, `--val` and training options."""

    dataset: "Dataset"
    config: "TrainConfig"
    validation: "Optional[Dataset]" = None


def init(arch: Optional[str] = None, num_classes: int = 1000, seed: int = 0, *, pretrained: bool = False) -> "dict[str, torch.Tensor]":
    """A starting model: a seeded random-init torchvision model (offline), or torchvision's pretrained one."""
    from alexcompress.models.architecture import check_num_classes
    from alexcompress.models.state import check_seed, pretrained as pretrained_state, random_model

    name = arch if arch not in (None, "auto") else DEFAULT_ARCH
    check_seed(seed)
    check_num_classes(num_classes)
    return pretrained_state(name) if pretrained else random_model(name, num_classes, seed)


def load(path: "str | os.PathLike[str]", model: "torch.nn.Module | None" = None, *, sparse: bool = False) -> "torch.nn.Module":
    """A `.dcz` (or `.pt`) file as a module in eval mode: its torchvision architecture with the right
    num_classes, or - for a model of your own - loaded strictly into `model`.

    `sparse=True` (`.dcz` only) runs the coded layers from their compressed form and never builds their dense
    weights (`alexcompress.runtime`); `model.runtime_plan` says which layers run how.

    >>> import tempfile, pathlib
    >>> from alexcompress.api import PruneSpec
    >>> q = quantize(prune(read_model("random:0:10"), PruneSpec(sparsity=0.9)).state)[0]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.dcz"
    >>> _ = path.write_bytes(encode(q, arch="alexnet"))
    >>> load(path).classifier[6].out_features
    10
    >>> load(path, sparse=True).classifier[6]
    SparseLinear(in_features=4096, out_features=10, bias=True, nnz=11,107 (27.1%), codebook=32, csr)
    """
    from alexcompress.codec.container import MAGIC
    from alexcompress.models.dcz import decode_arrays
    from alexcompress.models.state import build_model, load_arrays, load_into

    with open(path, "rb") as handle:
        data = handle.read()
    if sparse:
        from alexcompress.runtime.sparse import load_sparse

        return load_sparse(data, model)
    state: Mapping[str, Any]
    if data[: len(MAGIC)] == MAGIC:
        state, arch = decode_arrays(data)
    else:
        state, arch, _ = load_arrays(data, name=os.fspath(path))
    if model is not None:
        return load_into(model, state)
    return build_model(state, arch)


# ------------------------------------------------------------------------------------------ the stages


@dataclass
class Pruned:
    """What `prune` did: the pruned (and retrained) state, the allocation it followed, if any."""

    state: "Mapping[str, Any]"
    arch: str
    result: "Optional[PruneResult]"  # without retraining: the pruning's report (with: each round went to `events.pruned`)
    allocation: "Optional[Allocation]" = None


def prune(
    source: ModelInput,
    spec: Optional[PruneSpec] = None,
    *,
    allocation: "Optional[Allocation]" = None,
    curves: "Optional[Curves]" = None,
    max_drop: Optional[float] = None,
    target_ratio: Optional[float] = None,
    training: Optional[Training] = None,
    iterations: int = 1,
    events: Optional[Events] = None,
    stream: bool = False,
) -> Pruned:
    """Stage 1 (`alexcompress prune`): `spec`'s pruning, or an automatic `allocation` (from `curves`; with
    `target_ratio`, moved along the path until the real file, k-means at its widths, meets the ratio); with
    `training`, retraining after each of `iterations` rounds, and an allocation checked on the validation
    images first (with `max_drop`: the smallest along the allocation path within it).

    `stream` (without training): the state is a `LazyState` pruning each tensor as it is read, in its own
    dtype, so that writing it (`models.state.save_state`) holds one tensor at a time; the report's layers
    fill in as it is written. `source`'s own float32 arrays are pruned where they are, like every stage's;
    a memory map's or a half-precision tensor is copied, one at a time. `source` may hold its tensors as
    read (`read_model(..., widened=False)`): what needs the whole model widens it first."""
    from alexcompress.compression.sensitivity import check_allocation
    from alexcompress.compression.specs import calibrate, measure_allocation, prune as prune_state, prune_and_retrain
    from alexcompress.compression.streaming import prune_lazily
    from alexcompress.models.safetensors import release
    from alexcompress.models.state import narrow

    events = events or Events()
    check_range("iterations", iterations, 1, MAX_ITERATIONS)
    if training is not None:
        check_validation(training, events)
    if iterations > 1 and training is None:
        raise AlexCompressError("iterations > 1 needs training data: iterative pruning retrains between rounds")
    from alexcompress.compression.specs import PruneSpec

    spec = spec or PruneSpec()
    if allocation is not None or training is not None or not stream:
        source = _widened(source)
    if allocation is not None:
        check_allocation(allocation, source.state, source.arch)
        if target_ratio is not None and curves is not None:
            allocation = calibrate(source.state, source.arch, curves, target_ratio)
        if training is not None and training.validation is not None and curves is not None:
            validation = training.validation
            one_image = 100 / max(len(validation), 1)  # type: ignore[arg-type]  # pp
            if max_drop is not None and one_image > max_drop:
                events.note(
                    f"note: one validation image is {one_image:.2f} pp ({len(validation):,} images), "  # type: ignore[arg-type]
                    f"more than --max-drop {max_drop:g}: the search follows single images (give more --val images)"
                )
            allocation = measure_allocation(
                source.state, source.arch, curves, allocation, validation, training.config, max_drop=max_drop, on_probe=events.probe
            )
        spec = PruneSpec(rates=dict(allocation.rates))
        events.allocation(allocation)
    if training is None and stream:
        result = prune_lazily(source.state, arch=source.arch, pruning=spec, dtypes=source.dtypes, release=release, in_place=True)
        return Pruned(result.state, source.arch, result, allocation)
    if training is None:
        result = prune_state(source.state, spec, arch=source.arch, inplace=True)
        events.pruned(result)
        narrow(result.state, source.dtypes)
        return Pruned(result.state, source.arch, result, allocation)
    state: Any = prune_and_retrain(
        source.state,
        training.dataset,
        training.config,
        spec,
        arch=source.arch,
        rounds=iterations,
        validation=training.validation,
        log=events.log,
        on_round=lambda r, result: events.pruned(result),
    )
    narrow(state, source.dtypes)
    return Pruned(state, source.arch, None, allocation)


def quantize(
    source: "ModelInput | Mapping[str, Any]",
    spec: Optional[QuantizeSpec] = None,
    *,
    training: Optional[Training] = None,
    events: Optional[Events] = None,
    stream: bool = False,
) -> "tuple[Mapping[str, Any], QuantizeResult]":
    """Stage 2 (`alexcompress quantize`): per-layer weight sharing; with `training`, the importance it asks
    for and centroid fine-tuning. Returns (state, the quantization's report). A state dict given as it is
    is left untouched; a `ModelInput`'s arrays are worked on in place, like every stage here. `stream`: as
    `prune`'s (not for a shared codebook or importances, which need the whole model)."""
    from alexcompress.compression.streaming import quantize_lazily, streamable
    from alexcompress.models.safetensors import release
    from alexcompress.models.state import narrow, resolve_arch

    inplace = isinstance(source, ModelInput)
    if not isinstance(source, ModelInput):
        source = ModelInput(dict(source), resolve_arch(source, None).name, "state")
    events = events or Events()
    from alexcompress.compression.specs import QuantizeSpec

    spec = spec or QuantizeSpec()
    if stream and training is None and streamable(spec):
        result = quantize_lazily(source.state, arch=source.arch, quantization=spec, dtypes=source.dtypes, release=release, in_place=inplace)
        return result.state, result
    source = _widened(source)
    if training is not None:
        check_validation(training, events)
    dataset, config = (training.dataset, training.config) if training is not None else (None, None)
    importance = spec.importances(source.state, source.arch, dataset, config, log=events.note)
    result = spec.apply(source.state, arch=source.arch, inplace=inplace, importance=importance)
    state = result.state
    if training is not None:
        from alexcompress.train.trainer import finetune_centroids

        state = finetune_centroids(state, source.arch, training.dataset, training.config, validation=training.validation, log=events.log)
    written: dict[str, Any] = dict(state)
    narrow(written, source.dtypes)  # half-precision weights: their codebooks rounded to values their dtype holds
    return written, result


def _widened(source: ModelInput) -> ModelInput:
    """`source` with its coded weights in float32 (what the in-memory stages work on), the original dtypes
    of those it widened added to `dtypes`: itself where nothing needed widening."""
    from alexcompress.models.state import widen

    state, more = widen(source.state, source.arch)
    if not more and all(state[key] is source.state[key] for key in state):
        return source
    return dataclasses.replace(source, state=dict(state), dtypes={**source.dtypes, **more})


def encode(
    source: "ModelInput | Mapping[str, Any]",
    *,
    arch: Optional[str] = None,
    index_bits: Optional[int] = None,
    coder: str = "auto",
    lossless: bool = False,
) -> bytes:
    """Stage 3 (`alexcompress encode`): a quantized model as a `.dcz` file image (lossless); `lossless`:
    floating tensors that are not quantized stored with Huffman-coded exponents (`dcz.encode`)."""
    return encode_to(source, arch=arch, index_bits=index_bits, coder=coder, lossless=lossless).data


def encode_to(
    source: "ModelInput | Mapping[str, Any]",
    *,
    arch: Optional[str] = None,
    index_bits: Optional[int] = None,
    coder: str = "auto",
    lossless: bool = False,
) -> "Spooled":
    """`encode` tensor by tensor (`dcz.encode_spooled`): the file's `header`, and its `payload` (a function
    writing it) for `fileio.write_output`; `source` is only read (a memory-mapped one gives each tensor's
    pages back), and may hold its tensors as read (`read_model(..., widened=False)`)."""
    from alexcompress.models.dcz import encode_spooled
    from alexcompress.models.safetensors import release
    from alexcompress.models.state import narrow

    state: Mapping[str, Any] = source.state if isinstance(source, ModelInput) else source
    if isinstance(source, ModelInput):
        arch = source.arch
        if source.dtypes:  # widened weights: coded in their own dtype
            state = dict(state)
            narrow(state, source.dtypes)
    options = {"index_bits": "auto" if index_bits is None else str(index_bits), "coder": coder}
    if lossless:
        options["lossless_floats"] = "yes"
    return encode_spooled(state, arch=arch, index_bits=index_bits, coder=coder, options=options, lossless=lossless, release=release)


def decode(data: "bytes | memoryview") -> "tuple[dict[str, np.ndarray], str]":
    """`alexcompress decode`: a `.dcz` file image back into (numpy state dict, architecture), bit for bit."""
    from alexcompress.codec.container import is_dcz
    from alexcompress.models.dcz import decode_arrays

    if not is_dcz(bytes(data[:8])):
        raise AlexCompressError("not a .dcz file (bad magic number)")
    state, arch = decode_arrays(data)
    return dict(state), arch


def decode_to(data: "bytes | memoryview", path: str) -> "Callable[[BinaryIO], None]":
    """`alexcompress decode -o PATH`: a function writing the decoded model in PATH's format: a `.safetensors`
    tensor by tensor (one decoded tensor in memory at a time), else a `.pt` (`models.state.save_state`)."""
    from alexcompress.codec.container import is_dcz
    from alexcompress.models.dcz import checked_header, write_safetensors
    from alexcompress.models.state import save_state

    if not is_dcz(bytes(data[:8])):
        raise AlexCompressError("not a .dcz file (bad magic number)")
    if path.endswith(".safetensors"):
        checked_header(data)  # refused before the output is opened

        def streamed(handle: BinaryIO) -> None:
            write_safetensors(data, handle)

        return streamed
    state, arch = decode(data)
    return lambda handle: save_state(state, handle, arch, path)


def decode_outputs(data: "bytes | memoryview", path: str, shard_bytes: Optional[int] = None) -> "list[tuple[str, Payload]]":
    """`alexcompress decode -o PATH`: the files to write and what writes each (`fileio.write_outputs`): PATH
    alone (`decode_to`), or for a `NAME.safetensors.index.json` the shards beside it
    (`NAME-00001-of-0000N.safetensors`, each at most `shard_bytes`, default `safetensors.SHARD_BYTES`, a
    larger tensor alone) and then the index, the shards written tensor by tensor."""
    from alexcompress.codec.container import is_dcz
    from alexcompress.models.dcz import checked_header, write_safetensors
    from alexcompress.models.safetensors import SHARD_BYTES, index_text, is_index, shard_plan

    if not is_index(path):
        if shard_bytes is not None:
            raise AlexCompressError("--shard-size: only a sharded output (-o NAME.safetensors.index.json) has shards")
        return [(path, decode_to(data, path))]
    if not is_dcz(bytes(data[:8])):
        raise AlexCompressError("not a .dcz file (bad magic number)")
    if shard_bytes is not None and shard_bytes < 1:
        raise AlexCompressError(f"the shard size must be at least 1 byte, got {shard_bytes}")
    header = checked_header(data)
    table = {entry.name: (entry.dtype, entry.shape) for entry in header.tensors}
    plan = shard_plan(table, path, shard_bytes or SHARD_BYTES)
    folder = os.path.dirname(path)

    def shard(names: "list[str]") -> "Callable[[BinaryIO], None]":
        def write(handle: BinaryIO) -> None:
            write_safetensors(data, handle, set(names))

        return write

    total = sum(entry.numel * _itemsize(entry.dtype) for entry in header.tensors)
    return [(os.path.join(folder, name), shard(names)) for name, names in plan] + [(path, index_text(plan, total))]


def _itemsize(dtype: str) -> int:
    from alexcompress.codec.encodings import DTYPES

    return DTYPES[dtype].itemsize


def compress(
    source: ModelInput,
    pruning: Optional[PruneSpec] = None,
    quantization: Optional[QuantizeSpec] = None,
    *,
    allocation: "Optional[Allocation]" = None,
    curves: "Optional[Curves]" = None,
    target_ratio: Optional[float] = None,
    index_bits: Optional[int] = None,
    coder: str = "auto",
    check: bool = False,
    events: Optional[Events] = None,
) -> "Compressed | Streamed":
    """All three stages (`alexcompress compress`); `allocation` sets keep rates and widths (under the
    spec's own `layer_bits`; with `curves` and `target_ratio`, moved along the path until the real file
    meets the ratio); `check` decodes the file and compares it with the quantized model.

    Tensor by tensor (`compression.streaming`: memory grows with the largest tensor, and `source` is only
    read) unless `check`, a shared codebook or importances need the whole model in float32. The result's
    `header`, `payload` (bytes, or a function writing them) and reports are the same either way, and so are
    the file's bytes. `source` may hold its tensors as read (`read_model(..., widened=False)`)."""
    from alexcompress.compression.sensitivity import check_allocation
    from alexcompress.compression.specs import calibrate, compress as compress_state
    from alexcompress.compression.streaming import compress_streaming, streamable
    from alexcompress.models.safetensors import release
    from alexcompress.models.state import widen

    events = events or Events()
    from alexcompress.compression.specs import PruneSpec, QuantizeSpec

    pruning, quantization = pruning or PruneSpec(), quantization or QuantizeSpec()
    streaming = not check and streamable(quantization)
    state, dtypes = source.state, dict(source.dtypes)
    if not streaming or (allocation is not None and target_ratio is not None and curves is not None):
        state, more = widen(source.state, source.arch)  # the in-memory stages work on float32 weights
        dtypes.update(more)
    if allocation is not None:
        check_allocation(allocation, state, source.arch)
        if target_ratio is not None and curves is not None:
            allocation = calibrate(state, source.arch, curves, target_ratio, quantization)
        events.allocation(allocation)
        pruning = PruneSpec(rates=dict(allocation.rates))
        quantization = dataclasses.replace(quantization, layer_bits={**allocation.bits, **quantization.layer_bits})
    if streaming:
        return compress_streaming(
            source.state,
            arch=source.arch,
            pruning=pruning,
            quantization=quantization,
            index_bits=index_bits,
            coder=coder,
            dtypes=source.dtypes,
            release=release,
        )
    result = compress_state(
        state,
        arch=source.arch,
        pruning=pruning,
        quantization=quantization,
        index_bits=index_bits,
        coder=coder,
        inplace=True,
        dtypes=dtypes,
    )
    if check:
        verify(result.data, result.quantization.state)
    return result


def verify(data: "bytes | memoryview", state: "Mapping[str, Any]") -> None:
    """Decode `data` and check every tensor against `state`, bit for bit (dtype, shape and bytes); an
    AlexCompressError names the tensors that differ."""
    from alexcompress.models.dcz import decode_arrays
    from alexcompress.models.state import same_bits

    decoded, _ = decode_arrays(data)
    bad = [k for k, v in state.items() if k not in decoded or not same_bits(decoded[k], v)]
    bad += [k for k in decoded if k not in state]
    if bad:
        raise AlexCompressError(f"verification failed: {', '.join(bad)} differ after decoding (a bug: please report it)")


def search(
    source: ModelInput,
    training: Training,
    spec: SearchSpec,
    work: "str | os.PathLike[str]",
    *,
    curves: "Optional[Curves]" = None,
    resume: bool = False,
    index_bits: Optional[int] = None,
    coder: str = "auto",
    check: bool = False,
    events: Optional[Events] = None,
) -> SearchResult:
    """`alexcompress compress --data ... --max-drop PP` (or `--target-ratio R`): the smallest `.dcz` within a
    validation budget, every stage's choice made on `training.validation` (`compression.search`); `work` is
    the folder it resumes from (`resume=True`), removed when it succeeds. `check` decodes every file the
    search encodes (the one written included) and compares it with the quantized model it came from."""
    from alexcompress.compression.search import Hooks, search as run
    from alexcompress.models.dcz import encode as encode_state

    events = events or Events()
    if training.validation is None:
        raise AlexCompressError("the search chooses on validation images: give --val DIR or --val-fraction F")
    spec.check()
    check_validation(training, events)
    from alexcompress.train.data import in_memory

    validation = in_memory(training.validation)  # scored hundreds of times: decoded once
    config, arch = training.config, source.arch

    def measure(state: "Mapping[str, Any]") -> "Curves":
        layers: list[str] = []

        def step(name: str, text: str) -> None:
            if name not in layers:
                layers.append(name)
                events.note(f"sensitivity: {name}")

        return sensitivity(
            ModelInput(dict(state), arch, source.label),
            validation,
            keep_grid=spec.keep_grid,
            bits_grid=spec.bits_grid,
            batch_size=max(config.batch_size, 64),
            workers=config.workers,
            device=config.device,
            on_step=step,
        )

    def encode_one(state: "Mapping[str, Any]", quant: QuantizeSpec) -> bytes:
        options = {"prune": "search", **quant.record(), "index_bits": "auto" if index_bits is None else index_bits, "coder": coder}
        data = encode_state(state, arch=arch, index_bits=index_bits, coder=coder, options=options)
        if check:
            verify(data, state)
        return data

    hooks = Hooks(note=events.note, candidate=events.candidate, log=events.log)
    return run(
        source.state,
        arch,
        training.dataset,
        validation,
        config,
        spec,
        work,
        curves=curves,
        resume=resume,
        sensitivity=measure,
        encode=encode_one,
        hooks=hooks,
    )


# ------------------------------------------------------------------------------------------ running


def evaluate(
    model: InferenceModel,
    dataset: "Dataset",
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "auto",
    limit: Optional[int] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> "Accuracy":
    """`alexcompress eval`: top-1, top-5 and loss on `dataset` (under torchrun: this rank's shard, the
    counts summed)."""
    from alexcompress.train.data import loader
    from alexcompress.train.distributed import current, rank_device
    from alexcompress.train.evaluate import evaluate as run

    check_batches(batch_size, workers, limit)
    check_classes(model, dataset)
    group = current()
    target = rank_device(device, "--device")
    batches = loader(dataset, batch_size=batch_size, workers=workers, rank=group.rank, world=group.world, pad=False)
    return run(model.module, batches, device=target, limit=limit, on_batch=on_batch)


def check_classes(model: InferenceModel, dataset: "Dataset") -> None:
    """A dataset of more classes than the model has outputs is refused (its labels would not fit)."""
    classes = len(getattr(dataset, "classes", ()))
    if classes > model.outputs:
        root = getattr(dataset, "root", "the dataset")
        raise AlexCompressError(f"{root}: {classes} class folders, but the model has only {model.outputs} outputs")


def sensitivity(
    source: ModelInput,
    dataset: "Dataset",
    *,
    keep_grid: "Sequence[float] | None" = None,
    bits_grid: "Sequence[int] | None" = None,
    batch_size: int = 128,
    workers: int = 0,
    device: str = "auto",
    limit: Optional[int] = None,
    on_step: Optional[Callable[[str, str], None]] = None,
) -> "Curves":
    """`alexcompress sensitivity`: validation top-1 and divergence from the model's own predictions with each
    coded layer alone pruned to each keep rate and quantized to each width. The reference pass (the
    original's predictions) is part of the measurement and of its `seconds`."""
    from alexcompress.compression.sensitivity import BITS_GRID, KEEP_GRID, measure
    from alexcompress.models.state import build_model
    from alexcompress.train.data import loader
    from alexcompress.train.distributed import current, rank_device
    from alexcompress.train.evaluate import evaluate as run, log_probabilities

    check_batches(batch_size, workers, limit)
    from alexcompress.train.data import in_memory

    dataset = in_memory(dataset)  # scored a hundred times: decoded once (when it fits in memory)
    group = current()
    target = rank_device(device, "--device")
    net = build_model(source.state, source.arch).to(target)
    reference: "list[Any] | None" = None

    def batches() -> Any:
        return loader(dataset, batch_size=batch_size, workers=workers, rank=group.rank, world=group.world, pad=False)

    def score(module: Any) -> tuple[float, float, int]:
        nonlocal reference
        if reference is None:  # the first call scores the original: its predictions are the reference
            reference = log_probabilities(net, batches(), device=target, limit=limit)
        result = run(module, batches(), device=target, limit=limit, reference=reference)
        return result.top1, result.kl, result.samples

    return measure(net, source.arch, score, keep_grid=keep_grid or KEEP_GRID, bits_grid=bits_grid or BITS_GRID, on_step=on_step)


def predict(
    model: InferenceModel,
    paths: Sequence[str],
    preprocessing: Any = None,
    *,
    topk: int = 5,
    batch_size: int = 32,
    device: str = "auto",
    on_error: Optional[Callable[[str, str], None]] = None,
) -> "Iterator[Prediction]":
    """`alexcompress predict`: the top-k classes and probabilities of each image file, batch by batch as they
    are computed (a file that is not an image goes to `on_error(path, reason)`, the rest are still
    predicted). The arguments are checked at the call."""
    from alexcompress.runtime.predict import predict_images
    from alexcompress.train.data import Preprocessing, resolve_device

    check_range("topk", topk, 1)
    check_batches(batch_size, 0, None)
    target = resolve_device(device, "--device")
    return predict_images(
        model.module, paths, preprocessing or Preprocessing(), topk=topk, batch_size=batch_size, device=target, on_error=on_error
    )


def held_out(root: str, preprocessing: Any, fraction: float, seed: int = 0) -> "Dataset":
    """The validation images `--val-fraction` holds out of the ImageFolder tree `root` (every class's
    `fraction`, chosen by `seed`): the same images the stages validate on."""
    from alexcompress.train.data import split_folder

    return split_folder(root, preprocessing, "none", fraction, seed)[1]


def curves_warning(curves: "Curves") -> Optional[str]:
    """A warning when sensitivity curves cannot rank anything (images the model was trained on), or None."""
    from alexcompress.compression.sensitivity import warning

    return warning(curves)


def check_validation(training: Training, events: Events) -> None:
    """Warnings about a validation set that would mislead every choice made on it: images that are also in
    the training set (they score what the model memorised), or a set too small to see a drop of `--max-drop`
    (said where the budget is known)."""
    from alexcompress.train.data import shared_images

    if training.validation is None:
        return
    shared, compared = shared_images(training.dataset, training.validation)
    if shared:
        events.note(
            f"warning: {shared:,} of {compared:,} validation images are also training images (--data): "
            "they score what retraining fits, not what it generalises to; give held-out images (--val-fraction splits them)"
        )


def check_batches(batch_size: int, workers: int, limit: Optional[int]) -> None:
    """How a model is fed: images per batch, DataLoader workers, the most images scored (per rank)."""
    from alexcompress.train.config import MAX_BATCH, MAX_WORKERS

    check_range("batch_size", batch_size, 1, MAX_BATCH)
    check_range("workers", workers, 0, MAX_WORKERS)
    check_range("limit", limit, 1)


@dataclass
class Inspected:
    """`alexcompress info`: a `.dcz`'s header, or a `.pt`'s arrays."""

    label: str
    header: Any = None  # codec.container.DczHeader of a .dcz
    data: bytes = b""
    state: "Mapping[str, Any]" = field(default_factory=dict)  # of a .pt
    arch: str = ""
    note: Optional[str] = None


def inspect(spec: str, arch: Optional[str] = None) -> Inspected:
    """What `info` shows: a `.dcz`'s header (every number from the file) or a `.pt` state dict's tensors."""
    from alexcompress.codec.container import is_dcz, parse_header
    from alexcompress.models.state import load_arrays
    from alexcompress.sources import label_of, read_input

    data = read_input(spec, "FILE")
    label = label_of(spec)
    if not is_dcz(data):
        loaded = load_arrays(data, arch=arch, name=label)
        return Inspected(label, state=loaded.state, arch=loaded.arch, note=loaded.note)
    return Inspected(label, header=parse_header(data), data=data)
