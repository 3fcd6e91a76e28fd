"""Sparse continued pre-training with a fixed mask (Sparse Llama).

Agarwalla et al., "Enabling High-Sparsity Foundational Llama Models with Efficient Pretraining and
Deployment", arXiv 2405.03594: prune a trained model one-shot (they use SparseGPT), then continue
pre-training it with the sparsity mask **fixed**: pruned weights stay zero and the remaining weights
learn to make up for them. The paper reports full accuracy recovery on fine-tuning tasks up to 70%
sparsity (Llama-2-7B) and CPU speed-ups of up to 3× (evidence.md).

Here, at the scale a CPU can do in minutes: the one-shot pruner is one of Shrinkwise's own
(``sparsegpt``, ``wanda`` or ``magnitude``, at the same sparsity and pattern), then ``steps`` AdamW
steps of next-token prediction on the user's text with the mask held fixed by gradient masking plus
re-masking after every step (:mod:`compressors.training.masked`), then every layer is packed back as
:class:`compressors.packed.SparseLinear` (bitmask + kept values, or N:M positions) so the size on disk
reflects the sparsity. The run reports perplexity dense, after one-shot pruning, and after training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    Compressor,
    CompressorId,
    CostEstimate,
    ModelShape,
    RunContext,
    check_choice,
    get_compressor,
    register,
)
from compressors.methods.layerwise import PATTERNS, check_pattern, layerwise_estimate
from compressors.training import masked
from compressors.training.config import TrainingConfig
from compressors.training.data import prepare, run_tokens
from compressors.training.loop import (
    TRAIN_UNCERTAINTY,
    eval_seconds,
    lm_loss,
    perplexity,
    step_seconds,
    train,
    train_memory_bytes,
    trainable,
)
from knowledge.ids import MethodId

log = logging.getLogger(__name__)

ONE_SHOT = ["sparsegpt", "wanda", "magnitude"]


@dataclass
class SparsePretrainingConfig(TrainingConfig):
    sparsity: float = field(
        default=0.5,
        metadata={"help": "Fraction of block weights pruned (unstructured)", "min": 0.0, "max": 0.95},
    )
    pattern: str = field(
        default="unstructured",
        metadata={
            "help": "unstructured, or N:M (N zeros in every M consecutive inputs)",
            "choices": PATTERNS,
        },
    )
    one_shot: str = field(
        default="sparsegpt",
        metadata={
            "help": "One-shot pruner that fixes the mask (Sparse Llama uses SparseGPT)",
            "choices": ONE_SHOT,
        },
    )
    train_embeddings: bool = field(
        default=False, metadata={"help": "Also train the token embeddings and output head (dense; slower)"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay", "min": 0.0, "max": 1.0})
    steps: int = field(
        default=200,
        metadata={"help": "Continued pre-training steps with the mask fixed", "min": 0, "max": 100000},
    )
    lr: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate", "min": 1e-7, "max": 1e-1})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pattern(self.pattern, self.sparsity)
        check_choice("one_shot", self.one_shot, ONE_SHOT)
        from compressors.training.config import check_float

        check_float("weight_decay", self.weight_decay, 0.0, 1.0)
        if not isinstance(self.train_embeddings, bool):
            from compressors.base import ConfigError

            raise ConfigError(f"train_embeddings={self.train_embeddings!r} must be true or false")


def _sub_context(ctx: RunContext, calibration: torch.Tensor, lo: float, hi: float) -> RunContext:
    """A context for the one-shot pruner whose progress fills ``[lo, hi]`` of this run's progress."""
    return ctx.span(lo, hi, calibration=calibration)


