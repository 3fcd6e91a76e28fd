"""Memory of a deployed model from its shape: weights by tensor class, KV cache, and runtime overhead.

Why by tensor class. Quantizers store the decoder's linear layers in few bits and keep the rest in
16: AWQ, GPTQ and compressed-tensors' W4A16 leave the embedding and the output layer in fp16/bf16,
llama.cpp's Q4_K_M stores the output layer in Q6_K and norms in f32. Parameters x bits applies the
linear layers' bits to all of them and under-counts: Llama-3.1-8B AWQ comes out at 4.27 GB that way,
while the published checkpoint is 5.73 GB, because its 1.05B embedding and output weights are stored
in 16 bits. :func:`checkpoint_bytes` multiplies each class's parameter count (from
:class:`knowledge.shapes.ModelShape`) by that class's stored bits (:class:`TensorBits`) and is checked
against published checkpoint sizes in ``tests/engine/test_memory_reference.py``.

Stored bits count everything a format writes per weight: a 4-bit weight with an fp16 scale and a
packed 4-bit zero point per group of 128 is 4 + 16/128 + 4/128 = 4.15625 bits (AWQ's GEMM layout);
llama.cpp's Q4_K super-block of 256 weights is 144 bytes, 4.5 bits; Q8_0 is 34 bytes per 32, 8.5.

The KV cache is 2 x layers x KV heads x head dim x context x batch x KV bits / 8: it depends on the
shape, not on the parameter count, and at long context it outgrows the weights (Llama-3.1-8B at 131072
tokens: 16 GiB per sequence in 16 bits, against 16 GB of bf16 weights).

Overhead is what a runtime holds beyond weights and cache: the CUDA context and kernels' workspace
(between 300 MiB and 2 GiB when PyTorch first touches CUDA, https://vram.asmirnov.xyz), activations
of one forward pass and allocator slack. EleutherAI's "Transformer Math 101"
(https://blog.eleuther.ai/transformer-math/, Inference) puts the forward pass's overhead at no more
than 20% of the weights. It is stated, not measured: :data:`OVERHEAD_FRACTION` of the weights plus
:data:`OVERHEAD_FIXED_GB`, and every estimate shows it as its own line.

GB are decimal (1e9 bytes), as disk sizes and most budgets are; the note also gives GiB for the KV
cache, which is how serving engines print it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from knowledge.shapes import ModelShape

#: Runtime overhead as a fraction of the weights: activations of a forward pass and allocator slack.
#: Half of EleutherAI's upper bound (20%, Transformer Math 101), since the KV cache is counted apart.
OVERHEAD_FRACTION = 0.10
#: Fixed runtime overhead, GB: the CUDA context and library workspaces (300 MiB to 2 GiB, see above).
OVERHEAD_FIXED_GB = 0.5

GB = 1e9
GIB = float(1 << 30)


@dataclass(frozen=True)
class TensorBits:
    """Stored bits per weight for each tensor class, everything counted (scales, zeros, indices).

    ``linear`` applies to the decoder layers' linear weights (attention and MLP projections);
    ``embedding`` to the token embedding, ``lm_head`` to the output layer (when not tied), ``other``
    to norms, biases and MoE routers. A format that mixes types across the linear layers (llama.cpp's
    Q4_K_M) gives their parameter-weighted mean: :func:`llama_cpp_bits` computes it from the shape.
    """

    linear: float
    embedding: float = 16.0
    lm_head: float = 16.0
    other: float = 16.0

    def __post_init__(self) -> None:
        for name in ("linear", "embedding", "lm_head", "other"):
            value = getattr(self, name)
            if not 0 < value <= 32:
                raise ValueError(f"TensorBits.{name} = {value} must be in (0, 32] bits per weight")


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of one deployment, GB (1e9), with the part of each tensor class and where it comes from."""

    weights_gb: float
    kv_cache_gb: float
    overhead_gb: float
    total_gb: float
    #: GB of each part: linear, embedding, lm_head, other, kv_cache, overhead
    breakdown: dict[str, float] = field(default_factory=dict)
    #: "shape" (counted by tensor class) or "params" (no shape given: every weight at the linear bits)
    basis: str = "shape"
    note: str = ""

    @property
    def weights_and_kv_gb(self) -> float:
        """What the budget check covers: weights and KV cache (the overhead is shown, not charged)."""
        return self.weights_gb + self.kv_cache_gb

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("weights_gb", "kv_cache_gb", "overhead_gb", "total_gb"):
            out[key] = round(out[key], 3)
        out["breakdown"] = {k: round(v, 3) for k, v in self.breakdown.items()}
        return out


