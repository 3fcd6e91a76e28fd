"""AIM: token merging then progressive attention-based pruning (Zhong et al., arXiv 2412.03248, ICCV 2025),
adapted from video/image tokens to text prompts.

The paper's two steps, on a training-free multimodal LLM:
1. before the LLM, similar *visual* tokens are merged by iterative bipartite soft matching on their
   embeddings (redundant frames and patches are very similar);
2. inside the LLM, from a chosen layer on, visual tokens are pruned by their attention importance to the
   text tokens, with a retention ratio that falls layer after layer.

Here, for a text prompt:
1. at the input of ``merge_layer`` (default 2; 0 = before the first layer, where AIM merges), a share
   ``merge_ratio`` of the tokens merges into its right neighbour when their hidden states are the most similar pairs
   (:func:`compressors.dynamic.merging.merge_right_neighbours`): size-weighted averages, sizes tracked,
   and attention counts a merged token as its size (+log size on its logits, ToMe's proportional
   attention). Unlike image patches, a text sequence is causal: a token may only merge *forward*
   (into the later position), and the last token is never merged;
2. from ``prune_start`` of the depth on, the prompt tokens least attended by the last token (averaged
   over heads) are dropped in ``stages`` steps until ``prune_ratio`` of the prompt is gone. The paper
   scores visual tokens by the attention *text* tokens pay them; in a text-only prompt the natural
   "query" is the last token (whose next-token prediction is what we serve), so this step coincides with
   LazyLLM's ranking, without LazyLLM's revival: what AIM drops stays dropped.

Neighbouring text tokens are far less redundant than neighbouring video patches: on the demo model and
512 held-out tokens, the median cosine similarity of (even, next) token pairs is 0.08 at the embeddings
and 0.54 at the input of layer 2 (measured; the 90th percentiles are 0.49 and 0.69), which is why merging
waits two layers by default. The paper's 7× FLOP reduction with accuracy kept (abstract) is not expected
to carry over to text; the benchmark measures what does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    Compressor,
    CompressorConfig,
    CompressorId,
    ConfigError,
    CostEstimate,
    ModelShape,
    RunContext,
    check_range,
    register,
)
from compressors.dynamic import manifest
from compressors.dynamic.tokens import TokenPlan, check_model_type, install_token_plan
from compressors.methods.lazyllm import prefill_compute_share, stage_schedule
from knowledge.ids import MethodId


@dataclass
class AIMConfig(CompressorConfig):
    merge_ratio: float = field(
        default=0.2,
        metadata={
            "help": "Share of the prompt's tokens merged into their right neighbour (0 = no merging)",
            "min": 0.0,
            "max": 0.5,
        },
    )
    merge_layer: int = field(
        default=2,
        metadata={
            "help": "Layer at whose input tokens merge (0 = before the first layer, where AIM merges visual tokens; "
            "text embeddings of neighbours are nearly orthogonal there, so the default waits two layers)",
            "min": 0,
            "max": 256,
        },
    )
    prune_ratio: float = field(
        default=0.4,
        metadata={
            "help": "Share of the prompt's tokens dropped after the last pruning stage (0 = no pruning)",
            "min": 0.0,
            "max": 0.95,
        },
    )
    prune_start: float = field(
        default=0.5,
        metadata={
            "help": "Depth of the first pruning stage, as a share of the layers",
            "min": 0.0,
            "max": 0.95,
        },
    )
    stages: int = field(default=3, metadata={"help": "Number of pruning stages", "min": 1, "max": 16})
    protect_first: int = field(
        default=1,
        metadata={"help": "Leading tokens never merged or pruned (the attention sink)", "min": 0, "max": 64},
    )

    def __post_init__(self) -> None:
        check_range("merge_ratio", self.merge_ratio, 0.0, 0.5)
        check_range("prune_ratio", self.prune_ratio, 0.0, 0.95)
        check_range("prune_start", self.prune_start, 0.0, 0.95)
        check_range("protect_first", self.protect_first, 0, 64)
        if not isinstance(self.merge_layer, int) or self.merge_layer < 0:
            raise ConfigError(f"merge_layer={self.merge_layer!r} must be an integer >= 0 (a layer index)")
        if not isinstance(self.stages, int) or not 1 <= self.stages <= 16:
            raise ConfigError(
                f"stages={self.stages!r} is out of range; it must be an integer between 1 and 16"
            )


@register
class AIM(Compressor[AIMConfig]):
    id = CompressorId("aim")
    implements = (MethodId("aim"),)
    name = "AIM (token merging + pruning)"
    phase = "inference"
    impact = "dynamic"
    needs_calibration = False
    output_format = "dynamic"
    config_cls = AIMConfig
    summary = (
        "Merges similar neighbouring prompt tokens in the first layer, then drops the least attended "
        "tokens progressively in later layers; text adaptation of a multimodal method; weights untouched."
    )

    def plan(self, n_layers: int, config: AIMConfig) -> TokenPlan:
        if config.merge_layer >= n_layers:
            raise ConfigError(
                f"merge_layer={config.merge_layer} but the model has {n_layers} layers; "
                f"choose 0..{n_layers - 1}"
            )
        keep = stage_schedule(n_layers, config.prune_ratio, config.prune_start, config.stages)
        merge = {config.merge_layer: config.merge_ratio} if config.merge_ratio > 0 else {}
        return TokenPlan(
            keep=keep, merge=merge, revive=False, protect_first=config.protect_first, method=self.id
        )

    def check_model(self, model_type: str) -> None:
        check_model_type(model_type)

    def whole_model_reason(self, config: AIMConfig) -> str:
        """Why it does not stream block by block (:mod:`compressors.streaming`)."""
        return "a dynamic method that changes no weight: its token merging and pruning are installed in the decoder loop of the whole model, and there is nothing to compute block by block"

    def estimate(
        self, shape: ModelShape, config: AIMConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        keep = stage_schedule(shape.n_layers, config.prune_ratio, config.prune_start, config.stages)
        share = prefill_compute_share(shape.n_layers, keep)
        merged_from = min(config.merge_layer, shape.n_layers) / max(shape.n_layers, 1)
        share_merged = merged_from + (share - merged_from) * (1 - config.merge_ratio)
        return CostEstimate(
            peak_memory_bytes=int(shape.n_params * shape.dtype_bytes * 1.05),
            seconds=0.1,
            note=(
                f"installing takes no time (nothing is calibrated); at most about {share_merged:.0%} of a "
                "prompt's token-layer work remains (merging finds fewer pairs than asked when none are similar)"
            ),
        )

    def install(self, model: Any, config: AIMConfig, payload: dict[str, Any] | None = None) -> Any:
        plan = self.plan(model.config.num_hidden_layers, config)
        install_token_plan(model, plan)
        manifest.record(model, self.id, config, {"plan": plan.to_dict()})
        return model

    def compress(self, model: Any, tokenizer: Any, config: AIMConfig, ctx: RunContext) -> Any:
        ctx.report("install", 0.0, "installing token merging and pruning (weights untouched)")
        self.install(model, config)
        plan = self.plan(model.config.num_hidden_layers, config)
        stages = ", ".join(f"layer {k}: keep {v:.0%}" for k, v in sorted(plan.keep.items())) or "none"
        ctx.report(
            "install", 1.0, f"merge {config.merge_ratio:.0%} at layer {config.merge_layer}; prune: {stages}"
        )
        return model
