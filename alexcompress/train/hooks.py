"""What a training stage does around the optimizer: masked retraining (pruned weights stay zero),
regrowing retraining, and centroid fine-tuning (the codebook trains, assignments stay)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch


class Hooks:
    """What a training stage does around the optimizer: which parameters it trains, and the fix-ups.
    `after_step` is told the step's learning rate and the fp16 loss scale (1 without fp16)."""

    def parameters(self, model: "torch.nn.Module") -> list:
        raise NotImplementedError

    def after_backward(self, model: "torch.nn.Module") -> None:
        pass

    def after_step(self, model: "torch.nn.Module", lr: float = 0.0, grad_scale: float = 1.0) -> None:
        pass

    def epoch_start(self, model: "torch.nn.Module") -> Optional[str]:
        """Called on every rank before each epoch but the run's first (not again when resuming inside an
        epoch); may return a line for the log."""
        return None

    def state(self) -> dict[str, Any]:
        return {}


class MaskedRetraining(Hooks):
    """Train every parameter; pruned weights (zeros at the start) stay exactly zero.

    Gradients are masked before the (synchronised) optimizer step, so a pruned weight never moves and stays
    +0.0 (a weight re-masked after moving would come back as -0.0 where it went negative), and the mask is
    applied once more after the step as a guarantee. The masks multiply as float tensors: a boolean mask
    costs a conversion on every multiply (fc6: 56 ms against 9 ms on two cores)."""

    def __init__(self, model: "torch.nn.Module", coded: "set[str]", masks: "Optional[dict[str, torch.Tensor]]" = None) -> None:
        params = dict(model.named_parameters())
        self.masks = masks if masks is not None else {key: (p.detach() != 0) for key, p in params.items() if key in coded}
        self._params = [(params[key], mask.to(device=params[key].device, dtype=params[key].dtype)) for key, mask in self.masks.items()]

    def parameters(self, model: "torch.nn.Module") -> list:
        return list(model.parameters())

    def after_backward(self, model: "torch.nn.Module") -> None:
        for param, mask in self._params:
            if param.grad is not None:
                param.grad.mul_(mask)

    def after_step(self, model: "torch.nn.Module", lr: float = 0.0, grad_scale: float = 1.0) -> None:
        import torch

        with torch.no_grad():
            for param, mask in self._params:
                param.mul_(mask)

    def state(self) -> dict[str, Any]:
        return {"masks": {k: v.cpu() for k, v in self.masks.items()}}


class RegrowingRetraining(MaskedRetraining):
    """Masked retraining in which pruned weights may come back (dynamic network surgery, Guo et al. 2016;
    CLIP-Q, Tung & Mori 2018).

    Every coded layer keeps a dense shadow of its weights. The forward pass and the optimizer see only the
    kept weights (as in MaskedRetraining); a pruned weight's shadow moves by plain gradient descent on the
    gradient taken at the masked point (straight through the mask), at the current learning rate. Before
    each epoch but a round's first the mask is chosen again: the same number of weights per layer, now
    those with the largest shadow magnitudes, so a pruned weight whose gradient kept pushing it out returns
    and the weakest kept one leaves; the epoch then trains with the new mask. Kept counts, hence the
    compressed size, do not change. The shadow starts from `shadow` (the weights before this round's
    pruning) where given, else from the weights.

    Measured on digits, two designs that failed: pruned weights stepped by the optimizer itself (Adam moves
    every weight by about the learning rate per step, whatever its gradient, so a third of fc6's kept weights
    churned per epoch and validation top-1 fell from 94% to 71%); and the mask chosen after an epoch rather
    than before the next (the new weights met the validation untrained: every round kept its start)."""

    def __init__(
        self,
        model: "torch.nn.Module",
        coded: "set[str]",
        masks: "Optional[dict[str, torch.Tensor]]" = None,
        shadow: "Optional[dict[str, torch.Tensor]]" = None,
    ) -> None:
        import torch

        super().__init__(model, coded, masks)
        params = dict(model.named_parameters())
        self.shadow = {}
        for key, mask in self.masks.items():
            p = params[key].detach()
            start = shadow[key].to(device=p.device, dtype=p.dtype) if shadow is not None and key in shadow else p
            self.shadow[key] = torch.where(mask.to(p.device), p, start).clone()
        self._keys = list(self.masks)
        self._pending: dict[str, torch.Tensor] = {}

    def after_backward(self, model: "torch.nn.Module") -> None:
        self._pending = {}
        for key, (param, mask) in zip(self._keys, self._params):
            if param.grad is not None:
                self._pending[key] = param.grad * (1 - mask)  # what the pruned weights would have been told
        super().after_backward(model)

    def after_step(self, model: "torch.nn.Module", lr: float = 0.0, grad_scale: float = 1.0) -> None:
        import torch

        with torch.no_grad():
            for key, (param, mask) in zip(self._keys, self._params):
                shadow = self.shadow[key]
                grad = self._pending.get(key)
                if grad is not None and bool(torch.isfinite(grad).all()):  # fp16 overflow: the step was skipped
                    shadow.sub_(grad, alpha=lr / grad_scale)
                shadow.copy_(torch.where(mask != 0, param, shadow))
                # +0.0, not param * 0: the optimizer's momentum moves a weight that just left the mask
                param.copy_(torch.where(mask != 0, param, torch.zeros((), dtype=param.dtype, device=param.device)))
        self._pending = {}

    def epoch_start(self, model: "torch.nn.Module") -> Optional[str]:
        import torch

        moved = kept = 0
        with torch.no_grad():
            for i, (key, (param, mask)) in enumerate(zip(self._keys, self._params)):
                k = int(mask.sum())
                magnitude = self.shadow[key].abs().reshape(-1)
                if k == 0 or k == magnitude.numel():
                    continue
                chosen = torch.zeros(magnitude.numel(), dtype=torch.bool, device=magnitude.device)
                chosen[torch.topk(magnitude, k, sorted=False).indices] = True
                chosen &= magnitude > 0  # a weight at exactly zero stays pruned
                new = chosen.reshape(mask.shape)
                moved += int((new & (mask == 0)).sum())
                kept += k
                self.masks[key] = new
                self._params[i] = (param, new.to(param.dtype))
                param.copy_(torch.where(new, self.shadow[key], torch.zeros((), dtype=param.dtype, device=param.device)))
        return f"regrow: {moved:,} pruned weights came back ({moved / max(kept, 1):.2%} of the kept)"

    def state(self) -> dict[str, Any]:
        return {**super().state(), "shadow": {k: v.cpu() for k, v in self.shadow.items()}}


