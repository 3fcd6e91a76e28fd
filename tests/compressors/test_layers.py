"""Generic discovery of decoder blocks and linear layers, and block-0 input capture, on 8 architectures."""

import pytest
import torch
from torch import nn

from compressors.base import CompressionError
from compressors.layers import (
    Conv1D,
    all_linear_layers,
    capture_block_inputs,
    find_blocks,
    get_weight,
    linear_layers,
    pre_block_modules,
    run_block,
    set_weight,
)
from tests.compressors.tiny import ARCHS, tiny_model

EXPECTED = {
    "llama": ("model.layers", 7),
    "mistral": ("model.layers", 7),
    "qwen2": ("model.layers", 7),
    "gemma": ("model.layers", 7),
    "gemma3_text": ("model.layers", 7),
    "phi": ("model.layers", 6),
    "opt": ("model.decoder.layers", 6),
    "gpt2": ("transformer.h", 4),
    "gpt_neox": ("gpt_neox.layers", 4),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_find_blocks_and_linear_layers(arch):
    model = tiny_model(arch)
    path, blocks = find_blocks(model)
    assert (path, len(linear_layers(blocks[0]))) == EXPECTED[arch]
    assert len(blocks) == 2
    assert len(all_linear_layers(model)) == 2 * EXPECTED[arch][1]


@pytest.mark.parametrize("arch", ARCHS)
def test_captured_block_inputs_reproduce_the_next_blocks_inputs(arch):
    model = tiny_model(arch)
    _, blocks = find_blocks(model)
    tokens = torch.randint(0, 300, (3, 12), generator=torch.Generator().manual_seed(0))
    hs0, kwargs = capture_block_inputs(model, tokens)
    assert hs0.shape == (3, 12, model.config.get_text_config().hidden_size)
    hs1, _ = capture_block_inputs(model, tokens, block_index=1)
    out = torch.cat([run_block(blocks[0], hs0[i : i + 1], kwargs) for i in range(3)])
    assert torch.allclose(out, hs1, atol=1e-5)
    assert kwargs["use_cache"] is False and "past_key_values" not in kwargs


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
def test_pre_block_modules_are_the_embeddings(arch):
    names = list(pre_block_modules(tiny_model(arch)))
    assert any("emb" in n or n.endswith(("wte", "wpe")) for n in names)
    assert not any("layers" in n or ".h." in n for n in names)


def test_conv1d_weight_is_read_and_written_as_out_by_in():
    model = tiny_model("gpt2")
    layer = model.transformer.h[0].mlp.c_fc
    assert isinstance(layer, Conv1D)
    w = get_weight(layer)
    assert w.shape == (layer.nf, layer.weight.shape[0])  # [out, in]
    x = torch.randn(2, layer.weight.shape[0])
    assert torch.allclose(layer(x), x @ w.t() + layer.bias, atol=1e-6)
    new = torch.randn_like(w)
    set_weight(layer, new)
    assert torch.equal(get_weight(layer), new)


def test_unsupported_model_names_what_was_looked_for():
    class NotAnLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.Sequential(nn.Linear(4, 4))

    with pytest.raises(CompressionError, match="model.layers.*transformer.h"):
        find_blocks(NotAnLM())
