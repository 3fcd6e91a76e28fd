"""A small training loop: AdamW, linear warm-up then cosine decay, one progress report per step.

Written for short CPU runs (hundreds of steps of 4×128-token batches on a 135 M-parameter model), and
device-agnostic: the model and the batches sit wherever :attr:`RunContext.device` says (a GPU when the
runner found one). Every step calls :meth:`RunContext.report`, which raises :class:`Cancelled` when the
user cancelled, so a cancel stops the run within one step.

Also here: perplexity on token windows (the in-run "before / after" figure), and the step-time model
the ``estimate`` functions use: operation counts divided by this machine's measured throughput
(:mod:`compressors.throughput`). A forward pass costs ``2·N`` FLOPs per token for ``N`` parameters, the
backward pass ``2·N`` for the activation gradients plus ``2·N_trained`` for the weight gradients of the
parameters that train; each step also runs about :data:`STEP_OPS_PER_LAYER` small torch ops per block
(forward, backward and the optimizer), whose cost is the probe's per-op overhead.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from compressors.base import ModelShape, RunContext
from compressors.throughput import Throughput, Work, forward_work, get_throughput
from compressors.training.data import BatchSampler

log = logging.getLogger(__name__)

# torch ops per decoder block and training step: ~80 forward, twice that backward, and AdamW's
# per-tensor updates (about 10 ops for each of a block's ~9 parameter tensors)
STEP_OPS_PER_LAYER = 330
FORWARD_OPS_PER_LAYER = 80
# training runs its matmuls (small batches, transposed operands in the backward) below the probe's
# square-matmul rate, and an estimate of many steps compounds it: the stated error factor
TRAIN_UNCERTAINTY = 3.0


@dataclass
class TrainLog:
    """What a training run did: loss per step and wall time."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    epochs: int = 0

    @property
    def step_seconds(self) -> float:
        return self.seconds / max(self.steps, 1)

    def summary(self) -> dict[str, float]:
        first = self.losses[: max(1, len(self.losses) // 10)]
        last = self.losses[-max(1, len(self.losses) // 10) :]
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "step_seconds": round(self.step_seconds, 4),
            "loss_first": round(sum(first) / len(first), 4) if first else float("nan"),
            "loss_last": round(sum(last) / len(last), 4) if last else float("nan"),
            "epochs": self.epochs,
        }


def lr_at(step: int, steps: int, lr: float, warmup: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final_fraction · lr``."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    span = max(steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    params: Iterable[nn.Parameter],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    sampler: BatchSampler,
    steps: int,
    lr: float,
    ctx: RunContext,
    *,
    weight_decay: float = 0.0,
    warmup: int | None = None,
    grad_clip: float = 1.0,
    after_step: Callable[[], None] | None = None,
    stage: str = "train",
    fraction: tuple[float, float] = (0.0, 1.0),
    device: torch.device | None = None,
) -> TrainLog:
    """Run ``steps`` AdamW steps of ``loss_fn(batch)`` over batches from ``sampler``.

    ``after_step`` runs after every optimizer step (e.g. re-applying a fixed sparsity mask).
    ``fraction`` maps this loop's progress into the run's overall progress range.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    log_ = TrainLog()
    if steps == 0:
        return log_
    warmup = max(1, steps // 10) if warmup is None else warmup
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    lo, hi = fraction
    t0 = time.perf_counter()
    for step in range(steps):
        ctx.check_cancelled()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        batch = sampler.next()
        if device is not None:
            batch = batch.to(device)
        loss = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {step + 1}; lower the learning rate (lr={lr})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if after_step is not None:
            after_step()
        log_.losses.append(float(loss.detach()))
        log_.steps = step + 1
        ctx.report(
            stage, lo + (hi - lo) * (step + 1) / steps, f"step {step + 1}/{steps} loss {log_.losses[-1]:.4f}"
        )
    log_.seconds = time.perf_counter() - t0
    log_.epochs = sampler.epochs
    opt.zero_grad(set_to_none=True)
    del opt
    return log_


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on ``batch`` ``[b, seq]``."""
    loss: torch.Tensor = model(input_ids=batch, labels=batch, use_cache=False).loss
    return loss


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> float:
    """exp(mean next-token NLL) over every predicted token of ``windows`` ``[n, seq]`` (NaN when empty)."""
    if windows.numel() == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        batch = windows[i : i + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(nll)
        count += batch[:, 1:].numel()
    model.train(was_training)
    return math.exp(total / count)


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameters counted once (tied embeddings are one tensor)."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def step_work(
    shape: ModelShape, tokens_per_step: int, trained_params: int, forward_models: float = 1.0
) -> Work:
    """Operation counts of one training step (see module docstring).

    ``forward_models``: extra forward-only passes per step in units of the model (a distillation teacher).
    """
    n = shape.n_params
    flops = tokens_per_step * (2 * n + 2 * n + 2 * trained_params + 2 * n * max(forward_models - 1.0, 0.0))
    mm = Work(matmul_flops_half=flops) if shape.dtype_bytes == 2 else Work(matmul_flops=flops)
    extra = max(forward_models - 1.0, 0.0)  # the teacher's passes: forward ops only
    return mm + Work(small_ops=float(shape.n_layers * (STEP_OPS_PER_LAYER + FORWARD_OPS_PER_LAYER * extra)))


def step_seconds(
    shape: ModelShape,
    tokens_per_step: int,
    trained_params: int,
    forward_models: float = 1.0,
    throughput: Throughput | None = None,
) -> float:
    """Estimated seconds of one training step on this machine (:func:`step_work` / measured rates)."""
    return step_work(shape, tokens_per_step, trained_params, forward_models).seconds(
        throughput or get_throughput()
    )


def eval_seconds(shape: ModelShape, tokens: int, throughput: Throughput | None = None) -> float:
    """Estimated seconds of forward passes over ``tokens`` tokens (perplexity measurements)."""
    return forward_work(shape.n_params, tokens, shape.dtype_bytes).seconds(throughput or get_throughput())


def train_memory_bytes(
    shape: ModelShape, batch: int, seq: int, trained_params: int, models: float = 1.0
) -> int:
    """Peak memory of a training step: weights (``models`` copies), gradients and two AdamW moments of
    the trained parameters, and activations kept for the backward pass (about 16 hidden-size vectors and
    4 intermediate-size vectors per token and layer, attention scores, and the float32 logits plus their
    gradient and log-softmax)."""
    b = shape.dtype_bytes
    weights = models * shape.n_params * b
    optim = trained_params * 4 * 3
    tokens = batch * seq
    acts = tokens * shape.n_layers * (16 * shape.hidden_size + 4 * shape.intermediate_size) * 4
    attn = batch * shape.n_heads * seq * seq * 4 * 2
    logits = tokens * shape.vocab_size * 4 * 3
    return int(weights + optim + acts + attn + logits)


def trainable(model: nn.Module, predicate: Callable[[str, nn.Parameter], bool]) -> list[nn.Parameter]:
    """Set ``requires_grad`` from ``predicate(name, param)`` and return the trainable parameters."""
    out = []
    for name, p in model.named_parameters():
        p.requires_grad_(bool(predicate(name, p)))
        if p.requires_grad:
            out.append(p)
    return out
