"""Finding the decoder blocks and their linear layers in any causal LM, without per-model code.

Layer-wise compressors (GPTQ, SparseGPT, Wanda, ...) walk a model block by block: they capture what
block 0 receives, then feed each block's outputs to the next. This module finds the list of blocks
(``model.layers`` in Llama/Mistral/Qwen2/Gemma/Phi, ``model.decoder.layers`` in OPT, ``transformer.h`` in
GPT-2, ``gpt_neox.layers`` in GPT-NeoX, or any other ``ModuleList`` of that length), lists each block's
linear layers, reads and writes their weights as ``[out, in]`` whatever the layer type (GPT-2's
``Conv1D`` stores the transpose) and captures block 0's inputs exactly as transformers passes them
(hidden states plus ``position_embeddings``, ``attention_mask``, ``position_ids``, ... keyword arguments).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D  # GPT-2 style layers: y = x @ W + b, W stored [in, out]

from compressors.base import CompressionError
from compressors.hf_compat import CACHE_KWARG_NAMES
from compressors.packed import PackedModule

log = logging.getLogger(__name__)

# The usual places transformers keeps the decoder blocks, tried first; any other ModuleList whose
# length is the configured number of layers is accepted too.
KNOWN_BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi, Phi-3, Granite, OLMo, StableLM, ...
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, GPT-J, BLOOM, Falcon, GPT-BigCode
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "transformer.layers",
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, Llava-style)
)


def is_linear(module: nn.Module) -> bool:
    """A layer whose weight a weight-only compressor may replace: ``nn.Linear`` or GPT-2's ``Conv1D``."""
    return isinstance(module, (nn.Linear, Conv1D))


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (e.g. ``model.layers.0.self_attn.q_proj``)."""
    parent_path, _, name = path.rpartition(".")
    parent = get_module(model, parent_path)
    setattr(parent, name, new)


def set_attribute(module: nn.Module, name: str, value: object) -> None:
    """Set a plain (non-tensor) attribute such as ``layer_idx``: ``Module.__setattr__`` is typed for
    tensors and submodules only, so ``module.layer_idx = 3`` does not type-check."""
    setattr(module, name, value)


def _n_layers(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(text_cfg, key, None)
        if isinstance(n, int):
            return n
    return None


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """Return ``(dotted path of the block list, the blocks)``.

    Raises :class:`CompressionError` naming the paths looked for when no block list with linear layers
    is found.
    """
    n = _n_layers(model)
    candidates: list[tuple[str, nn.ModuleList]] = []
    for path in KNOWN_BLOCK_PATHS:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList):
            candidates.append((path, mod))
    if not candidates:
        for path, mod in model.named_modules():
            if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
                candidates.append((path, mod))
    for path, mod in candidates:
        blocks = list(mod)
        if blocks and any(is_linear(m) or isinstance(m, PackedModule) for m in blocks[0].modules()):
            return path, blocks
    raise CompressionError(
        f"{type(model).__name__}: no list of decoder blocks with linear layers found; looked for "
        f"{', '.join(KNOWN_BLOCK_PATHS)} and any ModuleList of num_hidden_layers={n} modules. "
        "This architecture is not supported by Shrinkwise's layer-wise compressors."
    )


def linear_layers(block: nn.Module) -> dict[str, nn.Module]:
    """The block's linear layers by name relative to the block, in definition order.

    Definition order is execution order for every supported architecture (attention projections,
    then the MLP); layers that share an input (q/k/v) are adjacent.
    """
    return {name: m for name, m in block.named_modules() if name and is_linear(m)}


def all_linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer inside the decoder blocks, by full dotted path (lm_head excluded)."""
    path, blocks = find_blocks(model)
    out: dict[str, nn.Module] = {}
    for i, block in enumerate(blocks):
        for name, m in linear_layers(block).items():
            out[f"{path}.{i}.{name}"] = m
    return out


def get_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[out, in]`` (a transposed view for ``Conv1D``; no copy)."""
    if isinstance(module, Conv1D):
        return module.weight.t()
    weight = getattr(module, "weight", None)  # nn.Linear, a packed layer's dequantized view, ...
    if isinstance(weight, torch.Tensor):
        return weight
    raise CompressionError(f"{type(module).__name__} is not a linear layer")


def set_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write an ``[out, in]`` weight into the layer in place (transposing for ``Conv1D``)."""
    w = get_weight(module)
    if tuple(w.shape) != tuple(weight.shape):
        raise ValueError(
            f"weight shape {tuple(weight.shape)} does not match the layer's [out, in] {tuple(w.shape)}"
        )
    with torch.no_grad():
        w.copy_(weight.to(w.dtype))


