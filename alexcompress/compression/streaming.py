"""All three stages tensor by tensor: memory grows with the largest tensor, not with the model.

`compress` without an allocation, a shared codebook or importances needs nothing of a layer but the layer
(and, for a global sparsity, one threshold: a radix select reads every weight's magnitude twice, a chunk
at a time). So each coded weight is copied to float32, pruned, clustered, narrowed back to its own dtype
and entropy-coded, its sections spooled to a temporary file (`container.DczWriter`), and dropped before the
next; raw tensors are coded straight from their source. A source that is a memory map (safetensors) gives
its pages back as each tensor is done. The file is byte for byte `specs.compress`'s: each step calls the
same functions on a one-tensor state, with every pattern resolved against the whole model first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexcompress.codec.container import DczWriter, Spooled, spool
from alexcompress.codec.encodings import STORED, dtype_name, encode_coded, get_encoding
from alexcompress.compression.pruning import (
    LayerPruning,
    PruneResult,
    _radix_select_counting,
    _zero_smallest,
    check_fraction,
    prune_by_rates,
    prune_by_std,
)
from alexcompress.compression.quantization import LayerQuantization, QuantizeResult, method_title, quantize
from alexcompress.compression.specs import PruneSpec, QuantizeSpec
from alexcompress.errors import AlexCompressError
from alexcompress.models.archs import get_arch, layer_keys, per_layer
from alexcompress.models.dcz import PRODUCER
from alexcompress.models.state import HALF, LazyState, as_numpy, c_contiguous, num_classes_of
from alexcompress.parallel import ordered_imap


def streamable(quantization: QuantizeSpec) -> bool:
    """Whether `compress_streaming` can do what `quantization` asks (one layer at a time)."""
    return not quantization.shared_codebook and quantization.importance == "none"


@dataclass
class Streamed(Spooled):
    """What `compress_streaming` did: the file's header and the function that writes it (`Spooled`), and
    each stage's report (without the state)."""

    arch: str
    pruning: PruneResult
    quantization: QuantizeResult

    @property
    def original_bytes(self) -> int:
        from alexcompress.codec.accounting import original_bytes

        return original_bytes(self.header)

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.header.file_size


def compress_streaming(
    state: Mapping[str, np.ndarray],
    *,
    arch: str,
    pruning: PruneSpec | None = None,
    quantization: QuantizeSpec | None = None,
    index_bits: int | None = None,
    coder: str = "auto",
    dtypes: Mapping[str, str] | None = None,
    release: Callable[[np.ndarray], None] | None = None,
) -> Streamed:
    """`specs.compress` one tensor at a time (see the module). `state`'s arrays are read, never written;
    `dtypes` names the original dtype of weights already widened to float32; `release(array)` is called on
    each source array once it is coded (a memory map drops its pages)."""
    architecture = get_arch(arch)
    quantization = quantization or QuantizeSpec()
    if not streamable(quantization):
        raise AlexCompressError("a shared codebook or importances need the whole model: use specs.compress")
    spec = (pruning or PruneSpec()).resolved(architecture)
    keys = layer_keys(architecture, state)
    dtypes = dict(dtypes or {})
    for key in keys:
        name = dtype_name(as_numpy(state[key]).dtype)
        if name in HALF:
            dtypes.setdefault(key, name)
    prune_one, method = _pruner(spec, architecture, state, keys, release or (lambda array: None))
    widths = _widths(architecture, state, keys, quantization)
    options = {
        "prune": method,
        **quantization.record(),
        "index_bits": "auto" if index_bits is None else index_bits,
        "coder": coder,
    }
    sections = spool()
    writer = DczWriter(sections)
    pruned_layers: list[LayerPruning] = []
    quantized_layers: list[LayerQuantization] = []
    methods: list[str] = []
    coded = set(keys)
    order = list(state)
    try:

        def one(key: str) -> tuple[Any, LayerPruning | None, LayerQuantization | None, str]:
            return _one(key, state, coded, prune_one, widths, quantization, index_bits, coder, dtypes, architecture.name, release)

        with contextlib.closing(ordered_imap(one, order)) as work:
            for tensor, layer_p, layer_q, title in work:  # each tensor as it is done, in order
                writer.add(tensor)
                if layer_p is not None:
                    pruned_layers.append(layer_p)
                    quantized_layers.append(layer_q)
                    methods.append(title)
        done = writer.spooled(
            arch=architecture.name, num_classes=num_classes_of(state, architecture.name), producer=PRODUCER, options=options
        )
    except BaseException:
        sections.close()
        raise
    title = methods[0] if methods else "per-layer k-means"
    return Streamed(
        done.header,
        done.write,
        architecture.name,
        PruneResult({}, pruned_layers, method),  # type: ignore[arg-type]
        QuantizeResult({}, quantized_layers, title),  # type: ignore[arg-type]
    )


