"""Layers whose training behaviour would otherwise depend on how a batch is split over processes, made to
depend on the global batch alone, so that N data-parallel processes take one process's steps.

- `GlobalBatchNorm` (under torchrun): batch statistics over the global batch, all-reduced across the ranks
  as torch's SyncBatchNorm does, but on any backend (SyncBatchNorm refuses CPU tensors, so gloo runs could
  not use it). Every rank then normalises with the same mean and variance and updates its running
  statistics identically; the gradient flows through the all-reduce, so DDP's averaged gradient is one
  process's.
- `KeyedDropout` (always, one process too): the mask is drawn for the whole global batch from a generator
  keyed by (seed, epoch, batch, layer, call), and each rank keeps its own rows. Rank r's row j of a batch is
  row N*j + r of the global batch (`data.epoch_order`), which is the row one process draws for that sample.
  The mask no longer depends on any RNG state, so a resumed run draws what the unbroken one drew.

`for_training(model, clock, distributed)` swaps them in for torch's own layers in place: the parameters and
buffers are the same objects (optimizer and hooks keep their references), the state-dict keys do not change,
and in eval mode both behave exactly as the layers they replace. Other random layers (Dropout2d,
AlphaDropout, torchvision's StochasticDepth, `F.dropout` called in a forward) keep drawing from each
rank's own generator: `random_layers_left` names them so the log can say so.
"""

from __future__ import annotations

import hashlib
import itertools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _world() -> tuple[int, int]:
    """(rank, world) of the process group this process has joined, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllReduce(torch.autograd.Function):
    """A sum over the ranks whose gradient is the sum of the ranks' gradients (each rank's output feeds every
    rank's loss). torch.distributed.nn.functional.all_reduce did this and is deprecated."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _AllReduce.apply(grad)


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduce.apply(tensor)


class GlobalBatchNorm(_BatchNorm):
    """Batch norm over the global batch of a data-parallel run (any backend); plain batch norm in eval mode
    or in a world of one. Statistics in float32 (two passes: the mean, then the centred squares)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a batch of at least 2 dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not batch_stats or _world()[1] == 1:
            return super().forward(input)
        self._check_input_dim(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.tensor([x.numel() // max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum(dims), local]))
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean.reshape(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.to(input.dtype)


class DropoutClock:
    """Which step of which run the forward pass belongs to: `_train` sets it before every forward, and each
    KeyedDropout derives its mask's key from it."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = self.batch = 0
        self._calls: dict[int, int] = {}

    def step(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch, self._calls = epoch, batch, {}

    def key(self, layer: int) -> int:
        """A 63-bit seed for this layer's `call`-th use in the current step."""
        call = self._calls.get(layer, 0)
        self._calls[layer] = call + 1
        text = f"{self.seed}:{self.epoch}:{self.batch}:{layer}:{call}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class KeyedDropout(nn.Module):
    """nn.Dropout whose mask is a function of the global batch's step and row, not of an RNG state."""

    def __init__(self, p: float, clock: DropoutClock, layer: int) -> None:
        super().__init__()
        self.p, self.clock, self.layer = p, clock, layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return input
        if self.p == 1:
            return input * 0
        rank, world = _world()
        generator = torch.Generator(device=input.device).manual_seed(self.clock.key(self.layer))
        draws = torch.rand((input.shape[0] * world, *input.shape[1:]), generator=generator, device=input.device)
        keep = draws[rank::world] >= self.p
        return input * keep.to(input.dtype) * (1.0 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


def _swap(model: nn.Module, convert) -> None:
    for name, child in list(model.named_children()):
        new = convert(child)
        if new is not child:
            setattr(model, name, new)
        else:
            _swap(child, convert)


def for_training(model: nn.Module, clock: DropoutClock, distributed: bool) -> nn.Module:
    """Swap in KeyedDropout (on `clock`) for every nn.Dropout and KeyedDropout and, when `distributed`,
    GlobalBatchNorm for every batch norm, in place; returns `model`.

    >>> clock = DropoutClock(seed=0)
    >>> net = for_training(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4)), clock, distributed=False)
    >>> [type(m).__name__ for m in net]
    ['Linear', 'KeyedDropout', 'BatchNorm1d']
    >>> x = torch.ones(2, 4)
    >>> clock.step(0, 0); a = net[1](x); clock.step(0, 0); b = net[1](x); clock.step(0, 1); c = net[1](x)
    >>> torch.equal(a, b), torch.equal(a, c)
    (True, False)
    """
    layers = itertools.count()

    def convert(module: nn.Module) -> nn.Module:
        if type(module) in (nn.Dropout, KeyedDropout):  # a model trained before: its dropout follows this run's clock
            return KeyedDropout(module.p, clock, next(layers))
        if distributed and isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
            new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            new.weight, new.bias = module.weight, module.bias  # the same Parameter objects
            new.running_mean, new.running_var, new.num_batches_tracked = module.running_mean, module.running_var, module.num_batches_tracked
            return new.train(module.training)
        return module

    _swap(model, convert)
    return model


def random_layers_left(model: nn.Module) -> list[str]:
    """Kinds of layer in `model` that still draw from the process's own generator during training."""
    from torch.nn.modules.dropout import _DropoutNd

    def draws(module: nn.Module) -> bool:
        random = (isinstance(module, _DropoutNd) and type(module) is not nn.Dropout) or type(module).__name__ == "StochasticDepth"
        return random and bool(getattr(module, "p", 0))

    return sorted({type(m).__name__ for m in model.modules() if draws(m)})
