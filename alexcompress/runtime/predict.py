"""Top-k predictions for image files: which files a list of arguments names, class names, batched inference.

A file that cannot be read as an image is reported and skipped; the others are still predicted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alexcompress.errors import AlexCompressError

if TYPE_CHECKING:
    import torch

    from alexcompress.train.data import Preprocessing

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
            from alexcompress.fileio import count_entries

            files, entries = [], 0
            for top, dirs, names in os.walk(argument):  # links not followed: no loop; the count is capped
                entries = count_entries(entries + len(dirs) + len(names), argument)
                files += [os.path.join(top, name) for name in names if name.lower().endswith(IMAGE_SUFFIXES)]
            files.sort()
            if not files:
                raise AlexCompressError(f"{argument}: a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += files
        elif not os.path.lexists(argument) and GLOB_CHARS & set(argument):
            matches = sorted(glob_files(argument))
            if not matches:
                raise AlexCompressError(f"{argument}: no file matches this pattern")
            found += matches
        else:
            found.append(argument)
    return found


def glob_files(pattern: str) -> list[str]:
    """The files `pattern` matches, with `glob.glob(recursive=True)`'s rules (`**` spans folders, `*` and `?`
    stay within a name, hidden names need a pattern that starts with '.'), but bounded: each folder is read
    once however many links lead to it (a link back to a parent made glob's walk endless), and the walk stops
    with an error past `fileio.MAX_WALK_ENTRIES` entries.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "s" / "d").mkdir(parents=True)
    >>> for name in ("s/a.png", "s/d/b.png", "s/d/c.txt"):
    ...     _ = (root / name).write_bytes(b"")
    >>> (root / "s" / "d" / "up").symlink_to(root / "s")
    >>> sorted(os.path.relpath(p, root) for p in glob_files(str(root / "s" / "**" / "*.png")))
    ['s/a.png', 's/d/b.png']
    """
    import fnmatch

    from alexcompress.fileio import count_entries

    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if GLOB_CHARS & set(part))
    base, rest = os.sep.join(parts[:fixed]) or ("" if not pattern.startswith(os.sep) else os.sep), parts[fixed:]

    def matches(names: "tuple[str, ...]", index: int = 0, at: int = 0) -> bool:
        if index == len(rest):
            return at == len(names)
        part = rest[index]
        if part == "**":  # zero or more folders, none hidden
            return any(matches(names, index + 1, k) for k in range(at, len(names) + 1) if all(not n.startswith(".") for n in names[at:k]))
        if at == len(names) or (names[at].startswith(".") and not part.startswith(".")):
            return False
        return fnmatch.fnmatchcase(names[at], part) and matches(names, index + 1, at + 1)

    found, seen, entries = [], set(), 0
    for top, dirs, files in os.walk(base or ".", followlinks=True):
        info = os.stat(top)
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []  # reached again through a link: its files were looked at already
            continue
        seen.add((info.st_dev, info.st_ino))
        entries = count_entries(entries + len(dirs) + len(files), pattern)
        relative = os.path.relpath(top, base or ".")
        prefix = () if relative == "." else tuple(relative.split(os.sep))
        if "**" not in rest and len(prefix) >= len(rest) - 1:
            dirs[:] = []  # no deeper folder can match a pattern of fixed depth
        found += [
            os.path.join(top, name) if base else os.path.normpath(os.path.join(top, name)) for name in files if matches((*prefix, name))
        ]
    return found


def class_names(num_classes: int, source: str | None = None) -> list[str] | None:
    """Names for the model's outputs: from `source` (a text file, one name per line; or an ImageFolder
    tree, whose sorted class folders are the indices), else ImageNet's for 1000 outputs (torchvision's
    weights metadata), else None (indices are printed)."""
    if source is not None:
        if os.path.isdir(source):
            names = sorted(e.name for e in os.scandir(source) if e.is_dir())
        else:
            from alexcompress.fileio import read_lines

            names = read_lines(source, "class names")
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

    from alexcompress.train.data import load_image
    from alexcompress.train.evaluate import forward

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
