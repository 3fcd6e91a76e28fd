"""Model shapes: the config.json numbers that decide how big a model is in memory, and where they come from.

A parameter count alone cannot say how much of a model a quantizer touches: embeddings and the output
layer usually stay in 16 bits, and for a 1B model they are a fifth of the weights (Llama-3.2-1B:
263M of 1.24B). Nor can it say what the KV cache costs, which depends on the number of layers, of
key/value heads and their width, not on the parameter count (grouped-query attention makes
Llama-3.1-8B's cache 4x smaller than Llama-2-7B's per token). A :class:`ModelShape` holds exactly the
numbers of a Hugging Face ``config.json`` that these two questions need, and derives the parameter
count of each tensor class from them; :mod:`engine.memory` turns those into bytes.

Where a shape comes from (:func:`load_shape`):

- a bundled id: ``knowledge/data/models.yaml``, popular open models with their published config.json
  numbers and the url of that file;
- a local ``config.json`` (or a folder holding one), read by :func:`shape_from_config`;
- a hub id ``org/name``: its config.json is fetched with ``huggingface_hub.hf_hub_download`` (only that
  file; no code is run, so ``trust_remote_code`` never arises). Without a network this fails with a
  message that says what to pass instead, never with a traceback.

What is counted. Per decoder layer: the attention projections q, k, v, o (``head_dim`` may differ from
``hidden_size / num_attention_heads``, as in Gemma), the MLP (3 matrices when gated, as in SwiGLU/GeGLU,
2 otherwise; ``num_experts`` copies for a mixture of experts), and two norm vectors. Once: the token
embedding, the output layer (none of its own when tied to the embedding) and the final norm. Biases
are counted on q, k, v when ``attention_bias`` is set (Qwen2's layout). Norm layouts that differ
(Gemma 2's four norms per layer, LayerNorm's bias) change the total by under 0.01% and are not
modelled. A bare ``model_params`` has no shape: :func:`shape_from_params` returns None and the memory
estimate falls back to parameters x bits (documented in :mod:`engine.memory`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from knowledge.entries import close_matches, load_entries

log = logging.getLogger(__name__)

#: The bundled table of model shapes.
MODELS_FILE = Path(__file__).resolve().parent / "data" / "models.yaml"

_ID = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ShapeError(ValueError):
    """A model shape could not be found, read or fetched; the message says what to pass instead."""


class ModelShape(BaseModel):
    """The numbers of one model's config.json that decide its memory, with where they come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Short id, e.g. 'llama-3.1-8b'.")
    name: str = Field(description="Display name, e.g. 'Llama 3.1 8B'.")
    hub_id: str | None = Field(default=None, description="Hugging Face repo, e.g. 'meta-llama/Llama-3.1-8B'.")
    family: str = Field(description="Model family for evidence matching, e.g. 'llama-3', 'qwen2', 'mistral'.")
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0, description="MLP width (of one expert for a mixture of experts).")
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(
        gt=0, description="Fewer than the attention heads: grouped-query attention."
    )
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = Field(description="The output layer reuses the embedding matrix.")
    mlp_gated: bool = Field(default=True, description="3 MLP matrices (gate/up/down, SwiGLU) instead of 2.")
    attention_bias: bool = Field(default=False, description="q/k/v projections carry biases (Qwen2).")
    num_experts: int = Field(default=0, ge=0, description="Routed experts per layer; 0 for a dense model.")
    num_experts_per_tok: int = Field(default=0, ge=0)
    moe_intermediate_size: int | None = Field(
        default=None, gt=0, description="Width of one expert's MLP when it differs from intermediate_size."
    )
    max_position_embeddings: int = Field(gt=0)
    source: str = Field(min_length=1, description="Url (or path) of the config.json the numbers come from.")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"id {v!r} must be lower-case words joined by '-' or '.' (e.g. 'llama-3.1-8b')")
        return v

    @field_validator("hub_id")
    @classmethod
    def _hub_id_shape(cls, v: str | None) -> str | None:
        if v is not None and not _HUB_ID.match(v):
            raise ValueError(f"hub_id {v!r} must look like 'org/name' (e.g. 'meta-llama/Llama-3.1-8B')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelShape:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if (self.num_experts == 0) != (self.num_experts_per_tok == 0):
            raise ValueError("num_experts and num_experts_per_tok are both 0 (dense) or both set (MoE)")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(
                f"num_experts_per_tok {self.num_experts_per_tok} exceeds num_experts {self.num_experts}"
            )
        if self.moe_intermediate_size is not None and self.num_experts == 0:
            raise ValueError("moe_intermediate_size is set on a dense model (num_experts is 0)")
        return self

    # --- parameters per tensor class ---------------------------------------------------------------

    @property
    def attention_params_per_layer(self) -> float:
        """q and o are heads x head_dim wide, k and v kv_heads x head_dim."""
        q_width = self.num_attention_heads * self.head_dim
        kv_width = self.num_key_value_heads * self.head_dim
        return float(self.hidden_size * (2 * q_width + 2 * kv_width))

    @property
    def expert_intermediate_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def mlp_params_per_expert(self) -> float:
        width = self.expert_intermediate_size if self.num_experts else self.intermediate_size
        return float((3 if self.mlp_gated else 2) * self.hidden_size * width)

    @property
    def mlp_params_per_layer(self) -> float:
        return self.mlp_params_per_expert * max(self.num_experts, 1)

    @property
    def linear_params(self) -> float:
        """Decoder-layer linear weights: what weight quantizers quantize (routers excluded)."""
        return self.num_hidden_layers * (self.attention_params_per_layer + self.mlp_params_per_layer)

    def linear_matrices(self) -> list[tuple[str, int, int, int]]:
        """Every decoder linear weight as (name, in_features, out_features, count in the model).

        Formats whose overhead is per matrix or per row (a GPTQ ``g_idx`` per input feature, an AQLM
        codebook per matrix, a scale per output channel) need the matrices, not only their total:
        ``sum(in x out x count)`` equals :attr:`linear_params`.
        """
        q_width = self.num_attention_heads * self.head_dim
        kv_width = self.num_key_value_heads * self.head_dim
        width = self.expert_intermediate_size if self.num_experts else self.intermediate_size
        n, experts = self.num_hidden_layers, max(self.num_experts, 1)
        mats = [
            ("q_proj", self.hidden_size, q_width, n),
            ("k_proj", self.hidden_size, kv_width, n),
            ("v_proj", self.hidden_size, kv_width, n),
            ("o_proj", q_width, self.hidden_size, n),
            ("up_proj", self.hidden_size, width, n * experts),
            ("down_proj", width, self.hidden_size, n * experts),
        ]
        if self.mlp_gated:
            mats.insert(4, ("gate_proj", self.hidden_size, width, n * experts))
        return mats

    @property
    def embedding_params(self) -> float:
        return float(self.vocab_size * self.hidden_size)

    @property
    def lm_head_params(self) -> float:
        """The output layer's own weights: 0 when it is tied to the embedding (stored once)."""
        return 0.0 if self.tie_word_embeddings else float(self.vocab_size * self.hidden_size)

    @property
    def other_params(self) -> float:
        """Norms (two per layer and a final one), q/k/v biases, MoE routers: kept in 16 bits by quantizers."""
        norms = (2 * self.num_hidden_layers + 1) * self.hidden_size
        biases = (
            self.num_hidden_layers * (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
            if self.attention_bias
            else 0
        )
        routers = self.num_hidden_layers * self.hidden_size * self.num_experts
        return float(norms + biases + routers)

    @property
    def params(self) -> float:
        """Total parameter count, as a model card states it (tied weights counted once)."""
        return self.linear_params + self.embedding_params + self.lm_head_params + self.other_params

    @property
    def active_params(self) -> float:
        """Parameters used per token: a mixture of experts runs ``num_experts_per_tok`` of its experts."""
        if not self.num_experts:
            return self.params
        idle = (
            self.num_hidden_layers
            * self.mlp_params_per_expert
            * (self.num_experts - self.num_experts_per_tok)
        )
        return self.params - idle

    def kv_cache_bytes(self, context: int, batch: int, kv_bits: float = 16) -> float:
        """Bytes of keys and values for ``batch`` sequences of ``context`` tokens each.

        2 (K and V) x layers x kv_heads x head_dim x tokens x bytes per value: Llama-3.1-8B holds
        128 KiB per token in 16 bits, 16 GiB at 131072 tokens. Sliding-window layers (Gemma 2,
        Mistral v0.1) keep less; this is the full-attention figure, an upper bound for them.
        """
        if context < 0 or batch < 0 or kv_bits <= 0:
            raise ValueError(f"context {context}, batch {batch} must be >= 0 and kv_bits {kv_bits} > 0")
        per_token = 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim
        return per_token * context * batch * kv_bits / 8.0


# --- the bundled table ---------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _load_models(path: Path) -> tuple[ModelShape, ...]:
    return tuple(load_entries(path, "models", ModelShape))


def bundled_models(path: Path | str = MODELS_FILE) -> dict[str, ModelShape]:
    """The bundled model shapes by id, in file order (``knowledge/data/models.yaml``, validated on load)."""
    return {m.id: m for m in _load_models(Path(path).resolve())}


def _find_bundled(spec: str, models: Mapping[str, ModelShape]) -> ModelShape | None:
    """A bundled shape named by its id, its display name or its hub id, in any case."""
    if spec in models:
        return models[spec]
    low = spec.lower()
    for m in models.values():
        if low in (m.id, m.name.lower()) or (m.hub_id is not None and m.hub_id.lower() == low):
            return m
    return None


# --- config.json -> shape ------------------------------------------------------------------------------

#: ``config.json`` omits a key when it has the class default; the defaults that differ by model type.
#: transformers' PretrainedConfig ties embeddings unless the model's config class says otherwise.
_UNTIED_BY_DEFAULT = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "olmo2", "granite"}
)
_BIAS_BY_DEFAULT = frozenset({"qwen2", "qwen2_moe"})  # Qwen2 has q/k/v biases and no config key for them
_UNGATED = frozenset({"falcon", "gpt2", "gpt_neox", "opt", "phi", "bloom", "gpt_bigcode", "starcoder2"})
_DEFAULT_MAX_POSITIONS = {"falcon": 2048, "bloom": 2048}
_FAMILY_BY_TYPE = {
    "mistral": "mistral",
    "mixtral": "mixtral",
    "qwen2": "qwen2",
    "qwen2_moe": "qwen2",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma-2",
    "gemma3_text": "gemma-3",
    "phi3": "phi-3",
    "phi": "phi-2",
    "falcon": "falcon",
    "opt": "opt",
    "bloom": "bloom",
    "gpt_neox": "pythia",
}
#: Keys of architectures whose weights this shape cannot describe (multi-head latent attention, shared
#: experts): reading them as a plain shape would give a wrong size, so they are refused.
_UNSUPPORTED_KEYS = {
    "kv_lora_rank": "multi-head latent attention (DeepSeek-V2/V3)",
    "shared_expert_intermediate_size": "shared experts (Qwen-MoE)",
    "n_shared_experts": "shared experts (DeepSeek-MoE)",
}


