"""Training with a fixed sparsity mask, and packing the result as sparse storage.

Sparse Llama (Agarwalla et al., arXiv 2405.03594) prunes a model one-shot (SparseGPT) and then keeps
training it on pre-training data with the sparsity mask fixed: the pruned weights stay exactly zero,
the remaining ones learn to compensate. Here the mask is held fixed two ways at once:

* the gradient of every masked weight is zeroed by a hook before the optimizer sees it, so AdamW's
  moments of pruned weights stay zero and their update is zero;
* after every optimizer step the mask is multiplied in again (``apply``), so weight decay or numerical
  noise can never revive a pruned weight.

Layers come in as :class:`compressors.packed.SparseLinear` (what the one-shot pruners produce), are
turned into trainable ``nn.Linear`` with their mask (:func:`densify`), and go back to ``SparseLinear``
after training (:func:`pack`), so the saved size reflects the sparsity.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from compressors.layers import get_bias, set_module
from compressors.packed import SparseLinear

log = logging.getLogger(__name__)


class FixedMask:
    """Keeps ``layer.weight`` zero wherever ``mask`` is False (see module docstring)."""

    def __init__(self, layers: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> None:
        self.layers = layers
        self.masks = {k: m.to(layers[k].weight.device) for k, m in masks.items()}
        self._hooks = [layers[k].weight.register_hook(lambda g, m=self.masks[k]: g * m) for k in layers]
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for k, layer in self.layers.items():
            layer.weight.mul_(self.masks[k])

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / max(total, 1)


def densify(model: nn.Module) -> tuple[dict[str, nn.Linear], dict[str, torch.Tensor], dict[str, str]]:
    """Replace every ``SparseLinear`` of ``model`` by a trainable ``nn.Linear`` holding the same weight.

    Returns ``(layers, masks, patterns)`` keyed by module path; a mask is True where a weight is kept.
    """
    layers, masks, patterns = {}, {}, {}
    device = next(model.parameters()).device
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, SparseLinear):
            continue
        w = mod.dequantize().to(device)
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, device=device)
        with torch.no_grad():
            lin.weight.copy_(w)
            if mod.bias is not None:
                lin.bias.copy_(mod.bias.float())
        set_module(model, name, lin)
        layers[name], masks[name], patterns[name] = lin, w != 0, mod.pattern
    return layers, masks, patterns


@torch.no_grad()
def pack(
    model: nn.Module, layers: dict[str, nn.Linear], masks: dict[str, torch.Tensor], patterns: dict[str, str]
) -> None:
    """Put every trained layer back as ``SparseLinear`` (the mask applied once more)."""
    for name, lin in layers.items():
        w = (lin.weight * masks[name].to(lin.weight.device)).float().cpu()
        b = get_bias(lin)
        sparse = SparseLinear.from_dense(
            w,
            bias=b.detach().cpu() if b is not None else None,
            pattern=patterns[name],
        )
        set_module(model, name, sparse.to(lin.weight.device))
