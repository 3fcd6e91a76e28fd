"""The only place where Shrinkwise touches transformers internals or API that moved, with a version check.

LazyLLM and AIM (:mod:`compressors.dynamic.tokens`) are built on public mechanisms: forward (pre-)hooks
on the decoder layers, an attention function registered in ``transformers.AttentionInterface`` (and its
mask companion in ``AttentionMaskInterface``) and selected with ``PreTrainedModel.set_attn_implementation``,
and a ``DynamicCache`` subclass that only overrides the public ``update`` / ``get_seq_length``. A few
details still have no public accessor; each one is a small function here, so that when transformers moves
only this file changes, and :func:`check_version` refuses versions nobody has tested instead of failing
deep inside a forward pass:

- the name of the attention implementation a config currently uses (``config._attn_implementation``);
- the keyword under which the model hands the cache to its decoder and layers: ``cache`` since 5.24,
  ``past_key_values`` before (5.24 still accepts it with a FutureWarning, 5.40 removes it);
- where a decoder layer receives its hidden states (first positional argument) and returns them (a
  tensor, or the first item of a tuple in older layers), and the layout of the ``(cos, sin)`` rotary
  position embeddings the decoder passes to each layer (``[batch, seq, head_dim]``);
- the inner decoder (``get_decoder()`` or ``.model``) and its ``layers`` list;
- for the streaming compressor (:mod:`compressors.streaming`), which builds the model on the meta device
  and materialises one module at a time: how transformers fills a module's non-persistent buffers (the
  rotary ``inv_freq``, Gemma's ``embed_scale``), which are computed in ``__init__`` and so are empty after
  ``Module.to_empty``. transformers' own loader does it with ``PreTrainedModel._init_weights(module)``
  (it also initialises the module's weights, which the caller then overwrites from the checkpoint);
- the key tensor a cache holds for one layer (used by tests and by nothing at inference time);
- for the evaluation harness's decode timing and the block capture of the layer-wise compressors: the
  cache keyword of a model's ``forward`` and the field its output returns the cache in (``cache`` since
  5.24, ``past_key_values`` before), and the names a layer's captured call may carry the cache under.

Tested with transformers 5.24.0 (the locked version) only. The range below starts at that version;
older 5.x releases pass the cache as ``past_key_values`` and this module would route it, but they were
not tested, so they are refused rather than trusted.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from compressors.base import CompressionError

SUPPORTED_TRANSFORMERS = ">=5.24,<6"
TESTED_TRANSFORMERS = ("5.24.0",)

_checked: bool = False


def check_version(installed: str | None = None, feature: str = "LazyLLM/AIM token pruning") -> None:
    """Raise :class:`CompressionError` unless the installed transformers is in :data:`SUPPORTED_TRANSFORMERS`.

    Called when a token plan is first installed, and when a streamed compression starts (not on import,
    so that listing methods never fails). ``feature`` names what needs the check, in the message.
    """
    global _checked
    if installed is None and _checked:
        return
    version = installed or transformers.__version__
    if Version(version).release and Version(Version(version).base_version) in SpecifierSet(
        SUPPORTED_TRANSFORMERS
    ):
        if installed is None:
            _checked = True
        return
    raise CompressionError(
        f"{feature} supports transformers {SUPPORTED_TRANSFORMERS} (tested: "
        f"{', '.join(TESTED_TRANSFORMERS)}), but {version} is installed; install a supported version "
        "(the project's lock pins one) or update compressors/hf_compat.py after testing"
    )


def attn_implementation(config: Any) -> str | None:
    """The attention implementation a config is set to ("sdpa", "eager", a registered name, ...)."""
    return getattr(config, "_attn_implementation", None)


def decoder(model: Any) -> Any:
    """The inner decoder module (embeddings, layers, final norm) of a causal LM."""
    getter = getattr(model, "get_decoder", None)
    inner = getter() if callable(getter) else None
    return inner if inner is not None else getattr(model, "model", None)


def decoder_layers(inner: Any) -> list[Any]:
    """The decoder layers in order (only the first ``num_hidden_layers`` run, as the model's own loop does)."""
    layers = getattr(inner, "layers", None)
    if layers is None:
        return []
    return list(layers[: inner.config.num_hidden_layers])


def cache_kwarg(module: Any, kwargs: dict[str, Any]) -> str:
    """Keyword under which ``module`` (a decoder or a decoder layer) receives the cache."""
    for name in ("cache", "past_key_values"):
        if name in kwargs:
            return name
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def get_hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """A decoder layer's input hidden states from its call arguments."""
    hidden: torch.Tensor = args[0] if args else kwargs["hidden_states"]
    return hidden


def set_hidden(
    args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call arguments with the hidden states replaced."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def output_hidden(output: Any) -> torch.Tensor:
    """A decoder layer's output hidden states (5.x layers return a tensor; older ones a tuple)."""
    hidden: torch.Tensor = output[0] if isinstance(output, tuple) else output
    return hidden


def replace_output_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def select_positions(position_embeddings: Any, index: torch.Tensor) -> Any:
    """The rotary ``(cos, sin)`` embeddings of the rows ``index`` of the sequence they were computed for."""
    if position_embeddings is None:
        return None
    return tuple(t[:, index] for t in position_embeddings)


def input_length(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int]:
    """``(batch, tokens)`` of a decoder call from ``input_ids`` or ``inputs_embeds``."""
    x = kwargs.get("input_ids")
    if x is None and args:
        x = args[0]
    if x is None:
        x = kwargs["inputs_embeds"]
    return int(x.shape[0]), int(x.shape[1])


def layer_keys(cache: Any, layer: int) -> torch.Tensor:
    """The key tensor ``[batch, kv_heads, tokens, head_dim]`` a cache holds for ``layer``."""
    keys: torch.Tensor = cache.layers[layer].keys
    return keys


# Names a decoder layer's captured keyword arguments may use for the KV cache, across supported releases.
CACHE_KWARG_NAMES = ("cache", "past_key_values", "past_key_value", "layer_past")


def output_cache(output: Any) -> Any:
    """The KV cache a model's forward returned (``output.cache`` since 5.24, ``past_key_values`` before).

    Read through the output's declared fields, so the deprecated alias (which warns) is never touched.
    """
    names = {f.name for f in dataclasses.fields(output)} if dataclasses.is_dataclass(output) else set()
    for name in ("cache", "past_key_values"):
        if name in names:
            return getattr(output, name)
    raise CompressionError(
        f"{type(output).__name__} carries no KV cache field; supported transformers: {SUPPORTED_TRANSFORMERS}"
    )


def init_module_buffers(model: Any, module: torch.nn.Module) -> None:
    """Compute ``module``'s non-persistent buffers after ``module.to_empty(...)``, as transformers' loader
    does for a model built on the meta device: ``model._init_weights(module)`` (version-checked). It also
    draws random weights for the module, so call it *before* copying the checkpoint's weights in."""
    check_version(feature="streaming compression")
    init = getattr(model, "_init_weights", None)
    if not callable(init):
        raise CompressionError(
            f"{type(model).__name__} has no _init_weights; supported transformers: {SUPPORTED_TRANSFORMERS}"
        )
    with torch.no_grad():
        init(module)