def _one(
    key: str,
    state: Mapping[str, np.ndarray],
    coded: set[str],
    prune_one: Callable[[str, np.ndarray], LayerPruning],
    widths: Mapping[str, int],
    quantization: QuantizeSpec,
    index_bits: int | None,
    coder: str,
    dtypes: Mapping[str, str],
    arch: str,
    release: Callable[[np.ndarray], None] | None,
) -> tuple[Any, LayerPruning | None, LayerQuantization | None, str]:
    """One tensor coded; the source's pages given back (`release`) as soon as it has been read. Holds the
    float32 copy while pruning and clustering, then only the narrowed weight while coding."""
    source = as_numpy(state[key])
    if key not in coded:
        done = get_encoding(STORED).encode(key, c_contiguous(source))
        if release is not None:
            release(state[key])  # in the worker that read it
        return done, None, None, ""
    weight = np.array(source, dtype=np.float32, order="C", copy=True)  # one tensor in float32, never the source
    del source
    if release is not None:
        release(state[key])
    layer_p = prune_one(key, weight)  # quantize below refuses NaN and infinities
    layer_q, method = _quantize_one(key, weight, widths[key], quantization, arch)
    if key in dtypes:
        weight = weight.astype(HALF[dtypes[key]])  # the float32 copy goes
    return encode_coded(key, weight, index_bits=index_bits, coder=coder), layer_p, layer_q, method


def _widths(architecture: Any, state: Mapping[str, Any], keys: list[str], quantization: QuantizeSpec) -> dict[str, int]:
    """Each coded layer's code width, as `quantize` gives them for the whole model."""
    widths = {key: quantization.conv_bits if len(state[key].shape) > 2 else quantization.fc_bits for key in keys}
    if quantization.bits is not None:
        widths = dict.fromkeys(keys, quantization.bits)
    widths.update(per_layer(architecture, quantization.layer_bits or {}, keys))
    return widths


def _quantize_one(key: str, weight: np.ndarray, width: int, quantization: QuantizeSpec, arch: str) -> tuple[LayerQuantization, str]:
    """One float32 layer clustered in place; its report and the method's title."""
    result = quantize(
        {key: weight},
        layer_bits={key: width},
        init=quantization.init,
        seed=quantization.seed,
        quantizer=quantization.quantizer,
        rate_weight=quantization.rate_weight,
        arch=arch,
        inplace=True,
    )
    return result.layers[0], result.method


def prune_lazily(
    state: Mapping[str, np.ndarray],
    *,
    arch: str,
    pruning: PruneSpec | None = None,
    dtypes: Mapping[str, str] | None = None,
    release: Callable[[np.ndarray], None] | None = None,
    in_place: bool = False,
) -> PruneResult:
    """`specs.prune` one tensor at a time: a report whose `state` is a `LazyState` pruning each layer as it
    is read (a global sparsity's threshold is found first, reading every weight twice a chunk at a time), in
    its own dtype (`dtypes`: those of weights already widened). The report's layers fill in as the state is
    read (once through: what writing it does). `state`'s arrays are only read, unless `in_place` lets a
    float32 array in memory of its own (not a memory map) be pruned where it is."""
    architecture = get_arch(arch)
    spec = (pruning or PruneSpec()).resolved(architecture)
    keys = layer_keys(architecture, state)
    prune_one, method = _pruner(spec, architecture, state, keys, release or (lambda array: None))
    layers: dict[str, LayerPruning] = {}

    def pruned(key: str, weight: np.ndarray) -> None:
        layers[key] = prune_one(key, weight)

    report: list[LayerPruning] = []
    lazy = _lazy(state, keys, dtypes, release, pruned, lambda: _in_order(report, layers, keys), in_place)
    return PruneResult(lazy, report, method)  # type: ignore[arg-type]


def quantize_lazily(
    state: Mapping[str, np.ndarray],
    *,
    arch: str,
    quantization: QuantizeSpec | None = None,
    dtypes: Mapping[str, str] | None = None,
    release: Callable[[np.ndarray], None] | None = None,
    in_place: bool = False,
) -> QuantizeResult:
    """`QuantizeSpec.apply` one tensor at a time, as `prune_lazily` prunes (no shared codebook, no
    importances: `streamable`)."""
    architecture = get_arch(arch)
    quantization = quantization or QuantizeSpec()
    if not streamable(quantization):
        raise AlexCompressError("a shared codebook or importances need the whole model: use QuantizeSpec.apply")
    keys = layer_keys(architecture, state)
    widths = _widths(architecture, state, keys, quantization)
    layers: dict[str, LayerQuantization] = {}

    def clustered(key: str, weight: np.ndarray) -> None:
        layers[key], _ = _quantize_one(key, weight, widths[key], quantization, architecture.name)

    report: list[LayerQuantization] = []
    lazy = _lazy(state, keys, dtypes, release, clustered, lambda: _in_order(report, layers, keys), in_place)
    return QuantizeResult(lazy, report, method_title(quantization.quantizer, quantization.rate_weight))  # type: ignore[arg-type]


