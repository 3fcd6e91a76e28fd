"""Packed layers on the low-bit kernels: same numbers as the dequantized weight, no float copy kept, and
a clean float fallback wherever no kernel applies."""

import pytest
import torch

from compressors import kernels
from compressors.evaluate import model_memory_bytes
from compressors.packed import DEQUANT_CACHE_ENV, QuantizedLinear, packed_modules
from compressors.storage import checkpoint_tensors, load_packed, save_packed
from tests.compressors.tiny import rtn_codes, rtn_quantize_model, tiny_config, tiny_tokenizer

# bf16 activations, scales and outputs: per-output relative error ~2**-9; a wrong zero-point or group
# mapping gives errors of tens of percent (see test_a_wrong_zero_point_mapping_is_outside_the_bound)
REL_TOL = 1e-2


def _layer(bits, group_size, symmetric=False, act_order=False, out_f=96, in_f=576, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    q, s, z = rtn_codes(w, bits, group_size, symmetric)
    perm = torch.randperm(in_f, generator=g) if act_order else None
    if perm is not None:  # quantize the columns in perm's order, so groups follow it
        qp, sp, zp = rtn_codes(w[:, perm], bits, group_size, symmetric)
        q = torch.empty_like(qp)
        q[:, perm] = qp
        s, z = sp, zp
    return QuantizedLinear.from_quantized(
        q, s, z, bits, group_size, bias=torch.randn(out_f, generator=g), perm=perm, symmetric=symmetric
    )


def _kernel_shaped_llama():
    """The tiny Llama with widths the int4 kernel takes (the shared tiny one is 72 wide on purpose)."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config("llama")
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 64, 128, 16
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def _rel_err(y, ref):
    return float((y - ref).norm() / ref.norm())


def _needs(kind):
    if not kernels.kernel_available(kind, "cpu"):
        pytest.skip(f"the {kind} CPU kernel is unavailable with torch {torch.__version__}")


@pytest.mark.parametrize(
    "bits,group_size,symmetric,act_order",
    [
        (4, 32, True, False),
        (4, 32, False, False),
        (4, 64, False, False),
        (4, 128, True, False),  # 576 columns: four groups of 128 and one of 64 (kernel groups of 64)
        (4, 128, False, False),
        (4, -1, False, False),  # per channel
        (4, 64, False, True),  # act-order: the input is permuted, groups stay contiguous
        (8, -1, True, False),
        (8, -1, False, False),  # integer zero-points: a per-row offset times sum(x)
    ],
)
def test_kernel_matches_the_dequantized_weight(bits, group_size, symmetric, act_order):
    _needs(f"int{bits}")
    layer = _layer(bits, group_size, symmetric, act_order)
    w = layer.dequantize()
    x = torch.randn(2, 5, 576)
    with torch.no_grad():
        y = layer(x)
    assert layer.kernel == f"int{bits}", layer.kernel_note
    ref = x @ w.T + layer.bias
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert _rel_err(y, ref) < REL_TOL
    # batch-1 decode (one token) takes the same path
    with torch.no_grad():
        y1 = layer(x[:1, :1])
    assert _rel_err(y1, ref[:1, :1]) < REL_TOL


def test_a_wrong_zero_point_mapping_is_outside_the_bound():
    """The tolerance above separates a right mapping from a wrong one (zero off by one step)."""
    layer = _layer(4, 64)
    x = torch.randn(4, 576)
    ref = x @ layer.dequantize().T
    zeros = layer.zero_points()
    wrong = (
        kernels.pack_int4(layer.codes(), layer.scales, zeros + 1, 64)
        if kernels.kernel_available("int4", "cpu")
        else None
    )
    if wrong is None:
        pytest.skip("no int4 CPU kernel")
    assert _rel_err(kernels.int4_mm(x, wrong), ref) > 5 * REL_TOL


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, 128), (8, -1)])
def test_the_packed_state_survives_the_kernel(bits, group_size, tmp_path):
    """Once the kernel weight exists the layer drops its codes; qweight, dequantize() and what is saved
    are still bit for bit the same."""
    _needs(f"int{bits}")
    layer = _layer(bits, group_size)
    state = {k: v.clone() for k, v in layer.packed_state().items()}
    w = layer.dequantize()
    with torch.no_grad():
        layer(torch.randn(1, 576))
    assert layer._buffers["qweight"] is None  # the codes live in the kernel weight only
    after = layer.packed_state()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert torch.equal(layer.dequantize(), w)
    assert torch.equal(layer.weight, w) and layer._w_cache is None  # reading .weight keeps no float copy
    # moving the layer restores its own codes (the kernel is rebuilt where it runs next)
    layer.to(torch.float32)
    assert layer.kernel is None and torch.equal(layer._buffers["qweight"], state["qweight"])


@pytest.mark.parametrize(
    "bits,group_size,reason",
    [
        (3, 64, "no 3-bit kernel"),
        (2, 32, "no 2-bit kernel"),
        (4, 40, "group size 40"),
        (8, 64, "one scale per output row"),
    ],
)
def test_layers_without_a_kernel_take_the_exact_float_path(bits, group_size, reason):
    layer = _layer(bits, group_size, in_f=320)
    x = torch.randn(3, 320)
    with torch.no_grad():
        y = layer(x)
    assert layer.kernel is None and reason in (layer.kernel_note or "")
    assert torch.allclose(y, x @ layer.dequantize().T + layer.bias, atol=1e-5)


def test_shapes_the_kernels_mishandle_are_never_sent_to_them():
    """torch's CPU int8 kernel returns wrong numbers for K=72 without raising; the layer must not call it."""
    layer = _layer(8, -1, out_f=24, in_f=72)
    x = torch.randn(3, 72)
    with torch.no_grad():
        y = layer(x)
    assert layer.kernel is None and "multiple of" in (layer.kernel_note or "")
    assert torch.allclose(y, x @ layer.dequantize().T + layer.bias, atol=1e-5)


def test_an_unsupported_torch_falls_back_cleanly(monkeypatch):
    monkeypatch.setattr(kernels, "_probed", {})
    monkeypatch.setattr(kernels, "torch_supported", lambda version=None: False)
    layer = _layer(4, 64)
    x = torch.randn(2, 576)
    with torch.no_grad():
        y = layer(x)
    assert layer.kernel is None and "unavailable" in (layer.kernel_note or "")
    assert torch.allclose(y, x @ layer.dequantize().T + layer.bias, atol=1e-5)
    assert not kernels.torch_supported()
    monkeypatch.undo()
    assert kernels.torch_supported("2.13.0") and not kernels.torch_supported("2.5.1")


def test_the_switch_forces_the_fallback(monkeypatch):
    monkeypatch.setenv(kernels.KERNELS_ENV, "0")
    layer = _layer(4, 64)
    with torch.no_grad():
        layer(torch.randn(1, 576))
    assert layer.kernel is None and layer._buffers["qweight"] is not None


def test_gradients_take_the_float_path():
    """The kernels have no backward: a forward that needs gradients must still give them."""
    layer = _layer(4, 64)
    x = torch.randn(2, 576, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.kernel is None


def test_the_dequantized_cache_is_bounded(monkeypatch):
    a, b = _layer(3, 64, in_f=320, seed=1), _layer(3, 64, in_f=320, seed=2)
    one = a.dequantize().numel() * 4
    monkeypatch.setenv(DEQUANT_CACHE_ENV, str(1.5 * one / 2**20))  # room for one layer
    x = torch.randn(1, 320)
    with torch.no_grad():
        a(x)
        assert a._w_cache is not None
        b(x)
    assert a._w_cache is None and b._w_cache is not None  # a was the least recently used
    monkeypatch.setenv(DEQUANT_CACHE_ENV, "0")  # off: dequantized per forward, nothing kept
    with torch.no_grad():
        a(x)
    assert a._w_cache is None
    b.clear_cache()
    monkeypatch.setenv(DEQUANT_CACHE_ENV, "lots")
    with pytest.raises(ValueError, match=DEQUANT_CACHE_ENV):
        a(x)


def _float_tensors_of_weight_shape(module):
    """Every float tensor of shape [out, in] the layer holds: buffers, parameters, plain attributes."""
    shape = (module.out_features, module.in_features)
    found = []
    candidates = list(module.buffers()) + list(module.parameters()) + list(vars(module).values())
    for value in candidates:
        ts = (
            [value]
            if isinstance(value, torch.Tensor)
            else list(vars(value).values())
            if hasattr(value, "__dataclass_fields__")
            else []
        )
        found += [
            t for t in ts if isinstance(t, torch.Tensor) and t.is_floating_point() and tuple(t.shape) == shape
        ]
    return found


def test_a_loaded_4bit_model_holds_no_float_weights_after_a_forward(tmp_path):
    _needs("int4")
    model = rtn_quantize_model(_kernel_shaped_llama(), bits=4, group_size=32)
    tokens = torch.randint(0, 200, (1, 12))
    with torch.no_grad():
        reference = model(tokens).logits  # the freshly compressed model runs on the kernel too
    saved = {k: v.clone() for k, v in checkpoint_tensors(model).items()}
    save_packed(model, tiny_tokenizer(), tmp_path, method="rtn", config={"bits": 4, "group_size": 32})
    loaded = load_packed(tmp_path)
    before = model_memory_bytes(loaded)
    with torch.no_grad():
        logits = loaded(tokens).logits
    layers = packed_modules(loaded)
    assert layers and all(m.kernel == "int4" for m in layers.values())
    for name, m in layers.items():
        assert _float_tensors_of_weight_shape(m) == [], name
        assert m._w_cache is None
    # the kernel weight replaces the packed codes: memory grows by the kernel's bf16 scales and zero
    # offsets (1 bit per weight at g32), not by a float copy (32 bits per weight)
    float_bytes = sum(4 * m.n_weights for m in layers.values())
    assert model_memory_bytes(loaded) - before < 0.05 * float_bytes
    assert torch.allclose(logits, reference, atol=1e-4)
    # and the model saves exactly what was loaded
    again = checkpoint_tensors(loaded)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


def test_the_kernel_logits_match_the_dequantized_model():
    _needs("int4")
    model = rtn_quantize_model(_kernel_shaped_llama(), bits=4, group_size=32)
    tokens = torch.randint(0, 200, (1, 16))
    with torch.no_grad():
        kernel_logits = model(tokens).logits
        for m in packed_modules(model).values():
            assert m.kernel == "int4"
    with torch.enable_grad():  # gradients route every layer through the dequantized weight
        float_logits = model(tokens).logits.detach()
    assert _rel_err(kernel_logits, float_logits) < 2 * REL_TOL
    assert kernel_logits.argmax(-1).eq(float_logits.argmax(-1)).float().mean() > 0.9


@pytest.mark.gpu
@pytest.mark.parametrize("bits,group_size", [(4, 128), (4, 64), (8, -1)])
def test_cuda_kernel_matches_the_dequantized_weight(bits, group_size):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not kernels.kernel_available(f"int{bits}", "cuda"):
        pytest.skip(f"torch {torch.__version__} has no usable int{bits} CUDA kernel here")
    layer = _layer(bits, group_size, in_f=640, out_f=128).to("cuda")
    x = torch.randn(3, 640, device="cuda")
    with torch.no_grad():
        y = layer(x)
    assert layer.kernel == f"int{bits}"
    ref = x @ layer.dequantize().T + layer.bias
    assert _rel_err(y, ref) < REL_TOL
