"""Helpers shared by the layer-wise compressors (RTN, GPTQ, SpQR, magnitude, Wanda, SparseGPT).

Config checks with errors that name the value and the fix, packing a solved layer into the packed
module the storage layer saves, and the cost model behind every ``estimate``.

Cost model: every ``estimate`` counts the *operations* a method performs, as a function of the model's
shape and the calibration size (:func:`layerwise_work`), and divides each kind by the rate this machine's
throughput probe measured (:mod:`compressors.throughput`), so the figure holds on any machine and device.
Per decoder block, for each linear layer ``[out, in]`` (``o``, ``d``), with ``n`` calibration tokens:

* calibration forward passes: ``passes · 2 · n · block params`` matmul FLOPs (+ attention
  ``4 · n · seq · hidden``), plus about :data:`BLOCK_FORWARD_OPS` torch ops per sample and pass;
* GPTQ / SparseGPT / SpQR: Hessian accumulation ``2 · n · d²`` FLOPs; Cholesky, inverse and Cholesky
  again ``4/3 · d³``; the column sweep: the lazy block updates ``o · d²`` matmul FLOPs, the in-block
  rank-1 updates ``o · d · blocksize / 2`` elements (16 bytes each), and :data:`COLUMN_OPS` small torch
  ops per column (the Python loop);
* Wanda: squared input norms ``n · d`` elements; every method: :func:`weight_passes` float32 passes over
  the weights (scoring, sorting, quantizing, packing), and a group's grid costs :data:`GROUP_OPS` ops.

The counts of small ops and weight passes were read off the code (``compressors/ops``,
``compressors/packed.py``), not fitted. Checked once on the 2-core development VM: an RTN 4-bit g128
layer of the demo model (1536×576, cache-resident) took the time of 16 passes at the probe's bandwidth,
as counted. Under heavy load it is far off: RTN on the demo model measured 51.7 s against an estimate of
0.4 s at load average ~10 on 2 cores (``benchmarks/estimate_accuracy.py``; oversubscribed threads make
small ops many times slower, which no probe taken at another moment can know; the estimate's note warns
when the machine is busy). The stated uncertainty (:data:`UNCERTAINTY`) covers the gap between the
probe's square matmuls and the run's shapes and the roughness of the op counts on a machine that is not
oversubscribed.
"""

from __future__ import annotations

import torch
from torch import nn

from compressors.base import ConfigError, CostEstimate, ModelShape, check_choice
from compressors.layers import get_bias
from compressors.throughput import Throughput, Work, forward_work, get_throughput

PACKABLE_BITS = [2, 3, 4, 8]
DEFAULT_CALIB_SAMPLES = 128
DEFAULT_CALIB_SEQ = 512
PATTERNS = ["unstructured", "2:4", "4:8"]


def check_bits(bits: int, allowed: list[int] | None = None) -> None:
    allowed = allowed or PACKABLE_BITS
    if bits not in allowed:
        raise ConfigError(
            f"bits={bits!r} is not allowed; choose one of {allowed} (these are the widths Shrinkwise "
            "packs densely into int32 words; 5-7 bits would be stored as 8 and save nothing over 8)"
        )


def check_group_size(group_size: int) -> None:
    if not (group_size == -1 or group_size >= 8):
        raise ConfigError(
            f"group_size={group_size!r} is not allowed; use -1 for one scale per output channel, "
            "or a group of at least 8 input columns (common: 32, 64, 128; it need not divide the width)"
        )


def check_pattern(pattern: str, sparsity: float) -> tuple[float, int, int]:
    """``(sparsity, prune_n, prune_m)`` for a pattern; N:M fixes the sparsity to N/M."""
    check_choice("pattern", pattern, PATTERNS)
    if pattern == "unstructured":
        if not (0.0 <= sparsity <= 0.95):
            raise ConfigError(f"sparsity={sparsity!r} is out of range; it must be between 0.0 and 0.95")
        return sparsity, 0, 0
    n, m = (int(x) for x in pattern.split(":"))
    return n / m, n, m


