"""Top-k predictions for image files: which files a list of arguments names, class names, batched inference.

A file that cannot be read as an image is reported and skipped; the others are still predicted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import AlexCompressError

if TYPE_CHECKING:
    import torch

    from .data import Preprocessing

#: what a folder argument contributes (torchvision's ImageFolder list, lower case)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Prediction:
    path: str
    classes: tuple[int, ...]  # best first
    probabilities: tuple[float, ...]


def expand_images(arguments: Iterable[str]) -> list[str]:
    """Files named by arguments, in order: a file as given (even a missing one, reported when predicted), a
    folder's image files recursively in sorted order, a glob's matches sorted. A folder without images or a
    glob matching nothing is an error: a typo should not print nothing and succeed.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.png", "a.JPG", "notes.txt"):
    ...     _ = (root / name).write_bytes(b"")
    >>> [os.path.basename(p) for p in expand_images([str(root)])]
    ['a.JPG', 'b.png']
    """
    found: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            files = sorted(
                os.path.join(top, name) for top, _, names in os.walk(argument) for name in names if name.lower().endswith(IMAGE_SUFFIXES)
            )
            if not files:
                raise AlexCompressError(f"{argument}: a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += files
        elif not os.path.lexists(argument) and GLOB_CHARS & set(argument):
            matches = sorted(p for p in glob.glob(argument, recursive=True) if os.path.isfile(p))
            if not matches:
                raise AlexCompressError(f"{argument}: no file matches this pattern")
            found += matches
        else:
            found.append(argument)
    return found


def class_names(num_classes: int, source: str | None = None) -> list[str] | None:
    """Names for the model's outputs: from `source` (a text file, one name per line; or an ImageFolder
    tree, whose sorted class folders are the indices), else ImageNet's for 1000 outputs (torchvision's
    weights metadata), else None (indices are printed)."""
    if source is not None:
        if os.path.isdir(source):
            names = sorted(e.name for e in os.scandir(source) if e.is_dir())
        else:
            try:
                with open(source, encoding="utf-8") as handle:
                    names = [line.strip() for line in handle if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise AlexCompressError(f"{source}: cannot read class names ({exc.__class__.__name__}: {exc})") from None
        if len(names) != num_classes:
            raise AlexCompressError(f"{source}: {len(names)} class names for a model with {num_classes} outputs")
        return names
    if num_classes == 1000:
        from torchvision.models import AlexNet_Weights

        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return None


def predict_images(
    model: "torch.nn.Module",
    paths: Sequence[str],
    preprocessing: "Preprocessing",
    *,
    topk: int = 5,
    batch_size: int = 32,
    device: "torch.device | str" = "cpu",
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[Prediction]:
    """Predictions in the order of `paths`, `batch_size` images at a time. A file that is missing or not an
    image is passed to `on_error(path, reason)` and skipped."""
    import torch

    from .data import load_image
    from .evaluate import forward

    transform = preprocessing.transform()
    model = model.to(device).eval()
    batch: list[tuple[str, torch.Tensor]] = []

    def run(items: list[tuple[str, torch.Tensor]]) -> Iterator[Prediction]:
        with torch.no_grad():
            logits = forward(model, torch.stack([x for _, x in items]).to(device))
        probabilities = logits.float().softmax(dim=1)
        top = probabilities.topk(min(topk, probabilities.shape[1]), dim=1)
        for (path, _), p, c in zip(items, top.values.tolist(), top.indices.tolist()):
            yield Prediction(path, tuple(c), tuple(p))

    for path in paths:
        try:
            if not os.path.lexists(path):
                raise AlexCompressError(f"{path}: no such file")
            if os.path.isdir(path):
                raise AlexCompressError(f"{path}: is a directory")
            batch.append((path, transform(load_image(path))))
        except (AlexCompressError, OSError) as exc:
            if on_error is None:
                raise
            on_error(path, str(exc))
            continue
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)