def _private_float32(array: np.ndarray) -> bool:
    """A writable, contiguous float32 array in memory of its own (no file's memory map behind it)."""
    import mmap

    if array.dtype != np.float32 or not array.flags.writeable or not array.flags.c_contiguous:
        return False
    base: Any = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return False
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return True


def _in_order(out: list, layers: Mapping[str, Any], keys: list[str]) -> None:
    out[:] = [layers[key] for key in keys if key in layers]


def _lazy(
    state: Mapping[str, np.ndarray],
    keys: list[str],
    dtypes: Mapping[str, str] | None,
    release: Callable[[np.ndarray], None] | None,
    work: Callable[[str, np.ndarray], None],
    done: Callable[[], None],
    in_place: bool,
) -> LazyState:
    """The state with `work(key, float32 weight)` applied to each coded layer as it is read, in the
    layer's own dtype (half precision narrowed back); other entries as they are. The weight is a copy,
    unless `in_place` and the source's array is float32 in memory of its own (not a file's map)."""
    coded = set(keys)
    dtypes = dict(dtypes or {})
    table: dict[str, tuple[Any, tuple[int, ...]]] = {}
    for key, value in state.items():
        array = as_numpy(value)
        dtype = np.dtype(HALF[dtypes[key]]) if key in dtypes else array.dtype
        if key in coded and dtype_name(dtype) not in HALF:
            dtype = np.dtype(np.float32)  # the stages' float32 (as `widen` makes it)
        table[key] = (dtype, tuple(array.shape))

    worked: set[str] = set()  # layers done in their own memory: read again, they are what they became

    def make(key: str) -> np.ndarray:
        source = as_numpy(state[key])
        if key not in coded:
            return source
        if key in worked:
            return source.astype(table[key][0], copy=False)
        own = in_place and _private_float32(source)  # a ModelInput's own arrays: worked on in place, like every stage
        weight = source if own else np.array(source, dtype=np.float32, order="C", copy=True)
        del source
        if release is not None and not own:
            release(state[key])
        work(key, weight)
        if own:
            worked.add(key)
        done()
        return weight.astype(table[key][0], copy=False)  # half precision narrowed back

    return LazyState(table, make)


def _pruner(
    spec: PruneSpec, architecture: Any, state: Mapping[str, np.ndarray], keys: list[str], release: Callable[[np.ndarray], None]
) -> tuple[Callable[[str, np.ndarray], LayerPruning], str]:
    """A function pruning one float32 layer in place as `spec` says for the whole model, and the method's
    name (as `specs.prune` reports it)."""
    name = architecture.name
    if spec.preset is not None or spec.rates is not None:
        rates = spec.rates
        method = "per-layer keep rates"
        if spec.preset is not None:
            rates = architecture.presets.get(spec.preset)
            if rates is None:
                have = ", ".join(architecture.presets) or "none"
                raise AlexCompressError(
                    f"architecture {name} has no preset {spec.preset!r} (its presets: {have}); give keep rates or a sparsity instead"
                )
            method = f"preset {spec.preset!r} keep rates"
        for layer, rate in (rates or {}).items():
            check_fraction(f"keep rate of {layer}", rate, allow_one=True)
        by_key = per_layer(architecture, rates or {}, keys)

        def by_rate(key: str, weight: np.ndarray) -> LayerPruning:
            rate = {key: by_key[key]} if key in by_key else {}
            return prune_by_rates({key: weight}, rate, arch=name, inplace=True).layers[0]

        return by_rate, method
    if spec.std_scale is not None:
        scale = spec.std_scale
        return (
            lambda key, weight: prune_by_std({key: weight}, scale, arch=name, inplace=True).layers[0]
        ), f"threshold {scale:g} x std per layer"
    sparsity = spec.sparsity
    assert sparsity is not None
    flats = [as_numpy(state[key]).reshape(-1) for key in keys]
    n_prune = int(round(sparsity * sum(f.size for f in flats)))
    threshold, below, equal = _radix_select_counting(flats, n_prune, after=release)
    ties, left = {}, n_prune - below  # the weights equal to the threshold that go: the first ones, in model order
    for key, count in zip(keys, equal, strict=True):
        ties[key] = min(left, count)
        left -= ties[key]

    def globally(key: str, weight: np.ndarray) -> LayerPruning:
        flat = weight.reshape(-1)
        if n_prune:
            _zero_smallest(flat, threshold, ties[key])
        return LayerPruning(architecture.display_name(key), key, flat.size, int(np.count_nonzero(flat)), threshold if n_prune else 0.0)

    return globally, f"global sparsity {sparsity:g}"