def weight_bytes_by_class(shape: ModelShape, bits: TensorBits) -> dict[str, float]:
    """Bytes of each tensor class: its parameter count x its stored bits / 8."""
    return {
        "linear": shape.linear_params * bits.linear / 8.0,
        "embedding": shape.embedding_params * bits.embedding / 8.0,
        "lm_head": shape.lm_head_params * bits.lm_head / 8.0,
        "other": shape.other_params * bits.other / 8.0,
    }


def checkpoint_bytes(shape: ModelShape, bits: TensorBits) -> float:
    """Bytes of the stored weights: what is compared with published checkpoint sizes (within 3%).

    File headers and tokenizer metadata (a few MB) are not counted.
    """
    return sum(weight_bytes_by_class(shape, bits).values())


def estimate_memory(
    shape: ModelShape | None,
    bits: TensorBits,
    *,
    params: float | None = None,
    context: int = 4096,
    batch: int = 1,
    kv_bits: float = 16.0,
    overhead: float = OVERHEAD_FRACTION,
) -> MemoryEstimate:
    """Weights, KV cache and overhead of serving ``batch`` sequences of ``context`` tokens.

    With a shape, weights are counted by tensor class and the KV cache from the attention geometry.
    Without one (a bare ``params``), every parameter is charged ``bits.linear`` and the KV cache is
    unknown, reported as 0 with a note saying so: a parameter count does not determine it.
    """
    if overhead < 0:
        raise ValueError(f"overhead fraction {overhead} must be >= 0")
    if shape is None:
        if params is None or params <= 0:
            raise ValueError("estimate_memory needs a shape or a positive params count")
        weights = params * bits.linear / 8.0 / GB
        over = weights * overhead + OVERHEAD_FIXED_GB
        return MemoryEstimate(
            weights_gb=weights,
            kv_cache_gb=0.0,
            overhead_gb=over,
            total_gb=weights + over,
            breakdown={
                "linear": weights,
                "embedding": 0.0,
                "lm_head": 0.0,
                "other": 0.0,
                "kv_cache": 0.0,
                "overhead": over,
            },
            basis="params",
            note=(
                f"weights {weights:.2f} GB ({params / 1e9:.3g}B params x {bits.linear:g} bits, every tensor "
                f"at the linear layers' bits); KV cache unknown without the model's shape (pass --model)"
            ),
        )
    parts = {k: v / GB for k, v in weight_bytes_by_class(shape, bits).items()}
    weights = sum(parts.values())
    kv_bytes = shape.kv_cache_bytes(context, batch, kv_bits)
    kv = kv_bytes / GB
    over = weights * overhead + OVERHEAD_FIXED_GB
    breakdown = {**parts, "kv_cache": kv, "overhead": over}
    note = (
        f"weights {weights:.2f} GB + KV cache {kv_bytes / GIB:.1f} GiB at {context} tokens x {batch} "
        f"({kv_bits:g}-bit) + overhead {over:.2f} GB"
    )
    return MemoryEstimate(
        weights_gb=weights,
        kv_cache_gb=kv,
        overhead_gb=over,
        total_gb=weights + kv + over,
        breakdown=breakdown,
        basis="shape",
        note=note,
    )


# --- llama.cpp's mixed k-quants --------------------------------------------------------------------------