@register
class SparsePretraining(Compressor[SparsePretrainingConfig]):
    id = CompressorId("sparse-pretraining")
    implements = (MethodId("sparse-pretraining"),)
    name = "Sparse continued pre-training (Sparse Llama)"
    phase = "pre-training"
    impact = "static"
    needs_calibration = True
    needs_gradients = True
    output_format = "shrinkwise-packed"
    config_cls = SparsePretrainingConfig
    summary = (
        "Prunes one-shot (SparseGPT) and keeps training on your text with the sparsity mask fixed, so the "
        "remaining weights recover the quality pruning lost; saved sparse (bitmask)."
    )

    def __init__(self) -> None:
        self.last_report: dict[str, Any] = {}
        self.eval_tokens: torch.Tensor | None = None  # see LLMPruner.eval_tokens

    def whole_model_reason(self, config: SparsePretrainingConfig) -> str:
        """Why it does not stream block by block (:mod:`compressors.streaming`)."""
        return "its continued pre-training trains the whole model (gradients through every block)"

    def estimate(
        self, shape: ModelShape, config: SparsePretrainingConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        one = layerwise_estimate(shape, config.one_shot)
        emb = shape.vocab_size * shape.hidden_size
        trained = shape.n_params if config.train_embeddings else shape.n_params - emb
        tokens = config.batch_size * config.seq_len
        seconds = one.seconds + config.steps * step_seconds(shape, tokens, trained)
        seconds += eval_seconds(shape, 3 * max(config.val_windows, 4) * config.seq_len)
        mem = max(
            one.peak_memory_bytes,
            train_memory_bytes(shape, config.batch_size, config.seq_len, trained) + trained,
        )  # + bool masks
        return CostEstimate(
            int(mem),
            float(seconds),
            note=(
                f"one-shot {config.one_shot} ({one.seconds:.0f} s) then {config.steps} steps of "
                f"{config.batch_size}×{config.seq_len} tokens, {trained:,} parameters trained with AdamW"
            ),
            uncertainty=TRAIN_UNCERTAINTY,
            basis=one.basis,
        )

    def compress(self, model: Any, tokenizer: Any, config: SparsePretrainingConfig, ctx: RunContext) -> Any:
        device = torch.device(ctx.device)
        model.to(device)
        torch.manual_seed(ctx.seed)
        calib = run_tokens(ctx, tokenizer)
        sampler, val = prepare(
            ctx if ctx.calibration is not None else _sub_context(ctx, calib, 0, 1),
            tokenizer,
            config.seq_len,
            config.val_windows,
            config.batch_size,
        )
        measure = self.eval_tokens if self.eval_tokens is not None else val
        t0 = time.perf_counter()
        report: dict[str, Any] = {
            "sparsity": config.sparsity,
            "pattern": config.pattern,
            "one_shot": config.one_shot,
        }
        report["ppl_dense"] = perplexity(model, measure, config.batch_size)

        pruner = get_compressor(CompressorId(config.one_shot))
        pruner.compress(
            model,
            tokenizer,
            pruner.config_cls.from_dict({"sparsity": config.sparsity, "pattern": config.pattern}),
            _sub_context(ctx, calib, 0.0, 0.3),
        )
        model.to(device)
        t1 = time.perf_counter()
        report["one_shot_seconds"] = round(t1 - t0, 2)
        report["ppl_one_shot"] = perplexity(model, measure, config.batch_size)
        ctx.report(
            "one-shot",
            0.32,
            f"{config.one_shot} {config.pattern} at {config.sparsity:.0%}: perplexity "
            f"{report['ppl_dense']:.3f} → {report['ppl_one_shot']:.3f}",
        )

        layers, masks, patterns = masked.densify(model)
        fixed = masked.FixedMask(layers, masks)
        report["mask_sparsity"] = round(fixed.sparsity(), 4)
        if config.steps:
            emb_ids = {id(model.get_input_embeddings().weight)}
            if model.get_output_embeddings() is not None:
                emb_ids.add(id(model.get_output_embeddings().weight))
            params = trainable(model, lambda n, p: config.train_embeddings or id(p) not in emb_ids)
            model.train()
            tlog = train(
                params,
                lambda b: lm_loss(model, b),
                sampler,
                config.steps,
                config.lr,
                ctx,
                weight_decay=config.weight_decay,
                after_step=fixed.apply,
                stage="sparse-train",
                fraction=(0.33, 0.97),
                device=device,
            )
            model.eval()
            report["training"] = tlog.summary()
        fixed.remove()
        for p in model.parameters():
            p.requires_grad_(False)
        masked.pack(model, layers, masks, patterns)
        report["ppl_trained"] = perplexity(model, measure, config.batch_size)
        report["train_seconds"] = round(time.perf_counter() - t1, 2)
        ctx.report(
            "done",
            1.0,
            f"perplexity dense {report['ppl_dense']:.3f}, one-shot {report['ppl_one_shot']:.3f}, "
            f"after {config.steps} steps {report['ppl_trained']:.3f}",
        )
        self.last_report = report
        return model
