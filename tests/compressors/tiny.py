"""Tiny random-initialised causal LMs of every supported architecture, built from transformers configs.

Odd widths on purpose (hidden 72 with a group size of 32 leaves a short last group) so the code paths
for group sizes that do not divide a layer's width are exercised. Nothing is downloaded.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

VOCAB = 320

ARCH_CONFIGS = {
    "llama": dict(
        model_type="llama",
        hidden_size=72,
        intermediate_size=136,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=18,
        tie_word_embeddings=True,
    ),
    "mistral": dict(
        model_type="mistral",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "gemma": dict(
        model_type="gemma",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
    ),
    # Gemma-3 text (Gemma-3-270M's layout): tied and scaled embeddings, q/k norms, sliding-window layers
    # around a global one; its tokenizer requires a BOS (see tiny_bos_tokenizer)
    "gemma3_text": dict(
        model_type="gemma3_text",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=True,
    ),
    "phi": dict(
        model_type="phi",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        partial_rotary_factor=0.5,
    ),
    "opt": dict(
        model_type="opt",
        hidden_size=64,
        ffn_dim=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=512,
    ),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=512),
    "gpt_neox": dict(
        model_type="gpt_neox",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        rotary_pct=0.5,
    ),
}

ARCHS = sorted(ARCH_CONFIGS)


def tiny_config(arch: str):
    from transformers import AutoConfig

    kw = dict(ARCH_CONFIGS[arch])
    model_type = kw.pop("model_type")
    kw.setdefault("vocab_size", VOCAB)
    kw.setdefault("max_position_embeddings", 512)
    kw.update(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return AutoConfig.for_model(model_type, **kw)


def tiny_model(arch: str = "llama", seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    model.eval()
    return model


_TOKENIZER = None


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with ~320 tokens trained on a slice of pydoc text (deterministic, < 1 s)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from pydoc_data.topics import topics

        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        text = [topics[k] for k in sorted(topics)[:40]]
        tok.train_from_iterator(text, trainer)
        _TOKENIZER = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
        )
    return _TOKENIZER


_BOS_TOKENIZER: PreTrainedTokenizerFast | None = None


def tiny_bos_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny BPE with a ``<bos>`` that the tokenizer puts before every text, as Gemma-3's and
    Llama-3's do (``add_bos_token=True`` / a template post-processor)."""
    global _BOS_TOKENIZER
    if _BOS_TOKENIZER is None:
        from tokenizers import Tokenizer, processors

        base = tiny_tokenizer()
        tok = Tokenizer.from_str(base.backend_tokenizer.to_str())
        tok.add_special_tokens(["<bos>"])
        bos_id = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
        )
        _BOS_TOKENIZER = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<bos>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
        )
    return _BOS_TOKENIZER


def rtn_codes(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = False):
    """Plain round-to-nearest codes for tests: ``(q, scale, zero)`` with a shorter last group."""
    out_f, in_f = w.shape
    gs = in_f if group_size == -1 else group_size
    n_groups = -(-in_f // gs)
    maxq = 2**bits - 1
    q = torch.empty(out_f, in_f, dtype=torch.int64)
    scale = torch.empty(out_f, n_groups)
    zero = torch.empty(out_f, n_groups)
    for g in range(n_groups):
        cols = slice(g * gs, min(in_f, (g + 1) * gs))
        wg = w[:, cols].float()
        if symmetric:
            amax = wg.abs().amax(1).clamp(min=1e-8)
            s = 2 * amax / maxq
            z = torch.full_like(s, (maxq + 1) / 2)
        else:
            lo, hi = wg.amin(1).clamp(max=0), wg.amax(1).clamp(min=0)
            s = ((hi - lo) / maxq).clamp(min=1e-8)
            z = torch.round(-lo / s)
        scale[:, g], zero[:, g] = s, z
        q[:, cols] = torch.clamp(torch.round(wg / s[:, None]) + z[:, None], 0, maxq).long()
    return q, scale, zero


def rtn_quantize_model(model, bits: int = 4, group_size: int = 32, symmetric: bool = False):
    """Replace every block linear layer by a packed QuantizedLinear (round to nearest). In place."""
    from compressors.layers import all_linear_layers, get_bias, get_weight, set_module
    from compressors.packed import QuantizedLinear

    for path, layer in all_linear_layers(model).items():
        w = get_weight(layer).detach()
        q, s, z = rtn_codes(w, bits, group_size, symmetric)
        set_module(
            model,
            path,
            QuantizedLinear.from_quantized(
                q, s, z, bits, group_size, bias=get_bias(layer), symmetric=symmetric
            ),
        )
    return model