def _first(config: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if config.get(k) is not None:
            return config[k]
    return None


def _family_of(model_type: str, vocab_size: int) -> str:
    if model_type == "llama":
        # Llama 2 and its architecture copies use a 32000-token vocabulary, Llama 3 128256.
        return {32000: "llama-2", 128256: "llama-3"}.get(vocab_size, "llama")
    return _FAMILY_BY_TYPE.get(model_type, model_type or "unknown")


def shape_from_config(
    config: Mapping[str, Any],
    id: str = "custom",
    name: str = "",
    *,
    hub_id: str | None = None,
    source: str = "config.json",
    family: str | None = None,
) -> ModelShape:
    """The shape described by a Hugging Face ``config.json`` (as a dict).

    Reads the standard keys and the older spellings of GPT-2/Falcon-era configs (``n_embd``,
    ``n_layer``, ``multi_query``); a key a config omits takes its class default for that model type.
    Raises :class:`ShapeError` naming the missing key, or the architecture feature that a plain shape
    cannot describe.
    """
    model_type = str(config.get("model_type", ""))
    for key, what in _UNSUPPORTED_KEYS.items():
        if config.get(key):
            raise ShapeError(
                f"{source}: {what} ({key!r}) is not modelled by a plain shape; "
                "describe the model by hand in knowledge/data/models.yaml or pass --model-params"
            )
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    vocab = _first(config, "vocab_size")
    missing = [
        k
        for k, v in (
            ("hidden_size", hidden),
            ("num_hidden_layers", layers),
            ("num_attention_heads", heads),
            ("vocab_size", vocab),
        )
        if v is None
    ]
    if missing:
        raise ShapeError(f"{source}: config.json lacks {', '.join(missing)}; is it a decoder LLM's config?")
    hidden, layers, heads, vocab = int(hidden), int(layers), int(heads), int(vocab)
    if config.get("multi_query"):  # Falcon-7B: one shared key/value head
        kv_heads = 1
    else:
        kv_heads = int(_first(config, "num_key_value_heads", "num_kv_heads") or heads)
    intermediate = _first(config, "intermediate_size", "ffn_hidden_size", "ffn_dim", "n_inner")
    intermediate = int(intermediate) if intermediate is not None else 4 * hidden
    experts = int(_first(config, "num_local_experts", "num_experts", "n_routed_experts") or 0)
    max_pos = _first(config, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
    if max_pos is None:
        max_pos = _DEFAULT_MAX_POSITIONS.get(model_type)
    if max_pos is None:
        raise ShapeError(f"{source}: config.json lacks max_position_embeddings")
    tie = config.get("tie_word_embeddings")
    data: dict[str, Any] = {
        "id": id,
        "name": name or id,
        "hub_id": hub_id,
        "family": family or _family_of(model_type, vocab),
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(config.get("head_dim") or hidden // heads),
        "vocab_size": vocab,
        "tie_word_embeddings": bool(tie) if tie is not None else model_type not in _UNTIED_BY_DEFAULT,
        "mlp_gated": model_type not in _UNGATED,
        "attention_bias": bool(config.get("attention_bias", model_type in _BIAS_BY_DEFAULT)),
        "num_experts": experts,
        "num_experts_per_tok": int(config.get("num_experts_per_tok") or 0) if experts else 0,
        "moe_intermediate_size": config.get("moe_intermediate_size") if experts else None,
        "max_position_embeddings": int(max_pos),
        "source": source,
    }
    try:
        return ModelShape.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ShapeError(f"{source}: {where}: {first.get('msg', 'invalid value')}") from None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ShapeError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ShapeError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ShapeError(f"{path} must hold a JSON object (a model's config.json)")
    return data


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "custom"


def _hub_download(repo_id: str) -> str:
    """Path of the repo's config.json in the local hub cache, fetched when not there. Only this file is
    downloaded, and nothing in it is executed."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename="config.json")


def _hub_failure(exc: Exception) -> str:
    """Why a hub fetch failed, in words (the class names are huggingface_hub's, read by name so that
    this module does not import huggingface_hub until a fetch is attempted)."""
    kinds = {t.__name__ for t in type(exc).__mro__}
    # LocalEntryNotFoundError (not in the cache, and the hub could not be reached) subclasses
    # EntryNotFoundError, so it is tested first
    if kinds & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return "no network"
    if "GatedRepoError" in kinds:
        return "the repository is gated: accept its license on the hub and log in (`hf auth login`)"
    if "RepositoryNotFoundError" in kinds:
        return "no such repository on the hub (or it is private and you are not logged in)"
    if kinds & {"EntryNotFoundError", "RemoteEntryNotFoundError"}:
        return "the repository has no config.json"
    if isinstance(exc, OSError):
        return "no network"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _examples(models: Mapping[str, ModelShape], n: int = 6) -> str:
    ids = list(models)
    return ", ".join(ids[:n]) + (
        f" ... ({len(ids)} bundled; see knowledge/data/models.yaml)" if len(ids) > n else ""
    )


def load_shape(spec: str, *, allow_network: bool = True) -> ModelShape:
    """The shape named by ``spec``: a bundled id (or a bundled model's hub id), a path to a config.json
    or a folder holding one, or a hub id ``org/name`` whose config.json is fetched.

    Raises :class:`ShapeError`: an unknown id lists the close matches; a hub id that cannot be fetched
    (``allow_network=False``, no network, gated, missing) says why and what to pass instead.
    """
    spec = spec.strip()
    models = bundled_models()
    found = _find_bundled(spec, models)
    if found is not None:
        return found
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ShapeError(f"{path} holds no config.json; pass the config.json of the model")
        path = path / "config.json"
    if path.is_file():
        cfg = _read_config(path)
        label = path.parent.name if path.name == "config.json" else path.stem
        hub = cfg.get("_name_or_path")
        return shape_from_config(
            cfg,
            id=_slug(label),
            name=label,
            hub_id=hub if isinstance(hub, str) and _HUB_ID.match(hub) else None,
            source=str(path),
        )
    if spec.endswith(".json") or spec.startswith((".", "/", "~")):
        raise ShapeError(f"no such file: {spec}")
    if _HUB_ID.match(spec):
        if not allow_network:
            reason = "no network (network access is off)"
        else:
            try:
                return shape_from_config(
                    _read_config(Path(_hub_download(spec))),
                    id=_slug(spec.split("/", 1)[1]),
                    name=spec.split("/", 1)[1],
                    hub_id=spec,
                    source=f"https://huggingface.co/{spec}/blob/main/config.json",
                )
            except ShapeError:
                raise
            except Exception as exc:  # whatever the hub client raises becomes one sentence
                log.debug("hub fetch of %s failed", spec, exc_info=True)
                reason = _hub_failure(exc)
        raise ShapeError(
            f"cannot fetch config.json for {spec}: {reason}; pass a local config.json "
            f"or one of the bundled models: {_examples(models)}"
        )
    raise ShapeError(
        f"unknown model {spec!r}{close_matches(spec, list(models))}; pass a bundled id "
        f"({_examples(models)}), a path to a config.json, or a hub id 'org/name'"
    )


def shape_from_params(params: float) -> ModelShape | None:
    """None, always: a bare parameter count does not determine a shape.

    Borrowing the nearest bundled model's shape would invent an embedding share and a KV-cache size
    the user's model may not have (a 7B model can have a 32k or a 152k vocabulary, 8 or 32 KV heads).
    Callers fall back to the params-only estimate of :func:`engine.memory.estimate_memory`, which says
    that the KV cache is unknown.
    """
    del params
    return None
