"""Model shapes: the bundled table loads, its parameter counts match the model cards, the KV cache of
the issue's example is right, configs and hub ids resolve, and failures say what to do."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from knowledge import shapes
from knowledge.loader import DataFileError
from knowledge.shapes import (
    ModelShape,
    ShapeError,
    bundled_models,
    load_shape,
    shape_from_config,
    shape_from_params,
)

GIB = 1 << 30


def test_llama_3_1_8b_kv_cache_at_128k_is_16_gib_per_sequence() -> None:
    # the check: 2 x 32 layers x 8 KV heads x 128 x 131072 tokens x 2 bytes
    shape = load_shape("llama-3.1-8b")
    assert shape.kv_cache_bytes(131072, 1) == 16 * GIB
    assert shape.kv_cache_bytes(131072, 4, kv_bits=8) == 32 * GIB


#: Parameter counts as the model cards print them (exact totals where the card or a framework's preset
#: gives one). The shape must reproduce each to the printed precision: "7.61B" means 7.605B-7.615B.
PUBLISHED_PARAMS = [
    ("llama-2-7b", "6.74B"),  # Llama 2 paper/model card: 7B = 6.74B
    ("llama-2-13b", "13.0B"),
    ("llama-2-70b", "69.0B"),
    ("llama-3.1-8b", "8.03B"),  # model card: 8.03B
    ("llama-3.1-70b", "70.6B"),
    ("llama-3.1-405b", "406B"),
    ("llama-3.2-1b", "1.24B"),
    ("llama-3.2-3b", "3.21B"),
    ("mistral-7b-v0.1", "7.24B"),  # 7.24B
    ("mixtral-8x7b", "46.7B"),  # 46.7B total, 12.9B active (Mixtral paper)
    ("qwen2.5-0.5b", "0.49B"),  # Qwen2.5 model cards: 0.49B, 1.54B, 3.09B, 7.61B, 14.7B, 72.7B
    ("qwen2.5-1.5b", "1.54B"),
    ("qwen2.5-3b", "3.09B"),
    ("qwen2.5-7b", "7.61B"),
    ("qwen2.5-14b", "14.7B"),
    ("qwen2.5-72b", "72.7B"),
    ("qwen3-30b-a3b", "30.5B"),  # 30.5B total, 3.3B activated
    ("gemma-2-9b", "9.24B"),
    ("gemma-2-27b", "27.2B"),
    ("phi-3-mini-4k", "3821079552"),  # keras-hub phi3_mini_4k_instruct_en preset: exact count
    ("phi-3-medium-4k", "14.0B"),
    ("smollm2-360m", "361821120"),
    ("tinyllama-1.1b", "1.10B"),
]


@pytest.mark.parametrize(("model_id", "published"), PUBLISHED_PARAMS)
def test_params_from_shape_match_published_counts(model_id: str, published: str) -> None:
    if published.endswith("B"):
        digits = published[:-1]
        decimals = len(digits.partition(".")[2])
        value, half_step = float(digits) * 1e9, 0.5 * 10.0**-decimals * 1e9
    else:
        value, half_step = float(published), 0.5
    # cards round 7.6156B to "7.62B" or truncate it to "7.61B": allow one step of the last digit
    assert abs(bundled_models()[model_id].params - value) <= 2 * half_step


def test_at_least_25_bundled_models_with_config_sources() -> None:
    models = bundled_models()
    assert len(models) >= 25
    for m in models.values():
        assert m.source.startswith("https://huggingface.co/") and m.source.endswith("config.json"), m.id


def test_mixture_of_experts_counts_active_parameters() -> None:
    mixtral = bundled_models()["mixtral-8x7b"]
    assert mixtral.active_params == pytest.approx(12.9e9, rel=0.005)
    assert mixtral.active_params < mixtral.params
    qwen = bundled_models()["qwen3-30b-a3b"]
    assert qwen.active_params == pytest.approx(3.3e9, rel=0.02)


def test_grouped_query_attention_shrinks_the_kv_cache() -> None:
    # Llama-2-7B (32 KV heads) holds 4x the cache of Llama-3.1-8B (8 KV heads) per token
    m = bundled_models()
    assert m["llama-2-7b"].kv_cache_bytes(4096, 1) == 4 * m["llama-3.1-8b"].kv_cache_bytes(4096, 1)


def test_tied_embeddings_are_counted_once() -> None:
    s = bundled_models()["llama-3.2-1b"]
    assert s.tie_word_embeddings and s.lm_head_params == 0
    untied = s.model_copy(update={"tie_word_embeddings": False})
    assert untied.params - s.params == s.embedding_params


def test_bundled_hub_id_resolves_without_network() -> None:
    assert load_shape("meta-llama/Llama-3.1-8B", allow_network=False).id == "llama-3.1-8b"
    assert load_shape("LLAMA-3.1-8B").id == "llama-3.1-8b"
    assert load_shape("Llama 3.1 8B").id == "llama-3.1-8b"


def test_missing_file_and_folder_without_config_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"^no such file: .*nothere/config.json"):
        load_shape(str(tmp_path / "nothere" / "config.json"))
    with pytest.raises(ShapeError, match="holds no config.json"):
        load_shape(str(tmp_path))
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ShapeError, match="is not valid JSON"):
        load_shape(str(bad))


def test_unknown_id_lists_close_matches() -> None:
    with pytest.raises(ShapeError, match=r"unknown model 'llama-3.1-7b' \(did you mean .*'llama-3.1-8b'"):
        load_shape("llama-3.1-7b")


def test_local_config_json_file_and_folder(tmp_path: Path) -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
    }
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    for spec in (str(folder), str(folder / "config.json")):
        shape = load_shape(spec, allow_network=False)
        assert shape.params == bundled_models()["llama-3.1-8b"].params
        assert shape.family == "llama-3" and shape.head_dim == 128


def test_hub_fetch_refused_without_network_says_what_to_pass() -> None:
    with pytest.raises(ShapeError) as exc:
        load_shape("someorg/some-model", allow_network=False)
    msg = str(exc.value)
    assert msg.startswith("cannot fetch config.json for someorg/some-model: no network")
    assert "pass a local config.json or one of the bundled models: llama-2-7b, " in msg


def test_hub_fetch_fails_cleanly_when_the_network_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real hub client, with every socket connection refused: a ShapeError, no download."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # no DNS lookup either
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ShapeError, match=r"^cannot fetch config.json for someorg/some-model: no network"):
        load_shape("someorg/some-model")


def test_hub_fetch_uses_only_config_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    asked: list[str] = []

    def fake_download(repo_id: str) -> str:
        asked.append(repo_id)
        return str(path)

    monkeypatch.setattr(shapes, "_hub_download", fake_download)
    shape = load_shape("someorg/tiny-qwen")
    assert asked == ["someorg/tiny-qwen"]
    assert shape.hub_id == "someorg/tiny-qwen" and shape.attention_bias and shape.family == "qwen2"


def test_shape_from_params_is_none() -> None:
    assert shape_from_params(7e9) is None


def test_bad_models_file_names_file_entry_and_field(tmp_path: Path) -> None:
    good = bundled_models()["llama-3.1-8b"].model_dump()
    bad = dict(good, id="broken", hidden_size="big")
    path = tmp_path / "models.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"models": [good, bad]}, sort_keys=False))
    with pytest.raises(DataFileError) as exc:
        bundled_models(path)
    (msg,) = [str(p) for p in exc.value.problems]
    assert "entry #2 (id 'broken'): hidden_size:" in msg and "(line " in msg


def test_model_shape_rejects_unknown_keys() -> None:
    data = bundled_models()["llama-3.1-8b"].model_dump()
    with pytest.raises(ValueError, match="extra"):
        ModelShape.model_validate({**data, "hiden_size": 1})


def test_config_with_latent_attention_is_refused() -> None:
    with pytest.raises(ShapeError, match="multi-head latent attention"):
        shape_from_config({"model_type": "deepseek_v3", "kv_lora_rank": 512})


# config.json dicts as the hub spells them (the older Falcon and Mixtral keys included): reading them
# must give the bundled shapes' parameter counts.
HF_CONFIGS = {
    "mixtral-8x7b": {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
    },
    "falcon-7b": {
        "model_type": "falcon",
        "hidden_size": 4544,
        "num_attention_heads": 71,
        "num_hidden_layers": 32,
        "multi_query": True,
        "new_decoder_architecture": False,
        "parallel_attn": True,
        "vocab_size": 65024,
    },
    "gemma-2-9b": {
        "model_type": "gemma2",
        "hidden_size": 3584,
        "intermediate_size": 14336,
        "num_hidden_layers": 42,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "vocab_size": 256000,
        "max_position_embeddings": 8192,
    },
    "qwen3-30b-a3b": {
        "model_type": "qwen3_moe",
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": False,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
    },
}


@pytest.mark.parametrize("model_id", sorted(HF_CONFIGS))
def test_config_json_spellings_give_the_bundled_shape(model_id: str) -> None:
    shape = shape_from_config(HF_CONFIGS[model_id], id=model_id)
    bundled = bundled_models()[model_id]
    assert shape.params == bundled.params
    assert shape.kv_cache_bytes(4096, 1) == bundled.kv_cache_bytes(4096, 1)
    assert shape.family == bundled.family


def test_config_missing_a_key_names_it() -> None:
    with pytest.raises(ShapeError, match="config.json lacks hidden_size"):
        shape_from_config({"model_type": "llama", "num_hidden_layers": 2})
