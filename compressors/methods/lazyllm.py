"""LazyLLM: dynamic token pruning for long-context prefill (Fu et al., arXiv 2407.14057).

At a few layers of increasing depth, the prompt tokens least attended by the last token stop being
computed; the kept share shrinks stage by stage (``1 - ratio·k/stages`` after stage ``k``), so the
time to first token falls while the tokens that matter for the next token go all the way up. The
stopped tokens' hidden states wait in an auxiliary cache; during decoding each new token ranks the
prompt again and revives the ones it needs (computing them from the layer where they stopped, never
twice per layer). Nothing is trained and no weight changes: the method lives in the decoder loop of
:mod:`compressors.dynamic.tokens`.

Paper figure: 2.34× faster time to first token on LongBench multi-document QA for Llama 2 7B with
accuracy kept (abstract). Differences from the paper's code: the schedule (stage layers and kept
shares) is ours and configurable; batch size 1 only (other batches run unpruned).
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
from knowledge.ids import MethodId


@dataclass
class LazyLLMConfig(CompressorConfig):
    ratio: float = field(
        default=0.5,
        metadata={
            "help": "Share of the prompt's tokens no longer computed after the last stage (0 = none pruned)",
            "min": 0.0,
            "max": 0.95,
        },
    )
    start: float = field(
        default=0.25,
        metadata={
            "help": "Depth of the first pruning stage, as a share of the layers (earlier layers see every token)",
            "min": 0.0,
            "max": 0.95,
        },
    )
    stages: int = field(
        default=3,
        metadata={"help": "Number of pruning stages between start and the last layer", "min": 1, "max": 16},
    )
    revive: bool = field(
        default=True,
        metadata={
            "help": "Revive pruned tokens from the auxiliary cache when a decoding step ranks them in the kept set"
        },
    )
    protect_first: int = field(
        default=1, metadata={"help": "Leading tokens never pruned (the attention sink)", "min": 0, "max": 64}
    )

    def __post_init__(self) -> None:
        check_range("ratio", self.ratio, 0.0, 0.95)
        check_range("start", self.start, 0.0, 0.95)
        if not isinstance(self.stages, int) or not 1 <= self.stages <= 16:
            raise ConfigError(
                f"stages={self.stages!r} is out of range; it must be an integer between 1 and 16"
            )
        check_range("protect_first", self.protect_first, 0, 64)


def stage_schedule(n_layers: int, ratio: float, start: float, stages: int) -> dict[int, float]:
    """``{layer: kept share of the prompt from that layer on}``: evenly spaced stages after ``start``."""
    if n_layers < 2:
        return {}
    first = min(max(1, round(start * n_layers)), n_layers - 1)
    span = n_layers - first
    layers = sorted({first + (k * span) // stages for k in range(stages)})
    return {layer: 1.0 - ratio * (k + 1) / len(layers) for k, layer in enumerate(layers)}


def prefill_compute_share(n_layers: int, schedule: dict[int, float]) -> float:
    """Share of the unpruned prefill's token-layer work that the schedule keeps."""
    keep, total = 1.0, 0.0
    for layer in range(n_layers):
        keep = schedule.get(layer, keep)
        total += keep
    return total / max(n_layers, 1)


@register
class LazyLLM(Compressor[LazyLLMConfig]):
    id = CompressorId("lazyllm")
    implements = (MethodId("lazyllm"),)
    name = "LazyLLM (dynamic token pruning)"
    phase = "inference"
    impact = "dynamic"
    needs_calibration = False
    output_format = "dynamic"
    config_cls = LazyLLMConfig
    summary = (
        "Drops the prompt tokens the last token attends to least, progressively more in deeper layers, "
        "and revives them from an auxiliary cache when decoding needs them; weights untouched."
    )

    def plan(self, n_layers: int, config: LazyLLMConfig) -> TokenPlan:
        keep = stage_schedule(n_layers, config.ratio, config.start, config.stages)
        return TokenPlan(keep=keep, revive=config.revive, protect_first=config.protect_first, method=self.id)

    def check_model(self, model_type: str) -> None:
        check_model_type(model_type)

    def whole_model_reason(self, config: LazyLLMConfig) -> str:
        """Why it does not stream block by block (:mod:`compressors.streaming`)."""
        return "a dynamic method that changes no weight: its token pruning is installed in the decoder loop of the whole model, and there is nothing to compute block by block"

    def estimate(
        self, shape: ModelShape, config: LazyLLMConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        share = prefill_compute_share(
            shape.n_layers, stage_schedule(shape.n_layers, config.ratio, config.start, config.stages)
        )
        return CostEstimate(
            peak_memory_bytes=int(shape.n_params * shape.dtype_bytes * 1.05),
            seconds=0.1,
            note=(
                f"installing takes no time (nothing is calibrated); at inference a prompt's prefill computes "
                f"about {share:.0%} of its token-layer work (linear layers; attention falls faster)"
            ),
        )

    def install(self, model: Any, config: LazyLLMConfig, payload: dict[str, Any] | None = None) -> Any:
        plan = self.plan(model.config.num_hidden_layers, config)
        install_token_plan(model, plan)
        manifest.record(model, self.id, config, {"plan": plan.to_dict()})
        return model

    def compress(self, model: Any, tokenizer: Any, config: LazyLLMConfig, ctx: RunContext) -> Any:
        ctx.report("install", 0.0, "installing dynamic token pruning (weights untouched)")
        self.install(model, config)
        plan = self.plan(model.config.num_hidden_layers, config)
        stages = ", ".join(f"layer {k}: keep {v:.0%}" for k, v in sorted(plan.keep.items())) or "none"
        ctx.report("install", 1.0, f"stages: {stages}; revive={config.revive}")
        return model