def quantized_module(
    layer: nn.Module,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    sym: bool,
    perm: torch.Tensor | None = None,
) -> nn.Module:
    """The packed replacement of ``layer``. ``codes`` are in quantization order when ``perm`` is set
    (GPTQ's act-order); QuantizedLinear wants them in original column order plus the order."""
    from compressors.packed import QuantizedLinear

    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
        perm = perm.cpu()
    # packed modules are built on the CPU (bit packing is CPU code); a caller computing on a GPU moves
    # the result back to its device to run it
    bias = get_bias(layer)
    return QuantizedLinear.from_quantized(
        codes.cpu(),
        scale.cpu(),
        zero.cpu(),
        bits,
        group_size,
        bias=None if bias is None else bias.cpu(),
        perm=perm,
        symmetric=sym,
    )


def sparse_module(layer: nn.Module, weight: torch.Tensor, pattern: str) -> nn.Module:
    from compressors.packed import SparseLinear

    in_f = weight.shape[1]
    if pattern != "unstructured" and in_f % int(pattern.split(":")[1]):
        pattern = "unstructured"  # a ragged last run was kept dense: store it with the bitmask
    return SparseLinear.from_dense(weight, bias=get_bias(layer), pattern=pattern)


# --- cost model -------------------------------------------------------------------------------------

# block passes per calibration sample: true-sequential runs partial passes per step (q/k/v: almost
# nothing, o: attention, up/gate, down: most of the block) plus one full pass for the outputs
FORWARD_PASSES = {"gptq": 2.5, "sparsegpt": 2.5, "spqr": 2.5, "wanda": 2.0, "rtn": 0, "magnitude": 0}
# torch ops in one Llama block's forward on one sample (norms, projections, rope, attention, MLP, hooks)
BLOCK_FORWARD_OPS = 80
# small torch ops per input column of the column sweep (compressors/ops/gptq.py: quantize, dequantize,
# loss, error, rank-1 update, stores ~25; SparseGPT's mask and update ~25; SpQR adds outlier detection and
# its second-level statistics ~75)
COLUMN_OPS = {"gptq": 25, "sparsegpt": 25, "spqr": 75}
GROUP_OPS = 15  # a group's min/max, scale and zero (compressors/ops/quant_grid.py: row_params)
LAYER_OPS = 100  # per layer: hooks, set_module, progress report, packed-module construction
HESSIAN_METHODS = ("gptq", "sparsegpt", "spqr")
QUANT_METHODS = ("gptq", "spqr", "rtn")
# the true time is expected within seconds / u .. seconds · u
UNCERTAINTY = {"rtn": 2.0, "magnitude": 2.0, "wanda": 2.0, "gptq": 2.0, "sparsegpt": 2.0, "spqr": 3.0}


def weight_passes(method: str, in_features: int) -> float:
    """Float32 read+write passes over each weight besides the matmuls: quantize and pack (RTN, GPTQ:
    about 6 + 10), score and sort each row (magnitude, Wanda, SparseGPT's mask: log2(in) + 4) and the
    sparse bitmask packing (about 8)."""
    sort = max(in_features, 2).bit_length() + 4
    return {
        "rtn": 16.0,
        "gptq": 16.0,
        "spqr": 24.0,
        "magnitude": sort + 8.0,
        "wanda": sort + 11.0,
        "sparsegpt": sort + 8.0,
    }[method]


def block_layer_shapes(shape: ModelShape) -> list[tuple[int, int]]:
    """``(out, in)`` of one decoder block's linear layers for a Llama-style block (the common case)."""
    h, i = shape.hidden_size, shape.intermediate_size
    head_dim = h // max(shape.n_heads, 1)
    kv = head_dim * max(shape.n_kv_heads, 1)
    return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]


