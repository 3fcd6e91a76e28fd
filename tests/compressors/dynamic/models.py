"""Tiny random models with enough layers for staged token pruning (the shared tiny models have 2).

Built from configs (nothing is downloaded). Gemma-3 text gets a sliding window of 16 tokens on five
layers of six, a global layer in between, q/k norms, scaled and tied embeddings: the prompts of the
tests are longer than the window, so the window really masks.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tests.compressors.tiny import ARCH_CONFIGS, VOCAB

TOKEN_ARCHS = ["llama", "mistral", "qwen2", "gemma3_text"]

_EXTRA_CONFIGS = {
    "gemma3_text": dict(
        model_type="gemma3_text",
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        layer_types=[
            "sliding_attention",
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "sliding_attention",
            "sliding_attention",
        ],
    ),
}


def deep_tiny(arch: str = "llama", layers: int = 6, attn: str = "sdpa", seed: int = 0):
    kw = dict(_EXTRA_CONFIGS.get(arch) or ARCH_CONFIGS[arch])  # the deep layouts win over the 2-layer ones
    model_type = kw.pop("model_type")
    kw.update(num_hidden_layers=layers, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    kw.setdefault("max_position_embeddings", 512)
    if "layer_types" in kw:
        kw["layer_types"] = kw["layer_types"][:layers]
    config = AutoConfig.for_model(model_type, **kw)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def prompt(n: int = 48, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (1, n), generator=g)
