"""State dicts to and from `.dcz` files (`alexcompress.load` / `api.load` builds the module from one).

`encode` is lossless: coded tensors are stored with their distinct nonzero values as codebook, so
decode(encode(q)) == q bit for bit. Which tensors are coded is the architecture's call (`archs`); how they
are stored is the encodings' (`encodings`); the file framing is the container's. Needs no torch except to
hand back tensors or modules.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from alexcompress import __version__
from alexcompress.codec.container import DczHeader, DczWriter, Spooled, decode_tensors, parse_header, spool
from alexcompress.codec.encodings import CODED_DTYPES, EncodedTensor, dtype_name, encode_coded, encode_stored
from alexcompress.codec.encodings.sparse_huffman import MAX_CODEBOOK
from alexcompress.codec.sparse_index import distinct_upto
from alexcompress.errors import DczError, ModelError
from alexcompress.models.architecture import NONE
from alexcompress.models.archs import get_arch, layer_keys
from alexcompress.models.state import as_numpy, c_contiguous, match_arch, num_classes_of, torch_state
from alexcompress.parallel import ordered_imap

if TYPE_CHECKING:
    import torch

PRODUCER = f"alexcompress {__version__}"
FLOATING = ("float32", "float64", "float16", "bfloat16")


def encode(
    state: Mapping[str, "torch.Tensor | np.ndarray"],
    *,
    arch: str | None = None,
    index_bits: int | None = None,
    coder: str = "auto",
    options: Mapping[str, Any] | None = None,
    lossless: bool = False,
) -> bytes:
    """A quantized state dict as a `.dcz` file image. `arch` None detects it; `index_bits=None` picks the
    best gap width per layer; `coder` names the coded encodings each layer may take, the smallest kept
    (`encodings.CODERS`: "auto" all, "huffman" the paper's). `lossless`: floating tensors that are not
    quantized (raw ones, and coded ones with more distinct values than a codebook holds) are stored with
    their exponents Huffman-coded where that is smaller (`float_huffman`), instead of raw or refused.

    >>> from alexcompress.models.state import random_model
    >>> from alexcompress.compression.pruning import prune_global
    >>> from alexcompress.compression.quantization import quantize
    >>> q = quantize(prune_global(random_model(num_classes=10), 0.9).state).state
    >>> state, _ = decode(encode(q))
    >>> all(state[k].equal(q[k]) for k in q)
    True
    """
    return encode_spooled(state, arch=arch, index_bits=index_bits, coder=coder, options=options, lossless=lossless).data


def encode_spooled(
    state: Mapping[str, "torch.Tensor | np.ndarray"],
    *,
    arch: str | None = None,
    index_bits: int | None = None,
    coder: str = "auto",
    options: Mapping[str, Any] | None = None,
    lossless: bool = False,
    release: "Callable[[np.ndarray], None] | None" = None,
) -> Spooled:
    """`encode` tensor by tensor: each tensor coded as it is read (a coded weight in its own float32, float16
    or bfloat16; one of another floating dtype in float32), its sections spooled (`container.DczWriter`),
    `release(array)` called on its source once it is coded (a memory map gives its pages back). Returns the
    file's header and the function writing it; the bytes are `encode`'s."""
    found, _ = match_arch(state, arch)
    architecture = get_arch(found)
    coded = set(layer_keys(architecture, state))
    for key in (k for k in state if k in coded):
        dtype = as_numpy(state[key]).dtype
        if dtype_name(dtype) not in CODED_DTYPES and dtype.kind != "f":
            raise ModelError(f"{key} is {state[key].dtype}; encode expects quantized float32, float16 or bfloat16 weights")

    def one(key: str) -> EncodedTensor:
        array = c_contiguous(as_numpy(state[key]))
        if key in coded and dtype_name(array.dtype) not in CODED_DTYPES:
            array = array.astype(np.float32)  # as the stages widen it
        if key not in coded or (lossless and distinct_upto(array, MAX_CODEBOOK + 1).size > MAX_CODEBOOK + 1):  # not quantized: stored
            tensor = encode_stored(key, array, lossless)
        else:
            tensor = encode_coded(key, array, index_bits=index_bits, coder=coder)
        if release is not None:
            release(state[key])
        return tensor

    sections = spool()
    writer = DczWriter(sections)
    try:
        with contextlib.closing(ordered_imap(one, list(state))) as work:  # the file's order is the state's, whatever --jobs
            for tensor in work:
                writer.add(tensor)
        return writer.spooled(arch=found, num_classes=num_classes_of(state, found), producer=PRODUCER, options=options or {})
    except BaseException:
        sections.close()
        raise


def checked_header(data: "bytes | memoryview") -> DczHeader:
    """The parsed header, its tensor table checked against the real shapes of a known architecture before
    anything is decoded, so a hostile header cannot make the decoder allocate more than the model it claims
    to be."""
    header = parse_header(data)
    if header.arch == NONE:
        return header
    try:
        architecture = get_arch(header.arch, discover=False)
    except ModelError:
        raise DczError(f"header: unknown architecture {header.arch!r} (written by {header.producer})") from None
    if header.num_classes < 1:
        raise DczError(f"header: num_classes must be at least 1 for {header.arch}")
    expected = architecture.shapes(header.num_classes)
    found = {t.name: t.shape for t in header.tensors}
    if found != dict(expected):
        missing = [k for k in expected if k not in found]
        unexpected = [k for k in found if k not in expected]
        wrong = [k for k in expected if k in found and found[k] != expected[k]]
        detail = "; ".join(
            f"{what} {', '.join(keys[:3])}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise DczError(f"header: tensor table does not match torchvision {header.arch}({header.num_classes} classes): {detail}")
    for entry in header.tensors:  # an int32 bias would decode, then fail inside the model
        if architecture.expects_floating(entry.name) != (entry.dtype in FLOATING):
            raise DczError(f"tensor {entry.name}: dtype {entry.dtype} does not fit {header.arch}'s {entry.name}")
    return header


def decode_arrays(data: "bytes | memoryview") -> tuple["OrderedDict[str, np.ndarray]", str]:
    """A `.dcz` file image as (numpy state dict, architecture), without importing torch."""
    header = checked_header(data)
    return decode_tensors(header, data), header.arch


def decode(data: "bytes | memoryview") -> tuple["OrderedDict[str, torch.Tensor]", str]:
    """A `.dcz` file image back into (state dict of tensors, architecture), bit for bit what `encode` was
    given."""
    arrays, arch = decode_arrays(data)
    return torch_state(arrays), arch


def write_safetensors(data: "bytes | memoryview", handle: "BinaryIO", names: "Collection[str] | None" = None) -> str:
    """A `.dcz` file image decoded into a safetensors file, tensor by tensor (one decoded tensor in memory at
    a time), every tensor in its own dtype; `names`: those tensors only (a shard). Returns the architecture."""
    from alexcompress.codec.container import decode_one, release_sections
    from alexcompress.models import safetensors

    header = checked_header(data)
    entries = [entry for entry in header.tensors if names is None or entry.name in names]
    table = {entry.name: (entry.dtype, entry.shape) for entry in entries}

    def arrays() -> "Iterator[tuple[str, np.ndarray]]":
        for entry in entries:
            array = decode_one(header, data, entry)
            release_sections(header, data, entry)  # a memory-mapped file keeps no tensor's pages it is done with
            yield entry.name, array

    safetensors.write_streaming(table, arrays(), handle, {"format": "pt", "producer": PRODUCER, "arch": header.arch})
    return header.arch