def layerwise_work(
    shape: ModelShape,
    method: str,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_seq: int = DEFAULT_CALIB_SEQ,
    group_size: int = -1,
    blocksize: int = 128,
) -> dict[str, Work]:
    """Operation counts of a layer-wise method, by stage (see the module docstring)."""
    layers = block_layer_shapes(shape)
    L = shape.n_layers
    block_params = sum(o * d for o, d in layers)
    tokens = calib_samples * calib_seq if FORWARD_PASSES[method] else 0
    stages: dict[str, Work] = {}
    if tokens:
        per_pass = forward_work(block_params, tokens, shape.dtype_bytes) + Work(
            matmul_flops=4.0 * tokens * calib_seq * shape.hidden_size,
            small_ops=float(calib_samples * BLOCK_FORWARD_OPS),
        )
        stages["calibration passes"] = per_pass * (FORWARD_PASSES[method] * L)
    if method in HESSIAN_METHODS:
        stages["hessians"] = Work(matmul_flops=2.0 * tokens * sum(d * d for _, d in layers)) * L
        stages["inverse Cholesky"] = Work(factor_flops=4.0 / 3.0 * sum(d**3 for _, d in layers)) * L
        bs = min(blocksize, max(d for _, d in layers))
        stages["column sweep"] = (
            Work(
                matmul_flops=float(sum(o * d * d for o, d in layers)),
                bytes_moved=8.0 * bs * block_params,
                small_ops=float(COLUMN_OPS[method] * sum(d for _, d in layers)),
            )
            * L
        )
    elif method == "wanda":
        stages["input norms"] = Work(bytes_moved=8.0 * tokens * sum(d for _, d in layers)) * L
    groups = 0.0  # grids per layer row block: one per output channel set, or ceil(in / group_size)
    if method in QUANT_METHODS:
        groups = float(sum(1 if group_size == -1 else -(-d // group_size) for _, d in layers))
    stages["weights"] = (
        Work(
            bytes_moved=8.0 * sum(o * d * weight_passes(method, d) for o, d in layers),
            small_ops=LAYER_OPS * len(layers) + GROUP_OPS * groups,
        )
        * L
    )
    return stages


def layerwise_estimate(
    shape: ModelShape,
    method: str,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_seq: int = DEFAULT_CALIB_SEQ,
    group_size: int = -1,
    blocksize: int = 128,
    throughput: Throughput | None = None,
) -> CostEstimate:
    """Peak memory and time of a layer-wise method: its operation counts (:func:`layerwise_work`)
    divided by this machine's measured throughput (``throughput``, default the cached probe)."""
    tp = throughput or get_throughput()
    stages = layerwise_work(shape, method, calib_samples, calib_seq, group_size, blocksize)
    seconds = sum(w.seconds(tp) for w in stages.values())
    layers = block_layer_shapes(shape)
    tokens = calib_samples * calib_seq
    model_bytes = shape.n_params * shape.dtype_bytes
    if FORWARD_PASSES[method] == 0:
        peak = model_bytes + 3 * max(o * i for o, i in layers) * 4
        note = "no calibration data; one pass over the weights"
    else:
        acts = 2 * tokens * shape.hidden_size * 4  # inputs and outputs of the current block, float32
        widest = max(i for _, i in layers)
        stats = 2 * shape.hidden_size**2 * 4 + widest**2 * 4 if method != "wanda" else widest * 4 * 3
        work = 4 * max(o * i for o, i in layers) * 4 + 3 * widest**2 * 4
        one_sample = (
            calib_seq * (shape.intermediate_size * 4 + shape.hidden_size * 6) * 4
            + shape.n_heads * calib_seq**2 * 4
        )
        peak = model_bytes + acts + stats + work + one_sample
        note = f"assumes {calib_samples}×{calib_seq} calibration tokens and a Llama-style block"
    split = ", ".join(f"{k} {w.seconds(tp):.3g} s" for k, w in stages.items())
    return CostEstimate(
        peak_memory_bytes=int(peak),
        seconds=float(seconds),
        note=f"{note} ({split})",
        uncertainty=UNCERTAINTY[method],
        basis=tp.describe(),
    )
