"""The sequential, layer-by-layer calibration driver shared by GPTQ, SpQR, SparseGPT and Wanda.

How a layer-wise post-training compressor walks a model (GPTQ paper, section 4 and its ``opt.py``):

1. capture what block 0 receives for every calibration sequence (hidden states + the keyword
   arguments transformers passes: rotary embeddings, masks, ...);
2. for each block: put forward hooks on its linear layers that fold their inputs into a statistic
   (the Hessian ``2XXᵀ`` for GPTQ/SpQR/SparseGPT, per-input squared norms for Wanda), run the block on
   every sequence, solve each layer and swap it for its packed replacement;
3. run the block once more, now compressed, and use its outputs as the next block's inputs, so every
   layer is calibrated on what the already-compressed earlier layers really produce.

"True sequential" (the GPTQ repo's ``--true-sequential``): inside a block, layers that read the same
tensor (q/k/v; gate/up) form one step and are solved together, and steps run in execution order, so
``o_proj`` sees the output of already-quantized q/k/v and ``down_proj`` that of quantized gate/up. The
steps are found by running the block with hooks and grouping layers whose input is the same tensor,
so no per-architecture table is needed. Each step's pass stops as soon as its layers have run.

Memory: two ``[n_samples, seq, hidden]`` float buffers (inputs and outputs of the current block) and
one statistic per layer of the current step; nothing is kept across blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import CompressionError, RunContext
from compressors.layers import capture_block_inputs, find_blocks, linear_layers, run_block, set_module
from compressors.ops.hessian import accumulate_hessian, accumulate_sq_norms
from compressors.progress import Count

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

STATS = ("hessian", "sq_norms")


@dataclass
class LayerStats:
    """What the hooks collected for one linear layer: the statistic and the number of tokens seen."""

    name: str
    kind: str
    value: torch.Tensor
    n_tokens: int = 0

    def add(self, inp: torch.Tensor) -> None:
        if self.kind == "hessian":
            self.n_tokens = accumulate_hessian(self.value, self.n_tokens, inp)
        else:
            self.n_tokens = accumulate_sq_norms(self.value, self.n_tokens, inp)


# solve(block index, layer name within the block, layer, its statistics) -> replacement module or None
SolveFn = Callable[[int, str, nn.Module, LayerStats], nn.Module | None]
# make_stats(block index, layer name within the block, layer, number of calibration samples, run seed):
# a statistic of the method's own (a LayerStats subclass whose ``add`` folds in one input)
StatsFactory = Callable[[int, str, nn.Module, int, int], LayerStats]
# finish(model, ctx): called once after the last block; in a streamed run the model is on the meta device
# (its config is real, its weights are not), so this may record results in the config, not read weights
FinishFn = Callable[["PreTrainedModel", RunContext], None]


class _Stop(Exception):
    pass


@dataclass
class SequentialReport:
    """What happened, per layer: ``{full name: {"seconds": ..., **what solve returned in .info}}``."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


def _in_features(module: nn.Module) -> int:
    from compressors.layers import in_out_features

    return in_out_features(module)[0]


