"""LoRA adapters through ``peft``, trained and merged back so the result is plain dense weights.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685: each target linear
layer ``W`` gets a trainable update ``(alpha / r) · B A`` with ``A`` ``[r, in]`` and ``B`` ``[out, r]`` (``B``
starts at zero, so training starts from the unchanged model); everything else stays frozen. After
training, ``merge_and_unload`` folds ``B A`` into ``W``, so the saved checkpoint has no adapter and loads
with plain transformers. LLM-Pruner recovers its pruned models this way (its recipe: rank 8).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from torch import nn

from compressors.base import CompressionError

if TYPE_CHECKING:
    from peft import PeftModel

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(
    model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS, dropout: float = 0.0
) -> PeftModel:
    """Wrap ``model`` with LoRA adapters on the linear layers named ``targets`` (suffix match); returns the
    ``peft`` model whose only trainable parameters are the adapters."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:  # pragma: no cover - peft is a declared dependency
        raise CompressionError("LoRA recovery needs the peft package: pip install peft") from None
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    use = [t for t in targets if t in present]
    if not use:
        raise CompressionError(
            f"none of the LoRA target layers {list(targets)} exist in this model; "
            f"its linear layers are named {sorted(present)}"
        )
    cfg = LoraConfig(
        r=rank,
        # peft annotates lora_alpha as int but only divides by it (scale = alpha / r): fractional
        # values work and the config allows them, so the annotation is the boundary crossed here
        lora_alpha=cast(int, alpha),
        lora_dropout=dropout,
        target_modules=use,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info("LoRA rank %d on %s: %d trainable parameters", rank, use, n_train)
    return peft_model


def merge_lora(peft_model: PeftModel) -> nn.Module:
    """Fold the adapters into the base weights and return the plain transformers model."""
    model: nn.Module = peft_model.merge_and_unload()  # forwarded to the LoRA tuner, hence untyped
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lora_params(rank: int, layer_shapes: Sequence[tuple[int, int]]) -> int:
    """Trainable parameters of rank-``rank`` adapters on layers of ``(out, in)`` shapes."""
    return sum(rank * (o + i) for o, i in layer_shapes)
