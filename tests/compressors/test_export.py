"""compressed-tensors export: read back with the library, the weights are exactly ours."""

import json

import pytest
import torch
from safetensors.torch import load_file

from compressors.export import ExportUnsupported, export_compressed_tensors
from compressors.packed import SparseLinear, packed_modules
from tests.compressors.tiny import rtn_quantize_model, tiny_model, tiny_tokenizer


def _decompress_all(folder, model):
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    qc = QuantizationConfig.model_validate(
        json.loads((folder / "config.json").read_text())["quantization_config"]
    )
    scheme = qc.config_groups["group_0"]
    comp = BaseCompressor.get_value_from_registry(qc.format)
    tensors = load_file(str(folder / "model.safetensors"))
    out = {}
    for path in packed_modules(model):
        local = {k[len(path) + 1 :]: v for k, v in tensors.items() if k.startswith(path + ".")}
        out[path] = comp.decompress(local, scheme)["weight"]
    return qc, out


@pytest.mark.parametrize(
    "bits,group_size,sym", [(4, 32, False), (3, 32, False), (4, 16, True), (8, -1, False), (2, 32, True)]
)
def test_pack_quantized_export_decompresses_to_our_weights(bits, group_size, sym, tmp_path):
    model = rtn_quantize_model(tiny_model("mistral"), bits=bits, group_size=group_size, symmetric=sym)
    folder = export_compressed_tensors(model, None, tmp_path)
    qc, weights = _decompress_all(folder, model)
    assert qc.format == "pack-quantized" and qc.config_groups["group_0"].weights.num_bits == bits
    assert "lm_head" in qc.ignore
    for path, m in packed_modules(model).items():
        assert torch.equal(weights[path].float(), m.dequantize()), path


def test_symmetric_export_loads_in_transformers_with_identical_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    model = rtn_quantize_model(tiny_model("llama"), bits=4, group_size=8, symmetric=True)
    folder = export_compressed_tensors(model, tiny_tokenizer(), tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    tokens = torch.randint(0, 300, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, model(tokens).logits)


def test_int8_dynamic_export_is_w8a8_int_quantized(tmp_path):
    from compressors.base import RunContext, get_compressor

    model = tiny_model("qwen2")
    comp = get_compressor("cpu-inference")
    comp.compress(model, None, comp.config_cls(), RunContext())
    qc, weights = _decompress_all(export_compressed_tensors(model, None, tmp_path), model)
    assert qc.format == "int-quantized"
    assert qc.config_groups["group_0"].input_activations.dynamic is True
    for path, m in packed_modules(model).items():
        assert torch.equal(weights[path].float(), m.dequantize()), path


def test_group_size_not_dividing_the_width_is_refused_with_the_reason(tmp_path):
    model = rtn_quantize_model(tiny_model("llama"), bits=4, group_size=32)  # hidden 72
    with pytest.raises(ExportUnsupported, match="group_size 32 does not divide in_features 72"):
        export_compressed_tensors(model, None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_sparse_layers_are_refused(tmp_path):
    from compressors.layers import all_linear_layers, get_weight, set_module

    model = tiny_model("mistral")
    for path, layer in all_linear_layers(model).items():
        set_module(model, path, SparseLinear.from_dense(get_weight(layer).detach()))
    with pytest.raises(ExportUnsupported, match="sparse_linear"):
        export_compressed_tensors(model, None, tmp_path)


@pytest.mark.parametrize(
    "bits,group_size,sym",
    [(4, 8, True), (4, 8, False), (3, 8, False), (2, 8, True), (8, -1, False), (8, -1, True), (4, -1, False)],
)
def test_every_exportable_setting_loads_in_plain_transformers_within_1pct(bits, group_size, sym, tmp_path):
    """What the result page promises: `from_pretrained(folder)` serves the export with our perplexity."""
    from compressors.engines import transformers_perplexity
    from compressors.evaluate import perplexity

    model = rtn_quantize_model(tiny_model("llama"), bits=bits, group_size=group_size, symmetric=sym)
    with torch.no_grad():  # large weights: logits far from uniform, so a wrong tensor shows
        for p in model.parameters():
            if p.dim() == 2 and p.is_floating_point():
                p.mul_(10.0)
    folder = export_compressed_tensors(model, tiny_tokenizer(), tmp_path)
    windows = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = perplexity(model, windows)
    theirs = transformers_perplexity(folder, windows)
    assert abs(theirs - ours) / ours < 0.01, (ours, theirs)
