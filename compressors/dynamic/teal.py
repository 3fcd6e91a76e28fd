"""TEAL: training-free activation sparsity (Liu et al., arXiv 2408.14690), installed without touching weights.

For every linear layer inside the decoder blocks, a magnitude threshold ``t`` is calibrated once from
calibration activations: ``t`` is the ``s``-quantile of ``|x|`` over the layer's inputs, so a fraction
``s`` of the input entries falls below it. At inference each token zeroes the entries of its input
with ``|x_i| <= t``; the weight columns they would multiply are skipped. The paper calibrates
per-layer sparsities greedily; this module uses the uniform allocation (the same target ``s`` for
every layer), which the paper reports as its baseline.

How a layer is changed: its ``forward`` is replaced *on the instance* (``types.MethodType``), so the
module, its parameter names and its weights stay exactly as they were: ``save_pretrained`` still writes
the original checkpoint and :func:`uninstall_teal` restores the original behaviour.

- one token (decode, batch 1, float32): the sparse matrix-vector kernel of
  :mod:`compressors.dynamic.sparse_kernel` reads only the kept columns (kept as a transposed copy of the
  weight, ``[in, out]``, made once per layer at install: memory for speed);
- several tokens (prefill, evaluation): the masked dense product ``W (x ⊙ [|x| > t])`` (exact, no speed-up).

A threshold of 0 leaves the layer's original forward in place, so TEAL at 0 % is exactly the model.
"""

from __future__ import annotations

import logging
import types
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import nn

from compressors.calibration import LayerStats
from compressors.dynamic.sparse_kernel import load_kernel
from compressors.layers import find_blocks, get_bias, get_weight, linear_layers, set_attribute

log = logging.getLogger(__name__)


@dataclass
class TealState:
    """What an installed layer holds: its threshold, the transposed weight for the kernel, and counters."""

    threshold: float
    use_kernel: bool
    wt: torch.Tensor | None = None  # [in, out] contiguous, only when the kernel is used
    seen: int = 0  # input entries seen since the counters were reset
    zeroed: int = 0  # of which at or below the threshold
    count: bool = False
    original_forward: Any = field(default=None, repr=False)


def _state(module: nn.Module) -> TealState | None:
    """The TEAL state installed on ``module`` (an attribute :func:`install_teal` sets), if any."""
    st = getattr(module, "_shrinkwise_teal", None)
    return st if isinstance(st, TealState) else None


