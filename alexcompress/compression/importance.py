"""Per-weight importance for quantization (Choi et al., ICLR 2017): how much the loss cares about each
weight's error, so that the quantizer spends its precision where it matters.

`grad2` is the diagonal of the empirical Fisher information, the mean over a few batches of each weight's
squared loss gradient: a cheap, always-positive stand-in for the Hessian's diagonal (one backward pass per
batch, no second derivatives). The quantizers take it as a weight on each value's squared error
(`quantization.QUANTIZERS`). Registry `IMPORTANCES`: a name to a function of (state, arch, dataset, config).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from alexcompress.errors import AlexCompressError
from alexcompress.models.state import as_numpy, compressible_keys

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

#: batches of the training images that `grad2` averages over (at --batch-size each)
DEFAULT_BATCHES = 16
#: the share of the measured importance in the one used; the rest is uniform
SHRINK = 0.5


def grad2(
    state: Mapping[str, "torch.Tensor"],
    arch: str,
    dataset: "Dataset",
    *,
    batch_size: int = 64,
    batches: int = DEFAULT_BATCHES,
    device: str = "cpu",
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
) -> "OrderedDict[str, np.ndarray]":
    """Mean squared gradient of the cross-entropy loss for every coded weight, over `batches` shuffled
    batches (the model in eval mode: no dropout noise in the estimate), normalised to mean 1 over each
    layer's nonzeros and shrunk halfway to uniform (`SHRINK`): 0.5 + 0.5 h / mean(h). A few batches give a
    noisy, heavy-tailed estimate, exactly zero for a unit they never activate (on digits, 20-50% of a
    layer's weights below a tenth of the mean); unshrunk, ECSQ pushed those weights onto the cheapest code
    whatever their value, and the model fell to chance. Shrunk, no weight's error counts less than half the
    average. Under torchrun `batch_size` is the global batch: each rank takes its share
    of every batch and the sums are added over the ranks, so all ranks quantize alike.

    >>> from alexcompress.models.state import random_model
    >>> from alexcompress.compression.pruning import prune_global
    >>> import torch
    >>> images = torch.utils.data.TensorDataset(torch.randn(8, 3, 64, 64), torch.arange(8) % 10)
    >>> h = grad2(prune_global(random_model(num_classes=10), 0.9).state, "alexnet", images, batch_size=4, batches=2)
    >>> sorted(h)[:2], h["classifier.6.weight"].shape
    (['classifier.1.weight', 'classifier.4.weight'], (10, 4096))
    """
    import torch
    from torch.nn.functional import cross_entropy

    from alexcompress.models.state import build_model
    from alexcompress.train.data import loader
    from alexcompress.train.distributed import all_sum, all_sum_, current, rank_device

    if batches < 1:
        raise AlexCompressError(f"importance needs at least one batch, got {batches}")
    keys = compressible_keys(state, arch)
    model = build_model(state, arch).to(rank_device(device))
    model.eval()
    params = dict(model.named_parameters())
    sums = {key: torch.zeros_like(params[key]) for key in keys}
    target = next(model.parameters()).device
    group = current()
    per_rank = max(1, batch_size // group.world)
    seen = 0
    for images, labels in loader(dataset, batch_size=per_rank, shuffle=True, seed=seed, rank=group.rank, world=group.world):
        model.zero_grad(set_to_none=True)
        cross_entropy(model(images.to(target)), labels.to(target)).backward()
        for key in keys:
            sums[key] += params[key].grad.detach() ** 2
        seen += 1
        if seen == batches:
            break
    if seen == 0:
        raise AlexCompressError("importance: the training images gave no batch")
    all_sum_(list(sums.values()))
    seen = int(all_sum([seen])[0])
    if log is not None:
        log(f"importance grad2: squared gradients over {seen} batches of {batch_size}")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key in keys:
        h = (sums[key] / seen).cpu().numpy().astype(np.float64)
        nonzero = as_numpy(state[key]) != 0
        mean = float(h[nonzero].mean()) if nonzero.any() else 0.0
        relative = h / mean if mean > 0 else np.ones_like(h)
        out[key] = ((1 - SHRINK) + SHRINK * relative).astype(np.float32)
    return out


#: per-weight importances by name; "none" weighs every weight alike
IMPORTANCES: dict[str, Optional[Callable[..., "OrderedDict[str, np.ndarray]"]]] = {"none": None, "grad2": grad2}


def estimate(
    name: str, state: Mapping[str, Any], arch: str, dataset: Optional["Dataset"], **options: Any
) -> Optional[Mapping[str, np.ndarray]]:
    """The importance `name` of every coded weight, or None for "none"; a one-line error without data."""
    if name not in IMPORTANCES:
        raise AlexCompressError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCES)}")
    fn = IMPORTANCES[name]
    if fn is None:
        return None
    if dataset is None:
        raise AlexCompressError(f"--importance {name} needs training images: give --data")
    return fn(state, arch, dataset, **options)
