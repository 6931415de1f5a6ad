"""Running a compressed model from its compressed form, never densifying it (EIE, Han et al., ISCA 2016).

`load_sparse` builds the module straight from a `.dcz`: each coded layer that a runtime kind below can run
is replaced by a module holding the layer in compressed form, built from the decoded streams (positions and
codebook indices of the nonzeros); every other tensor is decoded as usual. No dense float32 weight of a
replaced layer exists at any moment, during load or after.

Kinds, chosen by the module's exact type (`RUNTIMES`; a subclass may read `.weight` itself, e.g.
MultiheadAttention's `out_proj`, so it stays dense):

- `nn.Linear` -> `SparseLinear`: CSR with int32 indices and float32 values, multiplied by torch's sparse
  kernel. Measured on this 2-core CPU (fc6 9216x4096 at 9%): batch 1 1.8 ms against 6.5 ms dense, batch 64
  17 ms against 37 ms; int32 indices beat int64 (1.9 vs 3.3 ms) and scipy.sparse (3.4 ms). 8 bytes per
  nonzero: smaller than dense below 50% density.
- `nn.Conv1d/2d/3d` -> `CodedConv`: the codebook index of every weight (uint8, int16 for 256-entry
  codebooks; 1-2 bytes per weight against 4), expanded to a weight for each call (AlexNet's five convs:
  1.5 ms) and run by torch's dense convolution. At convolution densities (35-85% in the paper) a sparse
  matmul over unfolded patches loses to the dense kernel by a wide margin, and the expansion is a
  temporary of one layer's size, freed after the call.
"""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from alexcompress.codec.container import MAGIC, DczHeader, section_reader
from alexcompress.codec.encodings import CODED, get_encoding
from alexcompress.errors import ModelError
from alexcompress.models.archs import get_arch
from alexcompress.models.dcz import checked_header
from alexcompress.models.state import load_into


def _csr(crow: np.ndarray, col: np.ndarray, values: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": said once per process, to every user
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values), size=size, check_invariants=False
        )


