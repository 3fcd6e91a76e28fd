"""Helpers shared by the layer-wise compressors (RTN, GPTQ, SpQR, magnitude, Wanda, SparseGPT).

Config checks with errors that name the value and the fix, packing a solved layer into the packed
module the storage layer saves, and the cost model behind every ``estimate``.

Cost model (how the constants were obtained): the time of a layer-wise method is
``passes · forward`` (running each block on the calibration tokens: ``2 · tokens · params`` FLOPs per
pass) ``+ solve`` (per layer, a Python loop over input columns with a fixed cost per column, plus a
per-weight cost for packing and masking). The constants in :data:`TIME_CONSTANTS` were fitted to runs of
``benchmarks/layerwise_methods.py`` on the demo model (SmolLM2-135M, 8×512 calibration tokens) on this
project's development machine: 2 CPU cores shared by about ten busy processes (load average ~20), so
each run had well under one core. For example GPTQ 4-bit g128: 2354 s in all, of which 741 s in layer
solves (30 blocks × 4992 column iterations: 4.9 ms each) and 1614 s in 2.5 block passes over 4096 tokens
(2.2 TFLOP: 1.35 GFLOP/s); Wanda: 633 s of forward passes for 1.74 TFLOP (2.8 GFLOP/s); RTN: 47 s for
106 M weights. The calibrated methods' constants were then rescaled to one idle-machine run (see
:data:`IDLE_SPEEDUP`); the estimate is meant to tell seconds from minutes from hours.
"""

from __future__ import annotations

import torch
from torch import nn

from compressors.base import ConfigError, CostEstimate, ModelShape, check_choice
from compressors.layers import get_bias

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
    return QuantizedLinear.from_quantized(
        codes, scale, zero, bits, group_size, bias=get_bias(layer), perm=perm, symmetric=sym
    )


def sparse_module(layer: nn.Module, weight: torch.Tensor, pattern: str) -> nn.Module:
    from compressors.packed import SparseLinear

    in_f = weight.shape[1]
    if pattern != "unstructured" and in_f % int(pattern.split(":")[1]):
        pattern = "unstructured"  # a ragged last run was kept dense: store it with the bitmask
    return SparseLinear.from_dense(weight, bias=get_bias(layer), pattern=pattern)


# --- cost model -------------------------------------------------------------------------------------

# The fit above was made with well under one core per run. On the same machine idle, GPTQ 4-bit g128
# on the demo model with 16x512 calibration compressed in 94.7 s (a job through the runner, 2 threads,
# 2026-11-23 07:37 UTC) where the loaded fit predicted 3,847 s: the calibrated methods' constants are
# divided by that measured factor (~40) so the estimate describes an idle machine of this class.
IDLE_SPEEDUP = 40.0
# seconds per column iteration (fixed), per weight (packing, masks), per width^3 (Cholesky), per FLOP
TIME_CONSTANTS = {
    "gptq": (4.9e-3 / IDLE_SPEEDUP, 0.0, 0.0, 1 / (1.4e9 * IDLE_SPEEDUP)),
    "sparsegpt": (4.9e-3 / IDLE_SPEEDUP, 0.0, 0.0, 1 / (1.4e9 * IDLE_SPEEDUP)),
    "spqr": (1.5e-2 / IDLE_SPEEDUP, 0.0, 0.0, 1 / (1.4e9 * IDLE_SPEEDUP)),
    "wanda": (0.0, 1.1e-6 / IDLE_SPEEDUP, 0.0, 1 / (2.8e9 * IDLE_SPEEDUP)),
    # RTN 4-bit g128 on the demo model took 10.0 s in benchmarks/results/compressors.md (the loaded fit: 47 s)
    "rtn": (0.0, 4.4e-7 / 5, 0.0, 0.0),
    "magnitude": (0.0, 1.3e-6 / 5, 0.0, 0.0),
}
# block passes per calibration sample: true-sequential runs partial passes per step (q/k/v: almost
# nothing, o: attention, up/gate, down: most of the block) plus one full pass for the outputs
FORWARD_PASSES = {"gptq": 2.5, "sparsegpt": 2.5, "spqr": 2.5, "wanda": 2.0, "rtn": 0, "magnitude": 0}


def block_layer_shapes(shape: ModelShape) -> list[tuple[int, int]]:
    """``(out, in)`` of one decoder block's linear layers for a Llama-style block (the common case)."""
    h, i = shape.hidden_size, shape.intermediate_size
    head_dim = h // max(shape.n_heads, 1)
    kv = head_dim * max(shape.n_kv_heads, 1)
    return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]


def layerwise_estimate(
    shape: ModelShape,
    method: str,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_seq: int = DEFAULT_CALIB_SEQ,
) -> CostEstimate:
    """Peak memory and time of a layer-wise method on this CPU class (see module docstring)."""
    c_iter, c_row, c_chol, c_flop = TIME_CONSTANTS[method]
    layers = block_layer_shapes(shape)
    block_params = sum(o * i for o, i in layers)
    tokens = calib_samples * calib_seq
    solve = sum(i * c_iter + o * i * c_row + i**3 * c_chol for o, i in layers) * shape.n_layers
    forward = FORWARD_PASSES[method] * 2 * tokens * block_params * shape.n_layers * c_flop
    seconds = solve + forward + (5.0 if FORWARD_PASSES[method] else 1.0)
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
    return CostEstimate(peak_memory_bytes=int(peak), seconds=float(seconds), note=note)