def block_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer inside the decoder blocks by full path (the layers TEAL sparsifies)."""
    path, blocks = find_blocks(model)
    return {f"{path}.{i}.{n}": m for i, b in enumerate(blocks) for n, m in linear_layers(b).items()}


#: torch.quantile's input limit
QUANTILE_LIMIT = (1 << 24) - 1


def layer_seed(seed: int, block: int, name: str) -> int:
    """The seed of one layer's sampling generator: from the run's seed, the block index and the layer's
    name within the block, so the draws do not depend on the order layers are visited (the whole model
    sequence by sequence, or a streamed run block by block)."""
    return (seed * 1_000_003 + zlib.crc32(f"{block}.{name}".encode())) % (1 << 63)


class AbsSamples(LayerStats):
    """A random sample of one layer's input magnitudes ``|x|`` (float32, on the CPU), from which its
    threshold is a quantile: the statistic TEAL calibrates, whole-model and streamed alike.

    ``per_batch`` magnitudes at most are drawn from each input (``max_samples / n_batches``); the layer's
    own generator (:func:`layer_seed`) makes the draw deterministic and independent of other layers.
    """

    def __init__(self, name: str, block: int, per_batch: int, seed: int) -> None:
        super().__init__(name, "abs_samples", torch.empty(0))
        self.per_batch = per_batch
        self.gen = torch.Generator().manual_seed(layer_seed(seed, block, name))
        self.chunks: list[torch.Tensor] = []

    def add(self, inp: torch.Tensor) -> None:
        a = inp.detach().abs().reshape(-1).float().cpu()
        if a.numel() > self.per_batch:
            a = a[torch.randint(0, a.numel(), (self.per_batch,), generator=self.gen)]
        self.chunks.append(a)
        self.n_tokens += 1

    def thresholds(self, levels: list[float], max_samples: int) -> list[float]:
        """The ``levels``-quantiles of the sampled magnitudes (0 for a level of 0)."""
        if not self.chunks:
            raise RuntimeError(f"layer {self.name} saw no input during calibration")
        a = torch.cat(self.chunks)
        limit = min(max(max_samples, 1), QUANTILE_LIMIT)
        if a.numel() > limit:
            a = a[torch.randint(0, a.numel(), (limit,), generator=self.gen)]
        return [float(torch.quantile(a, lv)) if lv > 0 else 0.0 for lv in levels]


def per_batch_samples(max_samples: int, n_batches: int | None) -> int:
    """Magnitudes drawn per layer from each calibration batch."""
    return max(1, max_samples // n_batches) if n_batches else max_samples


@overload
def calibrate_thresholds(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    sparsity: float,
    max_samples: int = ...,
    seed: int = ...,
    n_batches: int | None = ...,
    on_batch: Callable[[int], object] | None = ...,
) -> dict[str, float]: ...


@overload
def calibrate_thresholds(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    sparsity: list[float],
    max_samples: int = ...,
    seed: int = ...,
    n_batches: int | None = ...,
    on_batch: Callable[[int], object] | None = ...,
) -> dict[float, dict[str, float]]: ...


@torch.no_grad()
def calibrate_thresholds(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    sparsity: float | list[float],
    max_samples: int = 1 << 18,
    seed: int = 0,
    n_batches: int | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> dict[str, float] | dict[float, dict[str, float]]:
    """The ``sparsity``-quantile of |input| of every block linear, from the dense model on ``batches``.

    Each layer keeps about ``max_samples`` randomly drawn input magnitudes in all (``max_samples /
    n_batches`` per batch when ``n_batches`` is given; each layer has its own fixed generator
    (:class:`AbsSamples`), so the result is deterministic and the same as a streamed run's); the quantile
    of that sample estimates the threshold (2^18 samples pin a quantile's rank to about ±0.1 %). Memory:
    4 bytes × ``max_samples`` per layer. ``batches`` are token id tensors ``[b, seq]``; ``on_batch(i)``
    is called after each one. A list of sparsities gives ``{sparsity: thresholds}`` from one calibration
    pass.
    """
    path, blocks = find_blocks(model)
    per_batch = per_batch_samples(max_samples, n_batches)
    samples: dict[str, AbsSamples] = {}
    handles = []
    for bi, block in enumerate(blocks):
        for name, m in linear_layers(block).items():
            stats = samples[f"{path}.{bi}.{name}"] = AbsSamples(name, bi, per_batch, seed)

            def hook(module: nn.Module, args: tuple[Any, ...], stats: AbsSamples = stats) -> None:
                stats.add(args[0])

            handles.append(m.register_forward_pre_hook(hook))
    device = next(model.parameters()).device
    try:
        for i, batch in enumerate(batches):
            model(input_ids=batch.to(device), use_cache=False)
            if on_batch is not None:
                on_batch(i)
    finally:
        for h in handles:
            h.remove()
    levels = list(sparsity) if isinstance(sparsity, (list, tuple)) else [sparsity]
    thresholds: dict[float, dict[str, float]] = {lv: {} for lv in levels}
    for full_name, stats in samples.items():
        for lv, t in zip(levels, stats.thresholds(levels, max_samples)):
            thresholds[lv][full_name] = t
    return thresholds if isinstance(sparsity, (list, tuple)) else thresholds[levels[0]]


def _teal_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    st = _state(self)
    if st is None:  # only install_teal binds this forward, right after setting the state
        raise RuntimeError(f"TEAL forward called on a {type(self).__name__} without TEAL installed")
    keep = x.abs() > st.threshold
    if st.count:
        st.seen += keep.numel()
        st.zeroed += int(keep.numel() - keep.sum())
    # wt is only set when the kernel loaded (it is cached), so kernel is not None whenever wt is set
    kernel = load_kernel() if st.wt is not None else None
    if kernel is not None and st.wt is not None and x.numel() == st.wt.shape[0] and x.dtype == torch.float32:
        y: torch.Tensor = kernel.sparse_rows_matvec(x.reshape(-1).contiguous(), st.wt, st.threshold)
        bias = get_bias(self)
        if bias is not None:
            y = y + bias
        return y.view(*x.shape[:-1], -1)
    out: torch.Tensor = st.original_forward(x * keep)
    return out


def install_teal(
    model: nn.Module, thresholds: dict[str, float], kernel: str = "auto", skip_zero: bool = True
) -> nn.Module:
    """Install TEAL on ``model`` in place with per-layer ``thresholds`` (from :func:`calibrate_thresholds`).

    ``kernel``: "cpp" (compile/load the sparse matvec kernel, fail if impossible), "auto" (use it when
    it loads, otherwise the masked dense product), "torch" (masked dense product only).
    ``skip_zero``: layers whose threshold is 0 keep their original forward (exact). With ``False`` they
    are installed too (still exact, since only entries equal to 0 are dropped), so the kernel can skip the
    natural zeros after a ReLU (OPT's fc2 input is more than half zeros).
    """
    if kernel not in ("auto", "cpp", "torch"):
        raise ValueError(f"kernel={kernel!r} is not allowed; choose one of ['auto', 'cpp', 'torch']")
    uninstall_teal(model)
    use_kernel = False
    if kernel != "torch":
        use_kernel = load_kernel() is not None
        if kernel == "cpp" and not use_kernel:
            raise RuntimeError(
                "kernel='cpp' but the TEAL kernel could not be compiled; install g++ or use kernel='auto'"
            )
    layers = block_linears(model)
    unknown = sorted(set(thresholds) - set(layers))
    if unknown:
        raise KeyError(
            f"thresholds for layers this model does not have: {unknown[:5]}; known e.g. {sorted(layers)[:3]}"
        )
    for name, module in layers.items():
        if name not in thresholds:
            continue
        t = float(thresholds[name])
        if t < 0.0 or (t == 0.0 and skip_zero):
            continue  # exact: the original forward stays
        wt = None
        if use_kernel and get_weight(module).dtype == torch.float32:
            # [in, out]: Conv1D stores it so; get_weight gives [out, in] (a transposed view for Conv1D)
            w = get_weight(module)
            wt = w.detach().t().contiguous()
        state = TealState(threshold=t, use_kernel=wt is not None, wt=wt, original_forward=module.forward)
        set_attribute(module, "_shrinkwise_teal", state)
        set_attribute(module, "forward", types.MethodType(_teal_forward, module))
    return model


def uninstall_teal(model: nn.Module) -> nn.Module:
    for module in block_linears(model).values():
        if hasattr(module, "_shrinkwise_teal"):
            delattr(module, "forward")  # the class's forward shows through again
            delattr(module, "_shrinkwise_teal")
    return model


def installed_states(model: nn.Module) -> dict[str, TealState]:
    return {n: st for n, m in block_linears(model).items() if (st := _state(m)) is not None}


def set_counting(model: nn.Module, on: bool) -> None:
    """Start (resetting) or stop counting the input entries each installed layer zeroes."""
    for st in installed_states(model).values():
        st.count, st.seen, st.zeroed = on, 0, 0


def measured_sparsity(model: nn.Module) -> float:
    """Fraction of input entries zeroed over all installed layers since :func:`set_counting`."""
    states = installed_states(model).values()
    seen = sum(s.seen for s in states)
    return sum(s.zeroed for s in states) / seen if seen else 0.0


def skipped_flops_fraction(model: nn.Module) -> float:
    """Share of the block linears' multiply-adds skipped, weighting each layer's sparsity by its size."""
    total = skipped = 0.0
    for module in block_linears(model).values():
        n_w = get_weight(module).numel()
        total += n_w
        st = _state(module)
        if st is not None and st.seen:
            skipped += n_w * st.zeroed / st.seen
    return skipped / total if total else 0.0