class SparseLinear(nn.Module):
    """`nn.Linear` whose weight is a CSR matrix (int32 indices): y = W x + b without a dense W."""

    def __init__(self, in_features: int, out_features: int, weight_csr: torch.Tensor, bias: bool, codebook_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.codebook_size = in_features, out_features, codebook_size
        self.register_buffer("weight_csr", weight_csr)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_nonzeros(cls, module: nn.Linear, positions: np.ndarray, symbols: np.ndarray, codebook: np.ndarray) -> "SparseLinear":
        out_features, in_features = module.out_features, module.in_features
        rows, cols = np.divmod(positions, in_features)  # row-major and increasing: CSR order as they come
        cols = cols.astype(np.int32, copy=False)
        crow = np.zeros(out_features + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=out_features), out=crow[1:])
        del rows
        values = codebook[symbols].astype(np.float32, copy=False)
        weight = _csr(crow, cols, values, (out_features, in_features))
        return cls(in_features, out_features, weight, module.bias is not None, codebook.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight_csr, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    @property
    def nnz(self) -> int:
        return int(self.weight_csr.values().numel())

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense tensor (for inspection; the forward pass never builds it)."""
        return self.weight_csr.to_dense()

    def extra_repr(self) -> str:
        numel = self.in_features * self.out_features
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"nnz={self.nnz:,} ({self.nnz / numel:.1%}), codebook={self.codebook_size}, csr"
        )


class CodedConv(nn.Module):
    """A convolution (1-3 d) stored as one codebook index per weight; the weight is expanded per call."""

    def __init__(self, conv: nn.Module, codes: torch.Tensor, table: torch.Tensor, nnz: int) -> None:
        super().__init__()
        self.kind = type(conv)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
            setattr(self, name, getattr(conv, name))
        self._reversed_padding_repeated_twice = conv._reversed_padding_repeated_twice
        self.weight_shape = tuple(conv.weight.shape)
        self.nnz = nnz
        self._conv_repr = conv.extra_repr()
        self.register_buffer("codes", codes)  # 0 is a pruned weight, i the codebook's (i-1)th value
        self.register_buffer("table", table)
        self.bias = nn.Parameter(torch.empty(conv.out_channels), requires_grad=False) if conv.bias is not None else None

    @classmethod
    def from_nonzeros(cls, module: nn.Module, positions: np.ndarray, symbols: np.ndarray, codebook: np.ndarray) -> "CodedConv":
        numel = int(np.prod(module.weight.shape))
        codes = np.zeros(numel, dtype=np.uint8 if codebook.size < 256 else np.int16)
        codes[positions] = symbols + 1
        table = np.concatenate([np.zeros(1, dtype=np.float32), codebook.astype(np.float32)])
        return cls(module, torch.from_numpy(codes), torch.from_numpy(table), int(positions.size))

    def dense_weight(self) -> torch.Tensor:
        return self.table.index_select(0, self.codes.int()).view(self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kind._conv_forward(self, x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        numel = self.codes.numel()
        return f"{self.kind.__name__}: {self._conv_repr}, nnz={self.nnz:,} ({self.nnz / numel:.1%}), codebook={self.table.numel() - 1}, from codes"


Builder = Callable[[nn.Module, np.ndarray, np.ndarray, np.ndarray], nn.Module]

#: How a coded layer runs without its dense weight, by the exact type of the module that owns it.
RUNTIMES: dict[type, Builder] = {
    nn.Linear: SparseLinear.from_nonzeros,
    nn.Conv1d: CodedConv.from_nonzeros,
    nn.Conv2d: CodedConv.from_nonzeros,
    nn.Conv3d: CodedConv.from_nonzeros,
}


@dataclass(frozen=True)
class RuntimePlan:
    """Which coded tensors run from their compressed form, and which were decoded dense (no runtime kind
    for their module)."""

    arch: str
    outputs: int  # the file's num_classes
    sparse: dict[str, str] = field(default_factory=dict)  # module name -> runtime class
    dense: list[str] = field(default_factory=list)  # state-dict keys

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for kind in self.sparse.values():
            counts[kind] = counts.get(kind, 0) + 1
        parts = [f"{n} {kind}" for kind, n in counts.items()]
        line = f"sparse runtime: {len(self.sparse)} layers run compressed ({', '.join(parts) or 'none'})"
        if self.dense:
            line += f"; decoded dense: {', '.join(self.dense)}"
        return line


def load_sparse(data: "bytes | memoryview", model: nn.Module | None = None) -> nn.Module:
    """A `.dcz` file image as a module in eval mode whose coded layers run from their compressed form.
    `model` (your own module, for `none` files) is modified in place; otherwise the architecture's module is
    built without weights. The returned module's `runtime_plan` says what runs how."""
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise ModelError("the sparse runtime runs .dcz files (a .pt holds dense weights: encode it first)")
    header = checked_header(data)
    if model is None:
        architecture = get_arch(header.arch)
        if not architecture.buildable:
            raise ModelError(
                f"this file is of no known architecture ({header.arch!r}): build your model and pass it, "
                "e.g. alexcompress.load(path, model=MyNet(), sparse=True)"
            )
        model = architecture.build_empty(header.num_classes)
    modules = dict(model.named_modules())
    plan = RuntimePlan(header.arch, header.num_classes)
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    for entry in header.tensors:
        built = _runtime_layer(header, data, entry, modules)
        if built is None:
            state[entry.name] = get_encoding(entry.encoding).decode(entry, section_reader(header, data, entry))
            if entry.encoding in CODED:
                plan.dense.append(entry.name)
            continue
        prefix = entry.name.rpartition(".")[0]
        parent, _, leaf = prefix.rpartition(".")
        setattr(model.get_submodule(parent), leaf, built)
        modules[prefix] = built
        plan.sparse[prefix] = type(built).__name__
    _load_rest(model, state, plan)
    object.__setattr__(model, "runtime_plan", plan)
    _return_freed_memory()
    return model.eval()


def _return_freed_memory() -> None:
    """Hand the decoder's freed temporaries back to the OS. glibc keeps freed heap pages mapped (35 MB of
    the 90 MB RSS after loading the 1000-class AlexNet were such pages), so without this the resident size
    overstates what the model holds; elsewhere this does nothing."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def _runtime_layer(header: DczHeader, data: "bytes | memoryview", entry, modules: dict[str, nn.Module]) -> nn.Module | None:
    prefix, _, leaf = entry.name.rpartition(".")
    module = modules.get(prefix)
    builder = RUNTIMES.get(type(module)) if entry.encoding in CODED and leaf == "weight" and prefix else None
    if builder is None:
        return None
    if tuple(module.weight.shape) != entry.shape:
        raise ModelError(f"{entry.name}: the file holds shape {list(entry.shape)}, the model {list(module.weight.shape)}")
    positions, symbols, codebook = get_encoding(entry.encoding).nonzeros(entry, section_reader(header, data, entry))
    return builder(module, positions, symbols, codebook)


def _load_rest(model: nn.Module, state: "OrderedDict[str, np.ndarray]", plan: RuntimePlan) -> None:
    """Everything that was not replaced, strictly: the only keys the model may miss are the replaced
    layers' own compressed buffers, which the file may not name."""
    own = frozenset(f"{prefix}.{name}" for prefix in plan.sparse for name, _ in model.get_submodule(prefix).named_buffers())
    load_into(model, state, own=own, copy=False)
