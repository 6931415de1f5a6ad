"""alexcompress: Deep Compression (Han et al., ICLR 2016) for AlexNet and any torchvision or custom model,
with a real `.dcz` file format.

This file declares the public API; heavy dependencies (torch, torchvision) are imported by the functions
that need them, not here. Module names are nouns (`pruning`, `quantization`, `dcz`) so that no function
exported here hides a module.
"""

from __future__ import annotations

__version__ = "0.2.0"

from .archs import Architecture as Architecture
from .archs import detect as detect
from .archs import get_arch as get_arch
from .archs import register as register
from .container import read_dcz as read_dcz
from .dcz import decode as decode
from .dcz import encode as encode
from .dcz import load as load
from .errors import AlexCompressError as AlexCompressError
from .errors import DczError as DczError
from .errors import ModelError as ModelError
from .models import load_state_dict as load_state_dict
from .models import pretrained as pretrained
from .models import random_model as random_model
from .pipeline import Compressed as Compressed
from .pipeline import PruneSpec as PruneSpec
from .pipeline import QuantizeSpec as QuantizeSpec
from .pipeline import compress as compress
from .pipeline import prune as prune
from .quantization import kmeans_1d as kmeans_1d
from .quantization import quantize as quantize

__all__ = [
    "AlexCompressError",
    "Architecture",
    "Compressed",
    "DczError",
    "ModelError",
    "PruneSpec",
    "QuantizeSpec",
    "__version__",
    "compress",
    "decode",
    "detect",
    "encode",
    "get_arch",
    "kmeans_1d",
    "load",
    "load_state_dict",
    "pretrained",
    "prune",
    "quantize",
    "random_model",
    "read_dcz",
    "register",
]
