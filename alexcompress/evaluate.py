"""Top-1, top-5 and mean cross-entropy of a model over a DataLoader; under torchrun, each rank passes its
shard and the totals are summed over the ranks, so every rank returns the global figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .errors import AlexCompressError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader


def forward(model: "torch.nn.Module", images: "torch.Tensor") -> "torch.Tensor":
    """`model(images)`, with the error a user can act on when the images do not fit the model (too small
    for its pooling, the wrong number of channels) instead of torch's traceback."""
    try:
        return model(images)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        if not any(word in text for word in ("size", "shape", "channels")):
            raise
        height, width = images.shape[-2:]
        raise AlexCompressError(
            f"the model cannot run on {height}x{width} images with {images.shape[1]} channels ({text[:150]}); change --image-size/--resize"
        ) from None


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float
    loss: float
    samples: int


def evaluate(
    model: "torch.nn.Module",
    batches: "DataLoader",
    *,
    device: "torch.device | str" = "cpu",
    limit: Optional[int] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> Accuracy:
    """Evaluate in eval mode without gradients; `limit` caps the number of samples (per rank)."""
    import torch
    from torch.nn.functional import cross_entropy

    model = model.to(device).eval()
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    with torch.no_grad():
        for images, labels in batches:
            if limit is not None and seen >= limit:
                break
            if limit is not None:
                images, labels = images[: limit - seen], labels[: limit - seen]
            images, labels = images.to(device), labels.to(device)
            logits = forward(model, images)
            loss_sum += float(cross_entropy(logits, labels, reduction="sum"))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += int((top[:, 0] == labels).sum())
            correct5 += int((top == labels[:, None]).any(dim=1).sum())
            seen += labels.numel()
            if on_batch:
                on_batch(seen, correct1)
    from .distributed import all_sum

    correct1, correct5, loss_sum, seen = all_sum([correct1, correct5, loss_sum, seen])
    correct1, correct5, seen = int(correct1), int(correct5), int(seen)
    if seen == 0:
        return Accuracy(0.0, 0.0, 0.0, 0)
    return Accuracy(correct1 / seen, correct5 / seen, loss_sum / seen, seen)
