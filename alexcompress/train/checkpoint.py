"""Training checkpoints: written atomically, read through the `.pt` bounds and torch's weights-only
unpickler, every field checked before a resume uses it, removed when a run succeeds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from alexcompress.errors import AlexCompressError
from alexcompress.train.config import TrainConfig

if TYPE_CHECKING:
    import torch


def _save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    import torch

    from alexcompress.fileio import write_atomic

    write_atomic(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint's contents, through the same bounds as every model file (`ptfile.check_archive`: no zip
    bomb, no pickle nested or memo-indexed past its size) before torch's weights-only unpickler reads it."""
    import pickle

    import torch

    from alexcompress.models.ptfile import check_archive

    if not Path(path).exists():
        raise AlexCompressError(f"{path}: no such file (a checkpoint to resume from)")
    if not Path(path).is_file():
        raise AlexCompressError(f"{path}: not a regular file (a checkpoint is one)")
    check_archive(path, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise AlexCompressError(
            f"{path}: not an alexcompress checkpoint (it holds objects other than tensors and plain values, which are never unpickled here)"
        ) from None
    except Exception as exc:
        raise AlexCompressError(f"{path}: not a readable alexcompress checkpoint ({' '.join(str(exc).split())[:200]})") from None


#: what `_train` and the stages read from a checkpoint: field -> (the types it may have, what it is)
_CHECKPOINT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "round": ((int,), "a round number"),
    "epoch": ((int,), "an epoch number"),
    "batch": ((int,), "a batch number"),
    "world": ((int,), "a process count"),
    "stale": ((int,), "an epoch count"),
    "model": ((dict,), "a state dict"),
    "optimizer": ((dict,), "optimizer state"),
}
_STAGE_FIELDS = {"retrain": ("masks",), "centroids": ("assignments", "centroids")}


def _check_checkpoint_fields(ckpt: dict[str, Any], path: str, stage: str) -> None:
    """Every field the resume reads, of the type and range it needs: one line naming the field otherwise."""
    import torch

    for field, (types, what) in _CHECKPOINT_FIELDS.items():
        value = ckpt.get(field)
        if field in ("round", "world", "stale", "batch") and field not in ckpt:
            continue  # older files lack them; the defaults apply
        if not isinstance(value, types) or isinstance(value, bool):
            raise AlexCompressError(f"{path}: field '{field}' must be {what}, got {type(value).__name__}")
        if isinstance(value, int) and value < (1 if field == "world" else 0):  # centroid fine-tuning writes round 0
            raise AlexCompressError(f"{path}: field '{field}' is out of range ({value})")
    for field in _STAGE_FIELDS.get(stage, ()):
        if not isinstance(ckpt.get(field), dict):
            raise AlexCompressError(f"{path}: field '{field}' is missing (a checkpoint of '{stage}' holds it)")
    best = ckpt.get("best")  # the best epoch so far: {"epoch", "top1", "loss" (0.7.0 on), "model" (None: none yet)}
    if best is not None and not (
        isinstance(best, dict)
        and isinstance(best.get("epoch"), int)
        and isinstance(best.get("top1"), float)
        and isinstance(best.get("loss", 0.0), float)
        and (best.get("model") is None or isinstance(best.get("model"), dict))
    ):
        raise AlexCompressError(f"{path}: field 'best' must hold the best epoch (epoch, top-1, loss, weights)")
    rng = ckpt.get("rng")  # one state per rank (files of 0.2.0: one state)
    states = rng if isinstance(rng, (list, tuple)) else [rng]
    if not states or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in states):
        raise AlexCompressError(f"{path}: field 'rng' must hold RNG states (byte tensors)")


def _tensors(value: Any) -> list["torch.Tensor"]:
    """Every tensor in a (nested) dict, list or tuple, in order: what a hook's state holds."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return [t for item in items for t in _tensors(item)]


def _restore_rng(ckpt: dict[str, Any], rank: int, device: "torch.device") -> None:
    import torch

    rngs = ckpt["rng"]  # one state per rank (files of 0.2.0: one); at an epoch boundary the world may differ
    torch.set_rng_state(rngs[rank % len(rngs)] if isinstance(rngs, list) else rngs)
    if device.type == "cuda" and ckpt.get("cuda_rng"):
        torch.cuda.set_rng_state(ckpt["cuda_rng"][rank % len(ckpt["cuda_rng"])], device)


def _resume_point(config: TrainConfig, stage: str, state: Any) -> Optional[dict[str, Any]]:
    if not config.resume:
        return None
    ckpt = load_checkpoint(config.checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "alexcompress-checkpoint":
        raise AlexCompressError(f"{config.checkpoint}: not an alexcompress checkpoint")
    if ckpt.get("stage") != stage:
        raise AlexCompressError(f"{config.checkpoint}: is a checkpoint of '{ckpt.get('stage')}', not of '{stage}'")
    _check_checkpoint_fields(ckpt, config.checkpoint, stage)
    model = ckpt.get("model")
    if not isinstance(model, dict) or list(model) != list(state) or any(tuple(model[k].shape) != tuple(state[k].shape) for k in state):
        raise AlexCompressError(f"{config.checkpoint}: is a checkpoint of another model (its tensors differ from the input's)")
    return ckpt


def _finished(config: TrainConfig) -> None:
    """A successful run leaves no checkpoint behind (741 MB for AlexNet) unless asked to."""
    if config.checkpoint and not config.keep_checkpoint:
        try:
            os.unlink(config.checkpoint)
        except FileNotFoundError:
            pass


def default_checkpoint(output: str) -> Optional[str]:
    """`out.pt` -> `out.pt.ckpt` beside the output (never beside the input); none for stdout."""
    return None if output == "-" else os.fspath(output) + ".ckpt"
