"""Data-parallel runs under `torchrun`: the process group, which rank does what, and the few collectives
training and evaluation need. Everything here is torch.distributed's own machinery; nothing home-made
travels between ranks but checksums and counts.

Launched by torchrun (WORLD_SIZE > 1 in the environment), `session()` joins the process group: gloo on CPU,
nccl on CUDA, each rank on `cuda:LOCAL_RANK`. Without torchrun (or with one process) it is a no-op and every
function below acts on a world of one, so training code has a single path.

    torchrun --nproc-per-node 4 -m alexcompress prune alexnet.pt --data train/ --epochs 2 -o p.pt
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m alexcompress quantize p.pt --data train/ --epochs 1 -o q.pt
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alexcompress.errors import AlexCompressError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Group:
    """This process's place in the job: rank `rank` of `world`, `local_rank` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes outputs, checkpoints and progress."""
        return self.rank == 0


def launched() -> Group:
    """The group torchrun describes in the environment (a world of one without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise AlexCompressError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise AlexCompressError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}")
    return Group(rank, world, local_rank)


def current() -> Group:
    """The group this process has joined (a world of one if none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    return Group(dist.get_rank(), dist.get_world_size(), launched().local_rank)


def rank_device(name: str, what: str = "--device") -> "torch.device":
    """The device this rank trains on: `name` resolved, and under torchrun with CUDA the GPU of this rank's
    LOCAL_RANK (a fixed `cuda:N` would put every rank on one GPU, so it is refused there)."""
    import torch

    from alexcompress.train.data import resolve_device

    device = resolve_device(name, what)
    group = launched()
    if device.type != "cuda" or not group.active:
        return device
    if ":" in name:
        raise AlexCompressError(f"{what} {name}: under torchrun each rank takes the GPU of its LOCAL_RANK; use {what} cuda or auto")
    if group.local_rank >= torch.cuda.device_count():
        raise AlexCompressError(f"LOCAL_RANK {group.local_rank} but only {torch.cuda.device_count()} CUDA devices on this node")
    torch.cuda.set_device(group.local_rank)
    return torch.device("cuda", group.local_rank)


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[Group]:
    """Join torchrun's process group for the duration (gloo on CPU, nccl on CUDA), or do nothing without
    torchrun. Yields this process's Group."""
    import torch.distributed as dist

    group = launched()
    if not group.active or dist.is_initialized():
        yield current() if group.active else Group()
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise AlexCompressError(f"WORLD_SIZE={group.world} but {' and '.join(missing)} not set: start data-parallel runs with torchrun")
    backend = "nccl" if rank_device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield current()
        # every rank tears down together (and after rank 0 has written the output), with DDP's reducer and
        # its pending work freed first: gloo work still alive at interpreter exit can abort the process
        # ("terminate called without an active exception", seen once in CI; pytorch/pytorch#179291)
        import gc

        gc.collect()
        dist.barrier()
    except RuntimeError as exc:  # the group is still up here, so the failure can be recognised
        message = collective_failure(exc)
        if message is None:
            raise
        raise AlexCompressError(message) from None
    finally:
        dist.destroy_process_group()


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the ranks (float64), or `values` in a world of one."""
    import torch
    import torch.distributed as dist

    if not current().active:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_sum_(tensors: Sequence["torch.Tensor"]) -> None:
    """Sum each tensor over the ranks, in place (on the device the group's backend runs on); nothing in a
    world of one."""
    import torch.distributed as dist

    if not current().active:
        return
    for tensor in tensors:
        dist.all_reduce(tensor)


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    import torch.distributed as dist

    group = current()
    if not group.active:
        return [obj]
    out: list[Any] = [None] * group.world
    dist.all_gather_object(out, obj)
    return out


def check_agreement(tensors: Sequence["torch.Tensor"], what: str) -> None:
    """Raise unless every rank holds bit-identical `tensors` (what must agree: parameters, masks, codebooks),
    compared by a float64 fingerprint of each: its sum, its sum of squares and its count of zeros (as hex
    strings: NaN, from a run whose loss diverged, equals NaN there, so every rank holding it agrees)."""
    import torch

    if not current().active:
        return
    with torch.no_grad():
        rows = [(float(t.double().sum()).hex(), float(t.double().square().sum()).hex(), int((t == 0).sum())) for t in tensors]
    prints = gather(rows)
    for rank, other in enumerate(prints[1:], start=1):
        if other != prints[0]:
            raise AlexCompressError(f"{what}: rank {rank} holds different weights from rank 0 (the ranks diverged)")


def reconcile_buffers(model: "torch.nn.Module") -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics), which may differ by rounding or by a
    layer that sees only its rank's share of the batch; nothing in a world of one."""
    import torch.distributed as dist

    if not current().active:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def collective_failure(exc: BaseException) -> str | None:
    """The one-line error for a collective that failed because another process of the job is gone (the
    usual way a rank learns of a peer's death), or None for any other exception."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()) or not isinstance(exc, RuntimeError):
        return None
    text = " ".join(str(exc).split())
    if not (isinstance(exc, getattr(dist, "DistError", ())) or any(word in text for word in ("gloo", "NCCL", "nccl", "Connection"))):
        return None
    return f"rank {dist.get_rank()}: another process of the job stopped, so this one stops too ({text[:160]})"


def _collective_device() -> "torch.device":
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