def in_out_features(module: nn.Module) -> tuple[int, int]:
    out_f, in_f = get_weight(module).shape
    return int(in_f), int(out_f)


def get_bias(module: nn.Module) -> torch.Tensor | None:
    return getattr(module, "bias", None)


class _StopForward(Exception):
    pass


def block_output(out: Any) -> torch.Tensor:
    """A decoder block returns a tensor (Llama in transformers 5) or a tuple whose first item is it."""
    hidden: torch.Tensor = out[0] if isinstance(out, (tuple, list)) else out
    return hidden


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, tokens: torch.Tensor, block_index: int = 0
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run the model on ``tokens`` ``[n, seq]`` up to block ``block_index`` and return its inputs.

    Returns ``(hidden_states [n, seq, hidden], kwargs)``: the block's positional input for every sample,
    and the keyword arguments transformers passed it (``position_embeddings`` (cos, sin), ``attention_mask``,
    ``position_ids``, ``cache_position``...) for a batch of ONE sample, so a layer-wise compressor can call
    ``block(hidden_states[i:i+1], **kwargs)`` for every sample (all samples share seq length and positions).
    The model runs with ``use_cache=False``; nothing after the block is computed.
    """
    if tokens.dim() == 1:
        tokens = tokens[None]
    _, blocks = find_blocks(model)
    block = blocks[block_index]
    captured: list[torch.Tensor] = []
    first_kwargs: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hs = args[0] if args else kwargs["hidden_states"]
        captured.append(hs.detach())
        if not first_kwargs:
            first_kwargs.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
            if len(args) > 1:  # name positional extras (GPT-2 passes some) so callers can use **kwargs
                import inspect

                params = [p for p in inspect.signature(module.forward).parameters][1:]
                for name, value in zip(params, args[1:]):
                    first_kwargs[name] = value
            first_kwargs["_captured"] = True
        raise _StopForward

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for i in range(tokens.shape[0]):
            try:
                model(input_ids=tokens[i : i + 1].to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    if len(captured) != tokens.shape[0]:
        raise CompressionError(
            f"block {block_index} was not reached by the forward pass of {type(model).__name__}"
        )
    first_kwargs.pop("_captured", None)
    first_kwargs["use_cache"] = False
    for name in CACHE_KWARG_NAMES:  # blocks are replayed one at a time, without a cache
        first_kwargs.pop(name, None)
    return torch.cat(captured, 0), first_kwargs


@torch.no_grad()
def run_block(block: nn.Module, hidden_states: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """Run one block on ``hidden_states`` ``[b, seq, hidden]`` with kwargs from :func:`capture_block_inputs`."""
    return block_output(block(hidden_states, **kwargs))


@torch.no_grad()
def pre_block_modules(model: nn.Module, tokens: torch.Tensor | None = None) -> dict[str, nn.Module]:
    """Modules with parameters or buffers that run before block 0 (embeddings, positions, rotary).

    Found by running the model with forward hooks on every module outside the blocks and stopping at
    block 0, so it is exact for any architecture.
    """
    path, blocks = find_blocks(model)
    if tokens is None:
        tokens = torch.zeros(1, 4, dtype=torch.long)
    ran: list[str] = []
    handles = []
    for name, m in model.named_modules():
        if not name or name == path or name.startswith(path + "."):
            continue
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if own:
            handles.append(m.register_forward_hook(lambda mod, a, o, name=name: ran.append(name)))

    def stop(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise _StopForward

    handles.append(blocks[0].register_forward_pre_hook(stop, with_kwargs=True))
    try:
        model(input_ids=tokens, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return {n: model.get_submodule(n) for n in dict.fromkeys(ran)}


def iter_block_linears(model: nn.Module) -> Iterable[tuple[int, str, nn.Module]]:
    """``(block index, name within the block, layer)`` for every linear layer of every block."""
    _, blocks = find_blocks(model)
    for i, block in enumerate(blocks):
        for name, m in linear_layers(block).items():
            yield i, name, m
