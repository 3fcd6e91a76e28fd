"""Selective-intervention knowledge distillation into a layer-dropped student.

The paper's reference [6]: Tatarnikova & Mokretsov, "A knowledge distillation method for language
models based on selective intervention in training", Software & Systems, 2025 No. 2. Its full text is
not available to this project, so Shrinkwise implements the idea as its title and the reviewed
survey describe it, and says exactly what it does:

* **student**: a copy of the teacher with some decoder blocks removed (``drop_ratio``, ``layer_rule``;
  :mod:`compressors.training.student`), optionally with MLP channels pruned too (``mlp_ratio``, ranked
  by first-order Taylor importance as in LLM-Pruner), initialised from the teacher's weights;
* **signal**: per-token KL(teacher ‖ student) of the next-token distributions at temperature ``T``,
  plus optionally a hidden-state MSE between each student block and the teacher block it came from
  (``hidden_weight``);
* **selective intervention**: in each batch only the ``select_fraction`` of tokens with the largest KL
  (where teacher and student disagree most) carry weight 1; the others carry ``floor`` (0 = skipped).
  The loss is the weighted mean (:mod:`compressors.training.distill`). ``select_fraction = 1`` is plain
  distillation, the baseline it is compared with at equal steps in ``benchmarks/training_methods.py``.

The student saves as a standard transformers checkpoint of the same architecture (fewer layers in
``config.json``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    CompressionError,
    Compressor,
    CompressorId,
    CostEstimate,
    ModelShape,
    RunContext,
    check_choice,
    register,
)
from compressors.throughput import get_throughput
from compressors.training import distill, structural
from compressors.training import student as student_mod
from compressors.training.config import TrainingConfig, check_float
from compressors.training.data import BatchSampler, prepare
from compressors.training.loop import (
    TRAIN_UNCERTAINTY,
    eval_seconds,
    n_params,
    perplexity,
    step_seconds,
    train,
    train_memory_bytes,
    trainable,
)
from knowledge.ids import MethodId

if TYPE_CHECKING:  # transformers is imported lazily (it costs seconds); only its types are needed here
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass
class SelectiveDistillationConfig(TrainingConfig):
    drop_ratio: float = field(
        default=0.25,
        metadata={
            "help": "Share of decoder blocks the student drops (rounded to whole blocks; at least one is kept)",
            "min": 0.0,
            "max": 0.9,
        },
    )
    layer_rule: str = field(
        default="uniform",
        metadata={
            "help": "Which blocks stay: uniform = evenly spaced keeping the first and last, middle = drop a "
            "contiguous run from the middle",
            "choices": student_mod.RULES,
        },
    )
    mlp_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Share of MLP channels also pruned from the student (Taylor-ranked; Llama-style models only)",
            "min": 0.0,
            "max": 0.9,
        },
    )
    select_fraction: float = field(
        default=0.25,
        metadata={
            "help": "Share of tokens per batch, those with the largest teacher–student KL, that carry the loss "
            "(1.0 = plain distillation)",
            "min": 0.01,
            "max": 1.0,
        },
    )
    floor: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the tokens not selected (0 = skipped, 1 = plain distillation)",
            "min": 0.0,
            "max": 1.0,
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Softmax temperature of the KL", "min": 0.1, "max": 20.0}
    )
    hidden_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the hidden-state MSE between each student block and its teacher block (0 = logits only)",
            "min": 0.0,
            "max": 100.0,
        },
    )
    train_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Also train the token embeddings and output head (slower; most of a small model's parameters)"
        },
    )
    steps: int = field(default=100, metadata={"help": "Distillation steps", "min": 0, "max": 100000})
    lr: float = field(
        default=1e-4, metadata={"help": "Peak AdamW learning rate of the student", "min": 1e-7, "max": 1e-1}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("drop_ratio", self.drop_ratio, 0.0, 0.9)
        check_choice("layer_rule", self.layer_rule, student_mod.RULES)
        check_float("mlp_ratio", self.mlp_ratio, 0.0, 0.9)
        check_float("select_fraction", self.select_fraction, 0.01, 1.0)
        check_float("floor", self.floor, 0.0, 1.0)
        check_float("temperature", self.temperature, 0.1, 20.0)
        check_float("hidden_weight", self.hidden_weight, 0.0, 100.0)
        if not isinstance(self.train_embeddings, bool):
            from compressors.base import ConfigError

            raise ConfigError(f"train_embeddings={self.train_embeddings!r} must be true or false")

    @property
    def is_plain(self) -> bool:
        return self.select_fraction >= 1.0 or self.floor >= 1.0


def n_keep(n_layers: int, drop_ratio: float) -> int:
    return max(1, n_layers - int(round(drop_ratio * n_layers)))


class DistillLoss:
    """``loss(batch)`` of a student against a frozen teacher, and the last batch's token weights."""

    def __init__(
        self,
        teacher: PreTrainedModel,
        student: PreTrainedModel,
        keep: list[int],
        config: SelectiveDistillationConfig,
    ) -> None:
        self.teacher, self.student, self.keep, self.c = teacher, student, keep, config
        self.last_weights: torch.Tensor | None = None
        self.last_kl: torch.Tensor | None = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        c = self.c
        want_hidden = c.hidden_weight > 0
        with torch.no_grad():
            t_out = self.teacher(input_ids=batch, use_cache=False, output_hidden_states=want_hidden)
        s_out = self.student(input_ids=batch, use_cache=False, output_hidden_states=want_hidden)
        kl = distill.per_token_kl(t_out.logits, s_out.logits, c.temperature)
        w = torch.ones_like(kl) if c.is_plain else distill.selective_weights(kl, c.select_fraction, c.floor)
        loss = distill.weighted_mean(kl, w)
        if want_hidden:
            per_tok = torch.zeros_like(kl)
            for j, ti in enumerate(self.keep):  # hidden_states[0] is the embedding output
                per_tok = per_tok + distill.hidden_mse(
                    s_out.hidden_states[j + 1], t_out.hidden_states[ti + 1]
                )
            loss = loss + c.hidden_weight * distill.weighted_mean(per_tok / len(self.keep), w)
        self.last_weights, self.last_kl = w.detach(), kl.detach()
        return loss