class CentroidFinetuning(Hooks):
    """Train each quantized layer's centroids with the grouped gradient; biases and other raw parameters
    train as usual. Weights are rewritten from the centroids after every step."""

    def __init__(
        self,
        model: "torch.nn.Module",
        coded: "set[str]",
        assignments: "Optional[dict[str, tuple[torch.Tensor, torch.Tensor]]]" = None,
        centroids: "Optional[dict[str, torch.Tensor]]" = None,
    ) -> None:
        import torch

        params = dict(model.named_parameters())
        self.layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.nn.Parameter]] = {}
        for key, p in params.items():
            if key not in coded:
                continue
            if assignments is not None:
                positions, labels = (t.to(p.device) for t in assignments[key])
                values = centroids[key].to(p.device)
            else:
                flat = p.detach().reshape(-1)
                positions = torch.nonzero(flat, as_tuple=True)[0]
                values, labels = torch.unique(flat[positions], return_inverse=True)
            self.layers[key] = (positions, labels, torch.nn.Parameter(values.clone().float()))
            p.requires_grad_(True)

    def parameters(self, model: "torch.nn.Module") -> list:
        raw = [p for key, p in model.named_parameters() if key not in self.layers]
        return raw + [c for _, _, c in self.layers.values()]

    def after_backward(self, model: "torch.nn.Module") -> None:
        import torch

        params = dict(model.named_parameters())
        for key, (positions, labels, centroids) in self.layers.items():
            weight = params[key]
            grouped = torch.zeros_like(centroids, requires_grad=False)
            if weight.grad is not None:  # dL/dC_k = sum of dL/dW over the weights assigned to centroid k
                grouped.index_add_(0, labels, weight.grad.reshape(-1)[positions])
            centroids.grad = grouped
            weight.grad = None  # the weights themselves are not trained

    def after_step(self, model: "torch.nn.Module", lr: float = 0.0, grad_scale: float = 1.0) -> None:
        import torch

        tiny = torch.finfo(torch.float32).tiny
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, (positions, labels, centroids) in self.layers.items():
                zero = centroids == 0  # a centroid at exactly 0.0 would silently prune its weights
                if zero.any():
                    centroids[zero] = tiny
                params[key].view(-1)[positions] = centroids[labels]

    def state(self) -> dict[str, Any]:
        return {
            "assignments": {k: (pos.cpu(), lab.cpu()) for k, (pos, lab, _) in self.layers.items()},
            "centroids": {k: c.detach().cpu() for k, (_, _, c) in self.layers.items()},
        }
