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


@pytest.mark.parametrize(
    ("model_id", "published"),
    [
        ("llama-3.1-8b", 8.03e9),  # model card: 8.03B
        ("llama-3.2-1b", 1.24e9),  # model card: 1.23B/1.24B
    ],
)
def test_params_from_shape_match_published_counts(model_id: str, published: float) -> None:
    assert bundled_models()[model_id].params == pytest.approx(published, rel=0.006)


def test_tied_embeddings_are_counted_once() -> None:
    s = bundled_models()["llama-3.2-1b"]
    assert s.tie_word_embeddings and s.lm_head_params == 0
    untied = s.model_copy(update={"tie_word_embeddings": False})
    assert untied.params - s.params == s.embedding_params


def test_bundled_hub_id_resolves_without_network() -> None:
    assert load_shape("meta-llama/Llama-3.1-8B", allow_network=False).id == "llama-3.1-8b"
    assert load_shape("LLAMA-3.1-8B").id == "llama-3.1-8b"


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
    assert "pass a local config.json or one of the bundled models: llama-3.1-8b" in msg


def test_hub_fetch_fails_cleanly_when_the_network_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real hub client, with every socket connection refused: a ShapeError, no download."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
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