@register
class SelectiveDistillation(Compressor[SelectiveDistillationConfig]):
    id = CompressorId("selective-distillation")
    implements = (MethodId("selective-distillation"),)
    name = "Selective-intervention distillation"
    phase = "fine-tuning"
    impact = "static"
    needs_calibration = True
    needs_gradients = True
    output_format = "transformers"
    config_cls = SelectiveDistillationConfig
    summary = (
        "Distils the model into a copy with fewer layers; the loss is concentrated on the tokens where "
        "teacher and student disagree most. Saves as a standard transformers checkpoint."
    )

    def __init__(self) -> None:
        self.last_report: dict[str, Any] = {}
        self.eval_tokens: torch.Tensor | None = None  # see LLMPruner.eval_tokens

    def whole_model_reason(self, config: SelectiveDistillationConfig) -> str:
        """Why it does not stream block by block (:mod:`compressors.streaming`)."""
        return "it trains a student against the whole teacher's outputs (gradients through every block)"

    def estimate(
        self, shape: ModelShape, config: SelectiveDistillationConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        keep = n_keep(shape.n_layers, config.drop_ratio)
        emb = shape.vocab_size * shape.hidden_size
        block = (shape.n_params - emb) / max(shape.n_layers, 1)
        s_params = int(emb + keep * block)
        small = ModelShape(
            n_params=s_params,
            n_layers=keep,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            vocab_size=shape.vocab_size,
            n_heads=shape.n_heads,
            n_kv_heads=shape.n_kv_heads,
            dtype_bytes=shape.dtype_bytes,
        )
        trained = s_params if config.train_embeddings else int(keep * block)
        tokens = config.batch_size * config.seq_len
        teacher_ratio = shape.n_params / max(s_params, 1)
        seconds = config.steps * step_seconds(small, tokens, trained, forward_models=1.0 + teacher_ratio)
        seconds += eval_seconds(shape, 3 * max(config.val_windows, 4) * config.seq_len)
        mem = (
            train_memory_bytes(small, config.batch_size, config.seq_len, trained)
            + shape.n_params * shape.dtype_bytes
            + tokens * shape.vocab_size * 4 * 2
        )  # teacher logits and softmax
        return CostEstimate(
            int(mem),
            float(seconds),
            note=(
                f"student keeps {keep}/{shape.n_layers} layers (~{s_params:,} parameters); {config.steps} steps of "
                f"{config.batch_size}×{config.seq_len} tokens with a teacher forward pass each"
            ),
            uncertainty=TRAIN_UNCERTAINTY,
            basis=get_throughput().describe(),
        )

    def compress(
        self, model: Any, tokenizer: Any, config: SelectiveDistillationConfig, ctx: RunContext
    ) -> Any:
        from compressors.layers import find_blocks

        device = torch.device(ctx.device)
        model.to(device)
        torch.manual_seed(ctx.seed)
        _, blocks = find_blocks(model)
        keep = student_mod.choose_layers(
            len(blocks), n_keep(len(blocks), config.drop_ratio), config.layer_rule
        )
        sampler, val = prepare(ctx, tokenizer, config.seq_len, config.val_windows, config.batch_size)
        measure = self.eval_tokens if self.eval_tokens is not None else val
        t0 = time.perf_counter()
        teacher = model.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        report: dict[str, Any] = {
            "selection": "plain (uniform weights)"
            if config.is_plain
            else f"top {config.select_fraction:.0%} tokens by KL weight 1, others {config.floor}",
            "layers": f"{len(blocks)} -> {len(keep)}",
            "kept_layers": keep,
            "params_teacher": n_params(teacher),
        }
        report["ppl_teacher"] = perplexity(teacher, measure, config.batch_size)

        student = student_mod.drop_layers(teacher, keep)
        if config.mlp_ratio > 0:
            self._prune_mlp(student, sampler, config, ctx)
        report["params_student"] = n_params(student)
        report["ppl_student_before"] = perplexity(student, measure, config.batch_size)
        ctx.report(
            "student",
            0.08,
            f"student {report['layers']} layers, perplexity before distillation "
            f"{report['ppl_student_before']:.3f} (teacher {report['ppl_teacher']:.3f})",
        )
        if config.steps:
            emb_ids = {id(student.get_input_embeddings().weight)}
            out_emb = student.get_output_embeddings()
            if out_emb is not None:
                emb_ids.add(id(out_emb.weight))
            params = trainable(student, lambda n, p: config.train_embeddings or id(p) not in emb_ids)
            student.train()
            loss = DistillLoss(teacher, student, keep, config)
            tlog = train(
                params,
                loss,
                sampler,
                config.steps,
                config.lr,
                ctx,
                stage="distill",
                fraction=(0.1, 0.97),
                device=device,
            )
            student.eval()
            for p in student.parameters():
                p.requires_grad_(False)
            report["distillation"] = tlog.summary()
            w, kl = loss.last_weights, loss.last_kl  # both set by every loss call
            if w is not None and kl is not None:
                report["last_batch_kl_share_selected"] = round(
                    float((w * kl).sum() / kl.sum().clamp_min(1e-12)), 4
                )
        report["ppl_student_after"] = perplexity(student, measure, config.batch_size)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        ctx.report(
            "done",
            1.0,
            f"student perplexity {report['ppl_student_before']:.3f} → {report['ppl_student_after']:.3f} "
            f"(teacher {report['ppl_teacher']:.3f})",
        )
        self.last_report = report
        return student

    @staticmethod
    def _prune_mlp(
        student: PreTrainedModel, sampler: BatchSampler, config: SelectiveDistillationConfig, ctx: RunContext
    ) -> None:
        """Width-prune the student's MLP channels by Taylor importance (LLM-Pruner's ranking, heads kept)."""
        try:
            blocks = structural.check_supported(student)
        except CompressionError as exc:
            raise CompressionError(
                f"mlp_ratio={config.mlp_ratio} needs a Llama-style MLP; set mlp_ratio=0. {exc}"
            ) from None
        a = structural.attention_shape(student)
        cfg = (
            student.config.get_text_config() if hasattr(student.config, "get_text_config") else student.config
        )
        batches = [sampler.next() for _ in range(2)]
        imp = structural.taylor_importance(student, batches, ctx, fraction=(0.02, 0.07))
        p = structural.plan(
            imp, len(blocks), a, int(cfg.intermediate_size), 0.0, config.mlp_ratio, "kv-groups"
        )
        structural.apply_plan(student, p)
