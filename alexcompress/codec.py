"""Torch-facing encode/decode: state dict <-> `.dcz` bytes, and `load()` for users' code.

`encode` is lossless: the codebook is each layer's distinct nonzero values, so decode(encode(q)) == q bit
for bit. Container work itself lives in `container` and needs no torch.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from . import __version__
from .container import EncodedTensor, decode_tensor, encode_raw, encode_sparse, parse_header, write_dcz
from .errors import DczError, ModelError
from .models import ARCHS, as_numpy, c_contiguous, expected_shapes, is_compressible, num_classes_of, torch_state, validate_state_dict

if TYPE_CHECKING:
    import torch

PRODUCER = f"alexcompress {__version__}"


def encode(
    state: Mapping[str, "torch.Tensor"],
    *,
    arch: str = "alexnet",
    index_bits: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> bytes:
    """A quantized state dict as a `.dcz` file image. `index_bits=None` picks the best width per layer.

    >>> from alexcompress.models import random_model
    >>> from alexcompress.prune import prune_global
    >>> from alexcompress.quantize import quantize
    >>> q = quantize(prune_global(random_model(num_classes=10), 0.9).state).state
    >>> state, _ = decode(encode(q))
    >>> all(state[k].equal(q[k]) for k in q)
    True
    """
    validate_state_dict(state, arch)
    tensors: list[EncodedTensor] = []
    for key, value in state.items():
        array = c_contiguous(as_numpy(value))
        if is_compressible(key, value):
            if array.dtype != np.float32:
                raise ModelError(f"{key} is {value.dtype}; encode expects the float32 output of 'quantize'")
            tensors.append(encode_sparse(key, array, index_bits))
        else:
            tensors.append(encode_raw(key, array))
    return write_dcz(
        tensors, arch=arch, num_classes=num_classes_of(state, arch), producer=PRODUCER, options=options or {}
    )


def decode_arrays(data: bytes | memoryview) -> tuple["OrderedDict[str, np.ndarray]", str]:
    """A `.dcz` file image as (numpy state dict, architecture), without importing torch.

    The tensor table is checked against the architecture's real shapes before anything is decoded, so a
    hostile header cannot make the decoder allocate more than the model it claims to be.
    """
    header = parse_header(data)
    if header.arch not in ARCHS:
        raise DczError(f"header: unknown architecture {header.arch!r}; supported: {', '.join(ARCHS)}")
    expected = expected_shapes(header.arch, header.num_classes)
    found = {t.name: t.shape for t in header.tensors}
    if found != expected:
        missing = [k for k in expected if k not in found]
        unexpected = [k for k in found if k not in expected]
        wrong = [k for k in expected if k in found and found[k] != expected[k]]
        detail = "; ".join(
            f"{what} {', '.join(keys[:3])}" for what, keys in
            (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise DczError(f"header: tensor table does not match torchvision {header.arch}({header.num_classes} classes): {detail}")
    return OrderedDict((entry.name, decode_tensor(header, data, entry)) for entry in header.tensors), header.arch


def decode(data: bytes | memoryview) -> tuple["OrderedDict[str, torch.Tensor]", str]:
    """A `.dcz` file image back into (state dict of tensors, architecture), bit for bit what `encode` was
    given."""
    arrays, arch = decode_arrays(data)
    return torch_state(arrays), arch


def load(path: str | os.PathLike[str]) -> "torch.nn.Module":
    """Decode a `.dcz` file into its torchvision model, in eval mode, with the right num_classes.

    >>> import tempfile, pathlib
    >>> from alexcompress.models import random_model
    >>> from alexcompress.prune import prune_global
    >>> from alexcompress.quantize import quantize
    >>> q = quantize(prune_global(random_model(num_classes=10), 0.9).state).state
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.dcz"
    >>> _ = path.write_bytes(encode(q))
    >>> load(path).classifier[6].out_features
    10
    """
    from .models import build_model

    with open(path, "rb") as handle:
        state, arch = decode(handle.read())
    return build_model(state, arch)
