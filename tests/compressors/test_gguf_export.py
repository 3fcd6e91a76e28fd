"""GGUF export: the blocks hold exactly our weights, and llama.cpp itself loads, generates and scores them.

The engine tests run llama.cpp through llama-cpp-python (installed from the lock) on the same token
windows Shrinkwise scores, so "within 2%" compares two implementations of the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from compressors.base import RunContext, get_compressor
from compressors.engines import llama_cpp_generate, llama_cpp_perplexity
from compressors.evaluate import perplexity
from compressors.gguf_export import GGUFUnsupported, _qk_row_order, export_gguf
from compressors.packed import QuantizedLinear, packed_modules
from tests.compressors.tiny import rtn_quantize_model, tiny_model, tiny_tokenizer

_GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def gguf_llama(seed: int = 0, model_type: str = "llama"):
    """A tiny model whose widths are multiples of llama.cpp's 32-column blocks."""
    cfg = AutoConfig.for_model(
        model_type,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
        tie_word_embeddings=True,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    # Large weights make the logits far from uniform, so a wrong layout changes the perplexity: with
    # the default init (std 0.02) every model scores ~vocab size and a broken Q/K permutation would
    # still "agree" with Shrinkwise (measured: 318.47 vs 318.43); at 0.2 it is 20% off.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(std=0.2)
    return model


def _read(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


def _dequantized_from_file(tensors, path: str, m: QuantizedLinear, n_head: int, n_kv: int):
    import gguf

    block, proj = path.split(".")[2], path.split(".")[-1]
    t = tensors[f"blk.{block}.{_GGUF_NAMES[proj]}.weight"]
    got = gguf.quants.dequantize(np.array(t.data), t.tensor_type).reshape(m.out_features, m.in_features)
    ref = m.dequantize().numpy()
    if proj == "q_proj":
        ref = ref[_qk_row_order(m.out_features, n_head)]
    if proj == "k_proj":
        ref = ref[_qk_row_order(m.out_features, n_kv)]
    return t.tensor_type.name, got, ref


@pytest.mark.parametrize(
    "bits,group_size,sym,qtype,exact",
    [
        (4, 32, True, "Q4_0", True),
        (4, 64, False, "Q4_1", True),
        (4, -1, True, "Q4_0", True),
        (8, 32, True, "Q8_0", True),
        (4, 16, True, "Q4_0", False),  # blocks of 32 straddle two groups: re-quantized
        (8, 32, False, "Q8_0", False),  # Q8_0 has no zero-point: re-quantized
    ],
)
def test_blocks_hold_our_weights(tmp_path, bits, group_size, sym, qtype, exact):
    model = rtn_quantize_model(gguf_llama(), bits=bits, group_size=group_size, symmetric=sym)
    result = export_gguf(model, tiny_tokenizer(), tmp_path / "m.gguf")
    assert result.qtype == qtype
    assert (result.exact_layers, result.requantized_layers) == ((14, 0) if exact else (0, 14))
    _, tensors = _read(result.path)
    for path, m in packed_modules(model).items():
        assert isinstance(m, QuantizedLinear)
        name, got, ref = _dequantized_from_file(tensors, path, m, 4, 2)
        assert name == qtype
        if exact and qtype != "Q4_1":
            assert np.array_equal(got, ref), path  # bit for bit: same codes, same fp16 scales
        elif exact:  # Q4_1: only each block's offset -zero*scale is rounded to fp16
            assert np.abs(got - ref).max() <= 2e-3 * np.abs(ref).max(), path
        else:
            assert np.abs(got - ref).max() <= 0.15 * np.abs(ref).max(), path
    if not exact:
        assert "re-quantized" in result.note


def test_act_order_with_static_groups_is_exact_and_without_is_requantized(tmp_path):
    tok = tiny_tokenizer()
    calib = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(1))
    gptq = get_compressor("gptq")
    results = {}
    for static in (True, False):
        model = gguf_llama()
        cfg = gptq.config_cls.from_dict(
            {"bits": 4, "group_size": 32, "act_order": True, "static_groups": static}
        )
        out = gptq.compress(model, tok, cfg, RunContext(calibration=calib))
        results[static] = export_gguf(out, tok, tmp_path / f"m{static}.gguf")
    assert results[True].requantized_layers == 0
    assert results[False].exact_layers == 0 and "act-order" in results[False].note


def test_refusals_name_the_reason(tmp_path):
    with pytest.raises(GGUFUnsupported, match="3-bit"):
        export_gguf(rtn_quantize_model(gguf_llama(), bits=3, group_size=32), tiny_tokenizer(), tmp_path / "a")
    with pytest.raises(GGUFUnsupported, match="no compressed layers"):
        export_gguf(gguf_llama(), tiny_tokenizer(), tmp_path / "b")
    with pytest.raises(GGUFUnsupported, match="gemma3_text"):
        export_gguf(rtn_quantize_model(tiny_model("gemma3_text"), bits=4), tiny_tokenizer(), tmp_path / "c")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_rope_theta_comes_from_rope_parameters(tmp_path):
    model = rtn_quantize_model(gguf_llama(), bits=4, group_size=32, symmetric=True)
    model.config.rope_parameters = {"rope_theta": 123456.0, "rope_type": "default"}
    reader, _ = _read(export_gguf(model, tiny_tokenizer(), tmp_path / "m.gguf").path)
    assert reader.fields["llama.rope.freq_base"].contents() == pytest.approx(123456.0)


# --- verified by llama.cpp itself ------------------------------------------------------------------


def _windows(n: int = 3, seq: int = 64) -> torch.Tensor:
    return torch.randint(0, 320, (n, seq), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_llama_cpp_loads_generates_and_agrees_on_perplexity(tmp_path, method):
    tok = tiny_tokenizer()
    comp = get_compressor(method)
    model = gguf_llama(seed=3)
    calib = _windows(4, 32)
    cfg = comp.config_cls.from_dict({"bits": 4, "group_size": 32})
    out = comp.compress(model, tok, cfg, RunContext(calibration=calib))
    path = export_gguf(out, tok, tmp_path / "m.gguf").path
    windows = _windows()
    with torch.no_grad():
        ours = perplexity(out, windows)
    theirs = llama_cpp_perplexity(path, windows)
    assert abs(theirs - ours) / ours < 0.02, (ours, theirs)
    text = llama_cpp_generate(path, "The", max_tokens=8)
    assert isinstance(text, str) and text  # the converted BPE tokenizer round-trips through llama.cpp


def test_demo_model_rtn_gguf_matches_shrinkwise_in_llama_cpp(tmp_path):
    """The real 135M model: llama.cpp's perplexity of our Q4_1 file is Shrinkwise's within 2%."""
    from compressors.demo import demo_gguf_path
    from compressors.models import load_model
    from compressors.text import eval_windows, resolve_texts

    model, tok = load_model("demo")
    model = rtn_quantize_model(model, bits=4, group_size=64)
    result = export_gguf(model, tok, tmp_path / "demo.gguf", source_gguf=demo_gguf_path())
    assert result.qtype == "Q4_1" and result.requantized_layers == 0
    windows = eval_windows(tok, resolve_texts(None, None).evaluation, 2, 256)
    with torch.no_grad():
        ours = perplexity(model, windows)
    theirs = llama_cpp_perplexity(result.path, windows)
    assert abs(theirs - ours) / ours < 0.02, (ours, theirs)
    assert "Paris" in llama_cpp_generate(result.path, "The capital of France is", max_tokens=6)


# --- GGUF k-quants made by llama.cpp's own quantizer -----------------------------------------------


@pytest.mark.parametrize("imatrix", [True, False])
def test_kquant_keeps_llama_cpp_blocks_and_agrees_with_llama_cpp(tmp_path, imatrix):
    from compressors.packed_gguf import GGUFBlockLinear
    from compressors.storage import load_packed, save_packed

    tok = tiny_tokenizer()
    comp = get_compressor("gguf-kquant")
    model = gguf_llama(seed=5)
    cfg = comp.config_cls.from_dict({"type": "Q4_K_M", "imatrix": imatrix})
    calib = _windows(4, 32) if imatrix else None
    out = comp.compress(model, tok, cfg, RunContext(calibration=calib))
    layers = packed_modules(out)
    assert layers and all(isinstance(m, GGUFBlockLinear) for m in layers.values())
    # 64/128-wide rows are not multiples of 256: llama.cpp falls back from Q4_K to its 32-blocks
    assert {m.ggml_type for m in layers.values()} <= {"Q4_K", "Q6_K", "Q5_0", "Q5_1", "Q8_0", "Q4_0", "Q4_1"}
    result = export_gguf(out, tok, tmp_path / "k.gguf")
    assert result.requantized_layers == 0
    windows = _windows()
    with torch.no_grad():
        ours = perplexity(out, windows)
    assert abs(llama_cpp_perplexity(result.path, windows) - ours) / ours < 0.02
    # the packed checkpoint stores the same bytes and loads back to the same forward
    save_packed(out, tok, tmp_path / "ckpt", method="gguf-kquant", config=cfg.to_dict())
    back = load_packed(tmp_path / "ckpt")
    with torch.no_grad():
        assert perplexity(back, windows) == pytest.approx(ours, rel=1e-6)


def test_kquant_imatrix_needs_calibration():
    from compressors.base import ConfigError

    comp = get_compressor("gguf-kquant")
    cfg = comp.config_cls.from_dict({"type": "Q4_K_M", "imatrix": True})
    assert comp.uses_calibration(cfg) and not comp.uses_calibration(
        comp.config_cls.from_dict({"imatrix": False})
    )
    with pytest.raises(ConfigError, match="calibration"):
        comp.compress(gguf_llama(), tiny_tokenizer(), cfg, RunContext(calibration=None))
