"""alexcompress: Deep Compression (Han et al., ICLR 2016) for AlexNet and any torchvision or custom model,
with a real `.dcz` file format.

This file declares the public API. Names are resolved on first use (PEP 562), so `import alexcompress`
costs nothing and the command line can install its signal handlers before any heavy import; torch and
torchvision are imported only by the functions that need them. Module names are nouns (`pruning`,
`quantization`, `dcz`) so that no exported function hides a module.
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports each name on first use
    from alexcompress.api import load as load
    from alexcompress.codec.container import read_dcz as read_dcz
    from alexcompress.compression.quantization import kmeans_1d as kmeans_1d, quantize as quantize
    from alexcompress.compression.search import SearchSpec as SearchSpec
    from alexcompress.compression.specs import (
        Compressed as Compressed,
        PruneSpec as PruneSpec,
        QuantizeSpec as QuantizeSpec,
        compress as compress,
        prune as prune,
    )
    from alexcompress.errors import AlexCompressError as AlexCompressError, DczError as DczError, ModelError as ModelError
    from alexcompress.models.architecture import Architecture as Architecture
    from alexcompress.models.archs import detect as detect, get_arch as get_arch, register as register
    from alexcompress.models.dcz import decode as decode, encode as encode
    from alexcompress.models.state import load_state_dict as load_state_dict, pretrained as pretrained, random_model as random_model

__version__ = "0.8.0"

#: public name -> the module that defines it
_EXPORTS = {
    "AlexCompressError": "errors",
    "DczError": "errors",
    "ModelError": "errors",
    "Architecture": "models.architecture",
    "detect": "models.archs",
    "get_arch": "models.archs",
    "register": "models.archs",
    "read_dcz": "codec.container",
    "encode": "models.dcz",
    "decode": "models.dcz",
    "load": "api",
    "load_state_dict": "models.state",
    "pretrained": "models.state",
    "random_model": "models.state",
    "Compressed": "compression.specs",
    "PruneSpec": "compression.specs",
    "QuantizeSpec": "compression.specs",
    "compress": "compression.specs",
    "prune": "compression.specs",
    "SearchSpec": "compression.search",
    "kmeans_1d": "compression.quantization",
    "quantize": "compression.quantization",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'alexcompress' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
