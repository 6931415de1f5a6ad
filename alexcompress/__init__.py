"""alexcompress: Deep Compression (Han et al., ICLR 2016) for AlexNet, with a real `.dcz` file format.

Heavy dependencies (torch, torchvision) are imported by the functions that need them, not here.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AlexCompressError as AlexCompressError
from .errors import DczError as DczError
from .errors import ModelError as ModelError
from .models import load_state_dict as load_state_dict
from .models import random_model as random_model
from .models import pretrained_alexnet as pretrained_alexnet
from .prune import prune_global as prune_global
from .prune import prune_by_rates as prune_by_rates
from .prune import prune_by_std as prune_by_std
from .prune import prune_paper as prune_paper
from .quantize import quantize as quantize
from .quantize import kmeans_1d as kmeans_1d
from .codec import encode as encode
from .codec import decode as decode
from .codec import load as load
from .container import read_dcz as read_dcz

__all__ = [
    "AlexCompressError",
    "DczError",
    "ModelError",
    "__version__",
    "decode",
    "encode",
    "kmeans_1d",
    "load",
    "load_state_dict",
    "pretrained_alexnet",
    "prune_by_rates",
    "prune_by_std",
    "prune_global",
    "prune_paper",
    "quantize",
    "random_model",
    "read_dcz",
]
