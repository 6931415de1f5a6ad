"""Data for evaluation and retraining: an ImageFolder tree with torchvision's AlexNet preprocessing.

Class indices follow ImageFolder: sorted folder names, which for ImageNet's `n01440764`-style synset folders
is exactly the order of torchvision's pretrained AlexNet outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import AlexCompressError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """torchvision's ImageNet evaluation transform for AlexNet by default: resize 256, centre crop 224."""

    image_size: int = 224
    resize: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def transform(self, train: bool = False):
        from torchvision import transforms

        steps = [transforms.Resize(self.resize), transforms.CenterCrop(self.image_size)]
        if train:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        return transforms.Compose(steps)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise AlexCompressError(f"{what} must be comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None
    if len(values) not in (1, 3):
        raise AlexCompressError(f"{what} needs 1 or 3 values, got {len(values)}")
    return values


def image_folder(root: str, preprocessing: Preprocessing, train: bool = False) -> "Dataset":
    """An ImageFolder dataset, or an AlexCompressError naming what is wrong with the tree."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise AlexCompressError(f"{root}: no such directory (expected an ImageFolder tree: DIR/CLASS/IMAGE)")
    try:
        return ImageFolder(root, transform=preprocessing.transform(train))
    except (FileNotFoundError, RuntimeError) as exc:
        raise AlexCompressError(f"{root}: not an ImageFolder tree ({' '.join(str(exc).split())})") from None


def loader(dataset: "Dataset", *, batch_size: int, workers: int = 0, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> "DataLoader":
    """A DataLoader whose shuffling depends only on (seed, epoch), so a resumed run sees the same batches."""
    import torch
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise AlexCompressError(f"batch size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator)


def resolve_device(name: str, what: str = "device") -> "torch.device":
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise AlexCompressError(f"{what} must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AlexCompressError(f"{what} {name}: no CUDA device is available here; use cpu")
    return torch.device(name)