#: Bits per weight of ggml's block types (bytes per block x 8 / weights per block, ggml/src/ggml-common.h):
#: Q4_K holds 256 weights in 2 + 2 + 12 + 128 = 144 bytes -> 4.5; Q6_K 128 + 64 + 16 + 2 = 210 -> 6.5625;
#: Q8_0 holds 32 in 2 + 32 = 34 -> 8.5; Q5_0 32 in 22 -> 5.5; Q5_1 32 in 24 -> 6.0.
GGML_BPW: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_1": 6.0,
    "Q5_K": 5.5,
    "Q5_0": 5.5,
    "Q4_K": 4.5,
    "Q4_0": 4.5,
}
#: Weights per block: a tensor whose row length (input features) is not a multiple of it falls back.
_BLOCK = {"Q8_0": 32, "Q5_0": 32, "Q5_1": 32, "Q4_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
#: ``tensor_type_fallback`` in llama.cpp: the type used when the row length does not fit the block.
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
#: File type -> (base type, Q4_K_M/Q5_K_M-style promotion of half of attn_v and ffn_down to Q6_K).
LLAMA_CPP_FTYPES: dict[str, tuple[str, bool]] = {
    "Q4_K_M": ("Q4_K", True),
    "Q5_K_M": ("Q5_K", True),
    "Q4_K_S": ("Q4_K", False),
    "Q6_K": ("Q6_K", False),
    "Q8_0": ("Q8_0", False),
}


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers and every third layer
    between them get the higher type (16 of 32 layers)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _fit(ggml_type: str, row: int) -> str:
    if row % _BLOCK.get(ggml_type, 1) == 0:
        return ggml_type
    return _FALLBACK.get(ggml_type, "F16")


def llama_cpp_bits(shape: ModelShape, ftype: str) -> TensorBits:
    """Stored bits per tensor class of a llama.cpp file type, following ``llama_tensor_get_type``.

    The rule, from llama.cpp's ``src/llama-quant.cpp`` (https://github.com/ggml-org/llama.cpp):

    - every linear weight takes the file type's base type (Q4_K for Q4_K_M and Q4_K_S, Q5_K for
      Q5_K_M), except:
    - ``attn_v`` and ``ffn_down`` are Q6_K in the layers where ``use_more_bits`` holds (Q4_K_M, Q5_K_M);
      for Q4_K_S, ``attn_v`` of the first 4 layers and ``ffn_down`` of the first eighth are Q5_K;
    - a 70B model (80 layers) gets Q5_K instead of Q4_K on the remaining ``attn_v``; a model of 8
      experts gets Q8_0 on ``attn_v`` and ``attn_k`` and Q5_K on ``attn_output`` (Q4_K_S/Q4_K_M);
    - the output layer is Q6_K (Q8_0 for Q8_0); when it is tied, the token embedding takes its type;
      an untied token embedding takes the base type; norms stay F32;
    - a tensor whose rows are not a multiple of the block (256 weights for k-quants) falls back
      (``tensor_type_fallback``): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0.

    The linear bits are the parameter-weighted mean over the decoder's linear weights. Falcon's own
    ffn_down schedule is not modelled.
    """
    key = ftype.upper()
    if key not in LLAMA_CPP_FTYPES:
        raise ValueError(f"llama.cpp file type {ftype!r} not modelled; known: {', '.join(LLAMA_CPP_FTYPES)}")
    base, promote = LLAMA_CPP_FTYPES[key]
    s = shape
    n = s.num_hidden_layers
    experts = max(s.num_experts, 1)
    q_width, kv_width = s.num_attention_heads * s.head_dim, s.num_key_value_heads * s.head_dim
    mlp_width = s.expert_intermediate_size if s.num_experts else s.intermediate_size
    bits_x_params = 0.0
    for i in range(n):
        v_type = base
        if promote and _use_more_bits(i, n):
            v_type = "Q6_K"
        elif key == "Q4_K_S" and i < 4:
            v_type = "Q5_K"
        if n == 80 and v_type == "Q4_K":  # llama.cpp's LLM_TYPE_70B
            v_type = "Q5_K"
        down_type = base
        if promote and _use_more_bits(i, n):
            down_type = "Q6_K"
        elif key == "Q4_K_S" and i < n // 8:
            down_type = "Q5_K"
        k_type, o_type = base, base
        if s.num_experts == 8:
            v_type = k_type = "Q8_0"
            if key in ("Q4_K_S", "Q4_K_M"):
                o_type = "Q5_K"
        tensors = (
            (base, s.hidden_size, s.hidden_size * q_width),  # attn_q: (type, row length, params)
            (k_type, s.hidden_size, s.hidden_size * kv_width),
            (v_type, s.hidden_size, s.hidden_size * kv_width),
            (o_type, q_width, q_width * s.hidden_size),
            (down_type, mlp_width, mlp_width * s.hidden_size * experts),
        )
        for t, row, count in tensors:
            bits_x_params += GGML_BPW[_fit(t, row)] * count
        up_gate = (2 if s.mlp_gated else 1) * s.hidden_size * mlp_width * experts
        bits_x_params += GGML_BPW[_fit(base, s.hidden_size)] * up_gate
    linear = bits_x_params / s.linear_params
    out_type = _fit("Q8_0" if base == "Q8_0" else "Q6_K", s.hidden_size)
    embed_type = out_type if s.tie_word_embeddings else _fit(base, s.hidden_size)
    return TensorBits(
        linear=linear, embedding=GGML_BPW[embed_type], lm_head=GGML_BPW[out_type], other=GGML_BPW["F32"]
    )


# --- what other formats store per weight ---------------------------------------------------------------


def _per_matrix_mean(shape: ModelShape, bits_of: Callable[[int, int], float]) -> float:
    """Parameter-weighted mean over the decoder's linear matrices of ``bits_of(in, out)``."""
    total = sum(i * o * c * bits_of(i, o) for _, i, o, c in shape.linear_matrices())
    return total / shape.linear_params


def gptq_bits(shape: ModelShape, bits: int = 4, group_size: int = 128) -> TensorBits:
    """GPTQ as AutoGPTQ / GPTQ-for-LLaMa (and GPTQModel) store it: ``qweight`` packs ``bits`` per weight;
    each group of ``group_size`` input features has an fp16 scale and a zero point packed at ``bits``
    for every output channel; ``g_idx`` is one int32 per input feature (written with or without
    act-order). ``group_size=-1`` is one group per row (per-channel). Embeddings, lm_head and norms
    stay fp16.
    """

    def per_weight(n_in: int, n_out: int) -> float:
        groups = 1 if group_size <= 0 else -(-n_in // group_size)
        return bits + groups * (16 + bits) / n_in + 32 / n_out

    return TensorBits(linear=_per_matrix_mean(shape, per_weight))


def awq_bits(bits: int = 4, group_size: int = 128) -> TensorBits:
    """AWQ (AutoAWQ GEMM layout): ``qweight`` packs ``bits`` per weight, ``scales`` one fp16 and ``qzeros``
    one packed ``bits`` zero per group of ``group_size``: 4 + 16/128 + 4/128 = 4.15625. Embeddings,
    lm_head and norms stay fp16."""
    return TensorBits(linear=bits + (16 + bits) / group_size)


def fp8_bits(shape: ModelShape, scale: str = "channel") -> TensorBits:
    """FP8 weights (compressed-tensors / ModelOpt): one byte per weight plus an fp32 scale per output
    channel (``scale="channel"``) or per tensor (``"tensor"``), plus the activation's fp32 input scale
    for static schemes (ignored: four bytes per matrix). Embeddings and lm_head stay bf16."""
    if scale not in ("channel", "tensor"):
        raise ValueError(f"scale {scale!r} must be 'channel' or 'tensor'")
    per_row = scale == "channel"
    return TensorBits(linear=_per_matrix_mean(shape, lambda n_in, n_out: 8 + (32 / n_in if per_row else 0)))


def bnb_4bit_bits(blocksize: int = 64, double_quant: bool = True) -> TensorBits:
    """bitsandbytes NF4/FP4 as saved by transformers: two 4-bit codes per byte and an absmax per block of
    ``blocksize``; with double quantization the absmax is itself 8-bit with an fp32 scale per 256
    blocks (8/64 + 32/(64*256) = 0.127 bits), without it an fp32 absmax (0.5 bits). lm_head and
    embeddings stay 16-bit (transformers skips the output layer)."""
    overhead = 8 / blocksize + 32 / (blocksize * 256) if double_quant else 32 / blocksize
    return TensorBits(linear=4 + overhead)


def aqlm_bits(
    shape: ModelShape, num_codebooks: int = 1, nbits_per_codebook: int = 16, in_group_size: int = 8
) -> TensorBits:
    """AQLM (Egiazarian et al. 2024): each group of ``in_group_size`` input weights is ``num_codebooks``
    codes of ``nbits_per_codebook`` bits (1x16 with groups of 8: 2 bits per weight); every matrix also
    stores its codebooks (``num_codebooks x 2**nbits x in_group_size`` fp16 values, 1 MiB for 1x16)
    and an fp16 scale per output channel. The codebooks make the overhead depend on matrix size: 0.5
    bits per weight on a 4096x4096 matrix. Embeddings, lm_head and norms stay fp16."""
    code_bits = num_codebooks * nbits_per_codebook / in_group_size
    codebook = num_codebooks * (1 << nbits_per_codebook) * in_group_size * 16

    def per_weight(n_in: int, n_out: int) -> float:
        return code_bits + codebook / (n_in * n_out) + 16 / n_in

    return TensorBits(linear=_per_matrix_mean(shape, per_weight))
