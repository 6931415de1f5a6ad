"""Top-1, top-5 and mean cross-entropy of a model over a DataLoader, and how far its predictions moved from a
reference's (the mean KL divergence, for sensitivity analysis); under torchrun, each rank passes its shard
and the totals are summed over the ranks, so every rank returns the global figures."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from alexcompress.errors import AlexCompressError

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
    kl: float = 0.0  # mean KL(reference || model) in nats, when a reference was given


def _batches(batches: "DataLoader", limit: Optional[int], device: "torch.device | str") -> "Iterator[tuple[torch.Tensor, torch.Tensor]]":
    """The (images, labels) of `batches` on `device`, at most `limit` samples in all."""
    seen = 0
    for images, labels in batches:
        if limit is not None and seen >= limit:
            return
        if limit is not None:
            images, labels = images[: limit - seen], labels[: limit - seen]
        seen += labels.numel()
        yield images.to(device), labels.to(device)


def log_probabilities(
    model: "torch.nn.Module", batches: "DataLoader", *, device: "torch.device | str" = "cpu", limit: Optional[int] = None
) -> "list[torch.Tensor]":
    """The model's log-softmax outputs, one tensor per batch (on the CPU): the reference that `evaluate`
    measures another model's divergence from, over the same batches in the same order."""
    import torch

    model = model.to(device).eval()
    with torch.no_grad():
        return [torch.log_softmax(forward(model, images).float(), dim=1).cpu() for images, _ in _batches(batches, limit, device)]


def evaluate(
    model: "torch.nn.Module",
    batches: "DataLoader",
    *,
    device: "torch.device | str" = "cpu",
    limit: Optional[int] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
    reference: "Optional[Sequence[torch.Tensor]]" = None,
) -> Accuracy:
    """Evaluate in eval mode without gradients; `limit` caps the number of samples (per rank). With
    `reference` (`log_probabilities` of another model over the same batches), `kl` is the mean divergence
    of this model's predictions from it: unlike top-1, it counts every change, and never a gain."""
    import torch
    from torch.nn.functional import cross_entropy

    model = model.to(device).eval()
    correct1 = correct5 = seen = 0
    loss_sum = kl_sum = 0.0
    with torch.no_grad():
        for index, (images, labels) in enumerate(_batches(batches, limit, device)):
            logits = forward(model, images)
            loss_sum += float(cross_entropy(logits, labels, reduction="sum"))
            if reference is not None:
                target = reference[index].to(logits.device)
                kl_sum += float(
                    torch.nn.functional.kl_div(torch.log_softmax(logits.float(), dim=1), target, reduction="sum", log_target=True)
                )
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += int((top[:, 0] == labels).sum())
            correct5 += int((top == labels[:, None]).any(dim=1).sum())
            seen += labels.numel()
            if on_batch:
                on_batch(seen, correct1)
    from alexcompress.train.distributed import all_sum

    correct1, correct5, loss_sum, kl_sum, seen = all_sum([correct1, correct5, loss_sum, kl_sum, seen])
    correct1, correct5, seen = int(correct1), int(correct5), int(seen)
    if seen == 0:
        return Accuracy(0.0, 0.0, 0.0, 0)
    return Accuracy(correct1 / seen, correct5 / seen, loss_sum / seen, seen, max(0.0, kl_sum / seen))
