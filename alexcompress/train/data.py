"""Data for evaluation and retraining: an ImageFolder tree with torchvision's AlexNet preprocessing.

Class indices follow ImageFolder: sorted folder names, which for ImageNet's `n01440764`-style synset folders
is exactly the order of torchvision's pretrained AlexNet outputs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from alexcompress.errors import AlexCompressError

if TYPE_CHECKING:
    import torch
    from PIL import Image
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

    def transform(self, augment: str = "none"):
        """Resize, crop (random for `crop-flip`), tensor, normalise; `augment` names an entry of AUGMENTATIONS."""
        from torchvision import transforms

        if augment not in AUGMENTATIONS:
            raise AlexCompressError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        steps = AUGMENTATIONS[augment](self, transforms)
        steps += [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        return transforms.Compose(steps)


def _centre(p: Preprocessing, t: Any) -> list:
    return [t.Resize(p.resize), t.CenterCrop(p.image_size)]


#: Training-time augmentations by name. `none` is evaluation's own preprocessing: right for any data;
#: `flip` mirrors (wrong for digits, text, many scans); `crop-flip` is AlexNet's ImageNet recipe (random
#: crops of the resized image, mirrored).
AUGMENTATIONS: dict[str, Callable[[Preprocessing, Any], list]] = {
    "none": _centre,
    "flip": lambda p, t: [*_centre(p, t), t.RandomHorizontalFlip()],
    "crop-flip": lambda p, t: [t.Resize(p.resize), t.RandomCrop(p.image_size), t.RandomHorizontalFlip()],
}


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise AlexCompressError(f"{what} must be comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None
    if len(values) not in (1, 3):
        raise AlexCompressError(f"{what} needs 1 or 3 values, got {len(values)}")
    return values


def image_folder(root: str, preprocessing: Preprocessing, augment: str = "none") -> "Dataset":
    """An ImageFolder dataset, or an AlexCompressError naming what is wrong with the tree."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise AlexCompressError(f"{root}: no such directory (expected an ImageFolder tree: DIR/CLASS/IMAGE)")
    _check_tree(root)
    try:
        return ImageFolder(root, transform=preprocessing.transform(augment), loader=load_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise AlexCompressError(f"{root}: not an ImageFolder tree ({' '.join(str(exc).split())})") from None


MAX_IMAGE_PIXELS = 89_478_485  # PIL's own default: a larger image is refused, not decompressed
#: Resizing scales the shorter side to --resize: a 7000x1 image became 256 x 1,792,000 (2.5 GB). Photos, scans
#: and digits are within 1:8; panoramas 1:6
MAX_ASPECT = 64


def _check_tree(root: str) -> None:
    """ImageFolder follows symbolic links: a link back to a parent would make its walk endless. Walk the tree
    the same way first, refusing any directory reached twice, and any tree past MAX_WALK_ENTRIES entries."""
    from alexcompress.fileio import count_entries

    seen: set[tuple[int, int]] = set()
    entries = 0
    for directory, subdirs, files in os.walk(root, followlinks=True, onerror=None):
        info = os.stat(directory)
        key = (info.st_dev, info.st_ino)
        if key in seen:
            raise AlexCompressError(f"{root}: the directory tree loops through a symbolic link at {directory}")
        seen.add(key)
        entries = count_entries(entries + len(subdirs) + len(files), root)


def load_image(path: str) -> "Image.Image":
    """An RGB image, or an AlexCompressError naming the file: unreadable, truncated, or a decompression bomb
    (more pixels than MAX_IMAGE_PIXELS) that would take gigabytes to decode."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise AlexCompressError(
                        f"{path}: an image of {image.width}x{image.height} pixels, more than {MAX_IMAGE_PIXELS} (a decompression bomb?)"
                    )
                if max(image.width, image.height) > MAX_ASPECT * max(min(image.width, image.height), 1):
                    raise AlexCompressError(
                        f"{path}: an image of {image.width}x{image.height} pixels, one side more than {MAX_ASPECT} times the other "
                        "(resizing it would take gigabytes)"
                    )
                return image.convert("RGB")
    except AlexCompressError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AlexCompressError(f"{path}: refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # PIL raises many kinds on damaged files
        raise AlexCompressError(f"{path}: not a readable image ({' '.join(str(exc).split())[:120]})") from None


def split_folder(root: str, preprocessing: Preprocessing, augment: str, fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
    """(train, validation) from one ImageFolder tree: `fraction` of every class held out, chosen by `seed`;
    the held-out images get evaluation's preprocessing, the rest `augment`."""
    import numpy as np
    from torch.utils.data import Subset

    if not 0 < fraction < 1:
        raise AlexCompressError(f"validation fraction must be in (0, 1), got {fraction}")
    train, plain = image_folder(root, preprocessing, augment), image_folder(root, preprocessing)
    targets = np.asarray(plain.targets)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        count = min(max(1, round(fraction * members.size)), members.size - 1) if members.size > 1 else 0
        held.extend(rng.permutation(members)[:count].tolist())
    if not held:
        raise AlexCompressError(f"{root}: too few images to hold out a validation fraction of {fraction}")
    keep = np.setdiff1d(np.arange(targets.size), held)
    return Subset(train, keep.tolist()), Subset(plain, sorted(held))


MAX_IN_MEMORY = 1 << 29  # bytes of preprocessed images `in_memory` holds (a validation set scored many times)


def in_memory(dataset: "Dataset", limit: int = MAX_IN_MEMORY) -> "Dataset":
    """`dataset` decoded and preprocessed once, as tensors, when it fits in `limit` bytes (else as it is):
    for a validation set (deterministic preprocessing) that a search scores hundreds of times, which would
    otherwise decode every image file each time."""
    import torch
    from torch.utils.data import TensorDataset

    count = len(dataset)  # type: ignore[arg-type]
    if count == 0:
        return dataset
    first, _ = dataset[0]
    if not isinstance(first, torch.Tensor) or first.numel() * first.element_size() * count > limit:
        return dataset
    images, labels = zip(*(dataset[i] for i in range(count)))
    cached = TensorDataset(torch.stack(images), torch.as_tensor(labels))
    cached.classes = getattr(dataset, "classes", None) or getattr(getattr(dataset, "dataset", None), "classes", [])  # type: ignore[attr-defined]
    return cached


MAX_OVERLAP_CHECK = 20_000  # validation images compared with the training set's (the check reads each once)


def files_of(dataset: Any) -> Optional[list[str]]:
    """The image files an ImageFolder (or a Subset of one) reads, or None for a dataset of another kind."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        inner = files_of(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    samples = getattr(dataset, "samples", None)
    return [path for path, _ in samples] if isinstance(samples, list) else None


def shared_images(training: Any, validation: Any) -> tuple[int, int]:
    """(validation images that are also training images, validation images compared): the same file, or a
    copy of its bytes. Only files of equal size are read and hashed, and at most MAX_OVERLAP_CHECK
    validation images are compared; datasets that are not image folders compare nothing."""
    import hashlib

    train_files, val_files = files_of(training), files_of(validation)
    if not train_files or not val_files:
        return 0, 0
    val_files = val_files[:MAX_OVERLAP_CHECK]

    def size(path: str) -> int:  # -1: not a regular file (a FIFO would block the hash), or unreadable
        try:
            info = os.stat(path)
        except OSError:
            return -1
        return info.st_size if stat.S_ISREG(info.st_mode) else -1

    def digest(path: str) -> Optional[bytes]:
        try:
            with open(path, "rb") as handle:
                return hashlib.blake2b(handle.read(1 << 24), digest_size=16).digest()
        except OSError:
            return None

    val_sizes = {path: size(path) for path in val_files}
    wanted = set(val_sizes.values()) - {-1}
    train_sizes = {path: n for path, n in ((path, size(path)) for path in train_files) if n in wanted}
    real = {os.path.realpath(path) for path in train_sizes}
    hashes = {digest(path) for path in train_sizes} - {None}
    sizes = set(train_sizes.values())
    shared = sum(1 for path, n in val_sizes.items() if n in sizes and (os.path.realpath(path) in real or digest(path) in hashes))
    return shared, len(val_files)


def epoch_order(
    size: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1, pad: bool = True
) -> list[int]:
    """The samples one rank reads in one epoch: a permutation that depends only on (seed, epoch) (the
    identity without `shuffle`), padded by wrapping around to a multiple of `world` as torch's
    DistributedSampler does (unless `pad` is off: evaluation must count every image once), then every
    `world`-th index from `rank`. With one rank, the whole permutation.

    >>> epoch_order(5, shuffle=False, rank=1, world=2)
    [1, 3, 0]
    >>> sorted(epoch_order(5, seed=3, epoch=1)) == list(range(5))
    True
    """
    import torch

    if shuffle:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    else:
        order = list(range(size))
    if pad and world > 1 and size % world:
        extra = world - size % world
        order += (order * (extra // max(size, 1) + 1))[:extra]
    return order[rank::world]


def loader(
    dataset: "Dataset",
    *,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world: int = 1,
    start_batch: int = 0,
    pad: bool = True,
    pin_memory: bool = False,
) -> "DataLoader":
    """A DataLoader over this rank's share of one epoch (see `epoch_order`), from batch `start_batch`, so a
    run resumed mid-epoch reads exactly the batches the unbroken run would have."""
    import torch
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise AlexCompressError(f"batch size must be at least 1, got {batch_size}")
    order = epoch_order(len(dataset), seed=seed, epoch=epoch, shuffle=shuffle, rank=rank, world=world, pad=pad)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # worker seeds
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order[start_batch * batch_size :],
        num_workers=workers,
        generator=generator,
        pin_memory=pin_memory,
    )


def batches_per_epoch(size: int, batch_size: int, world: int = 1) -> int:
    """Batches each rank runs in one epoch of `size` samples."""
    share = -(-size // world)
    return -(-share // batch_size)


def resolve_device(name: str, what: str = "device") -> "torch.device":
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise AlexCompressError(f"{what} must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AlexCompressError(f"{what} {name}: no CUDA device is available here; use cpu")
    return torch.device(name)