@torch.no_grad()
def find_steps(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> list[list[str]]:
    """Group the block's linear layers into steps of layers reading the same input, in execution order."""
    layers = linear_layers(block)
    seen: list[tuple[str, int, tuple[int, ...]]] = []
    handles = []
    for name, m in layers.items():

        def hook(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            x = args[0]
            seen.append((name, x.data_ptr(), tuple(x.shape)))

        handles.append(m.register_forward_pre_hook(hook))
    try:
        run_block(block, hidden[:1], kwargs)
    finally:
        for h in handles:
            h.remove()
    steps: list[list[str]] = []
    keys: list[tuple[int, tuple[int, ...]]] = []
    done = set()
    for name, ptr, shape in seen:
        if name in done:
            continue
        done.add(name)
        key = (ptr, shape)
        if keys and keys[-1] == key:
            steps[-1].append(name)
        else:
            steps.append([name])
            keys.append(key)
    missing = [n for n in layers if n not in done]
    if missing:  # never called on this input (e.g. a cross-attention branch): leave them alone
        log.warning("linear layers not reached by the forward pass, left uncompressed: %s", missing)
    return steps


WeightSolveFn = Callable[[int, str, nn.Module], nn.Module | None]


@dataclass(frozen=True)
class BlockStep:
    """How a compressor treats one decoder block on its own: all the streaming driver
    (:mod:`compressors.streaming`) and the whole-model walk need, so both run the same code.

    A calibrated method (GPTQ, SparseGPT, Wanda, SpQR) names the statistic its hooks collect (``stat``:
    "hessian" or "sq_norms") and its ``solve``; a data-free one (RTN, magnitude, int8) gives
    ``solve_weight``, which sees the layer only. ``true_sequential`` and ``stage`` are those of
    :func:`sequential_compress`.

    A method that only *measures* its layers (TEAL's activation thresholds) names a statistic of its own
    with ``make_stats`` (any ``stat`` name then), lets ``solve`` return None (the block stays as it is)
    and collects its results in ``finish``, called once after the last block. ``max_calib_samples``: use
    only the first so many calibration windows (TEAL's ``calib_samples``); None: all of them.
    ``stat_bytes_per_layer``: what such a statistic holds per layer, for the streamed memory estimate
    (:func:`compressors.streaming.streamed_peak_bytes`).
    """

    stat: str | None = None
    solve: SolveFn | None = None
    solve_weight: WeightSolveFn | None = None
    true_sequential: bool = True
    stage: str = "calibrate"
    make_stats: StatsFactory | None = None
    finish: FinishFn | None = None
    max_calib_samples: int | None = None
    #: bytes one layer's statistic holds, for the memory estimate (None: what ``stat`` implies)
    stat_bytes_per_layer: int | None = None

    def __post_init__(self) -> None:
        if self.stat is None and self.solve_weight is None:
            raise ValueError("a data-free BlockStep needs solve_weight")
        if self.stat is not None and (
            self.solve is None or (self.stat not in STATS and self.make_stats is None)
        ):
            raise ValueError(
                f"a calibrated BlockStep needs solve and stat in {list(STATS)} (or make_stats for a "
                f"statistic of its own); got {self.stat!r}"
            )
        if self.max_calib_samples is not None and self.max_calib_samples < 1:
            raise ValueError(f"max_calib_samples={self.max_calib_samples!r} must be at least 1")

    @property
    def needs_inputs(self) -> bool:
        """Whether the block's calibration inputs must be computed (and carried to the next block)."""
        return self.stat is not None


@torch.no_grad()
def compress_block_weights(
    block: nn.Module,
    bi: int,
    n_blocks: int,
    solve_weight: WeightSolveFn,
    ctx: RunContext,
    count: tuple[int, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Compress the linear layers of one block from their weights alone (RTN, magnitude); in place.

    Replacement modules are moved to the device of the layer they replace. ``count``: as in
    :func:`compress_block`.
    """
    import time

    layers = linear_layers(block)
    info: dict[str, dict[str, Any]] = {}
    for k, (name, layer) in enumerate(layers.items()):
        ctx.check_cancelled()
        t0 = time.perf_counter()
        new = solve_weight(bi, name, layer)
        if new is not None:
            set_module(block, name, new.to(_device_of(layer)))
        info[name] = {"seconds": round(time.perf_counter() - t0, 3)}
        ctx.report(
            f"block {bi + 1}/{n_blocks}",
            (bi + (k + 1) / len(layers)) / n_blocks,
            name,
            count=None if count is None else Count(min(count[0] + k + 1, count[1]), count[1], "layers"),
        )
    return info


def _device_of(module: nn.Module) -> torch.device:
    return next(iter(module.parameters()), next(iter(module.buffers()), torch.empty(0))).device


@torch.no_grad()
def compress_block(
    block: nn.Module,
    bi: int,
    n_blocks: int,
    hidden: torch.Tensor,
    kwargs: dict[str, Any],
    stat: str,
    solve: SolveFn,
    ctx: RunContext,
    true_sequential: bool = True,
    count: tuple[int, int] | None = None,
    make_stats: StatsFactory | None = None,
) -> tuple[torch.Tensor, dict[str, dict[str, Any]]]:
    """Compress one block on its calibration inputs ``hidden`` ``[n, seq, hidden]``; in place.

    ``count``: (layers solved before this block, layers in the whole model), so every report carries
    the model-wide count its ETA is measured on. ``make_stats``: see :class:`BlockStep` (default: a
    zeroed float32 ``stat``).

    Returns the outputs of the *compressed* block (the next block's inputs, GPTQ's sequential mode) and
    per-layer info. Statistics are float32 on ``hidden``'s device; replacement modules are moved there.
    """
    import time

    if true_sequential:
        steps = find_steps(block, hidden, kwargs)
    else:
        steps = [[name for name in linear_layers(block)]]
    n = hidden.shape[0]
    n_layers = sum(len(s) for s in steps)
    done_layers = 0
    info_by_layer: dict[str, dict[str, Any]] = {}
    out = torch.empty_like(hidden)
    # the last step's pass runs the whole block; when that step replaces nothing (a method that only
    # measures, as TEAL), its outputs are already the next block's inputs and need no second pass
    outputs_final = False
    for step in steps:
        layers = linear_layers(block)
        stats: dict[str, LayerStats] = {}
        for name in step:
            if make_stats is not None:
                stats[name] = make_stats(bi, name, layers[name], n, ctx.seed)
                continue
            in_f = _in_features(layers[name])
            shape = (in_f, in_f) if stat == "hessian" else (in_f,)
            stats[name] = LayerStats(
                name, stat, torch.zeros(shape, dtype=torch.float32, device=hidden.device)
            )
        called: set[str] = set()
        last_step = step is steps[-1] or not true_sequential
        handles = []
        for name in step:
            # bound as defaults: each step's hooks are removed before the next step starts,
            # but binding keeps a stray late call from touching the next step's state
            def hook(
                mod: nn.Module,
                args: tuple[Any, ...],
                out: Any,
                name: str = name,
                stats: dict[str, LayerStats] = stats,
                called: set[str] = called,
                last_step: bool = last_step,
                step: list[str] = step,
            ) -> None:
                stats[name].add(args[0])
                called.add(name)
                if not last_step and len(called) == len(step):
                    raise _Stop  # the rest of the block is not needed for this step

            handles.append(layers[name].register_forward_hook(hook))
        try:
            for i in range(n):
                called.clear()
                try:
                    y = run_block(block, hidden[i : i + 1], kwargs)
                    if last_step:
                        out[i : i + 1] = y
                except _Stop:
                    pass
        finally:
            for h in handles:
                h.remove()
        replaced = False
        for name in step:
            ctx.check_cancelled()
            t0 = time.perf_counter()
            layer = layers[name]
            new = solve(bi, name, layer, stats[name])
            if new is not None:
                set_module(block, name, new.to(hidden.device))
                replaced = True
            info = dict(getattr(new, "_solve_info", {}) or {})
            info["seconds"] = round(time.perf_counter() - t0, 3)
            info_by_layer[name] = info
            done_layers += 1
            extra = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            ctx.report(
                f"block {bi + 1}/{n_blocks}",
                (bi + done_layers / max(n_layers, 1)) / n_blocks,
                f"{name}: {extra}",
                count=None
                if count is None
                else Count(min(count[0] + done_layers, count[1]), count[1], "layers"),
            )
            del stats[name]
        outputs_final = last_step and not replaced
    if not outputs_final:  # outputs of the compressed block are the next block's inputs
        for i in range(n):
            out[i : i + 1] = run_block(block, hidden[i : i + 1], kwargs)
    return out, info_by_layer


@torch.no_grad()
def sequential_compress(
    model: PreTrainedModel,
    tokens: torch.Tensor,
    stat: str,
    solve: SolveFn,
    ctx: RunContext,
    true_sequential: bool = True,
    stage: str = "calibrate",
) -> SequentialReport:
    """Compress ``model`` block by block with ``solve`` (see module docstring); returns per-layer info.

    ``tokens``: ``[n_samples, seq_len]`` calibration token ids. ``stat``: "hessian" or "sq_norms".
    ``solve`` may return a module to put in place of the layer, or None to leave it. Each block is
    :func:`compress_block`, which the streaming driver calls too.
    """
    import time

    if stat not in STATS:
        raise ValueError(f"stat={stat!r} is not known; choose one of {list(STATS)}")
    check_tokens(tokens)
    t_start = time.perf_counter()
    report = SequentialReport()
    path, blocks = find_blocks(model)
    was_training = model.training
    model.eval()
    use_cache = getattr(getattr(model, "config", None), "use_cache", None)
    ctx.report(
        stage,
        0.0,
        f"capturing the inputs of block 0 for {tokens.shape[0]}×{tokens.shape[1]} calibration tokens",
    )
    hidden, kwargs = capture_block_inputs(model, tokens)
    n_blocks = len(blocks)
    all_layers = sum(len(linear_layers(b)) for b in blocks)  # the count the ETA is measured on
    solved = 0
    ctx.report(stage, 0.0, count=Count(0, all_layers, "layers"))
    try:
        for bi, block in enumerate(blocks):
            ctx.check_cancelled()
            hidden, info = compress_block(
                block,
                bi,
                n_blocks,
                hidden,
                kwargs,
                stat,
                solve,
                ctx,
                true_sequential=true_sequential,
                count=(solved, all_layers),
            )
            solved += len(info)
            for name, layer_info in info.items():
                report.layers[f"{path}.{bi}.{name}"] = layer_info
    finally:
        if was_training:
            model.train()
        if use_cache is not None:
            model.config.use_cache = use_cache
    report.seconds = time.perf_counter() - t_start
    return report


def check_tokens(tokens: torch.Tensor | None) -> None:
    """Refuse calibration tokens that are not ``[n_samples, seq_len]`` with at least one sample."""
    if tokens is None or tokens.dim() != 2 or tokens.shape[0] == 0:
        raise CompressionError(
            "this method needs calibration data: pass ctx.calibration as a [n_samples, seq_len] token tensor"
        )


def calibration_tokens(ctx: RunContext) -> torch.Tensor:
    """The calibration tokens of a run, checked: the error says how to provide them."""
    tok = ctx.calibration
    if tok is None:
        raise CompressionError(
            "this compressor needs calibration data; the runner fills RunContext.calibration with "
            "[n_samples, seq_len] token ids (shrinkwise compress --calib FILE, or the built-in text)"
        )
    tok = torch.as_tensor(tok)
    if tok.dim() == 1:
        tok = tok[None]
    return tok.long()
