"""Tiny random models with enough layers for staged token pruning (the shared tiny models have 2)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tests.compressors.tiny import ARCH_CONFIGS, VOCAB

TOKEN_ARCHS = ["llama", "mistral", "qwen2"]


def deep_tiny(arch: str = "llama", layers: int = 6, attn: str = "sdpa", seed: int = 0):
    kw = dict(ARCH_CONFIGS[arch])
    model_type = kw.pop("model_type")
    kw.update(num_hidden_layers=layers, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    kw.setdefault("max_position_embeddings", 512)
    config = AutoConfig.for_model(model_type, **kw)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def prompt(n: int = 48, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (1, n), generator=g)
