"""Colours and labels shared by every figure, so a family has one colour across the whole app."""

from __future__ import annotations

from knowledge.schema import PHASE_ORDER, Family, Impact, Phase

#: One colour per method family (a qualitative palette readable on light and dark backgrounds).
FAMILY_COLOURS: dict[str, str] = {
    Family.QUANTIZATION.value: "#1f77b4",
    Family.PRUNING.value: "#d62728",
    Family.DISTILLATION.value: "#9467bd",
    Family.COMPACT_ARCHITECTURE.value: "#8c564b",
    Family.DYNAMIC_NETWORK.value: "#2ca02c",
    Family.ACTIVATION_SPARSITY.value: "#17becf",
    Family.KV_CACHE.value: "#ff7f0e",
    Family.TOKEN_PRUNING.value: "#e377c2",
    Family.DECODING.value: "#bcbd22",
    Family.LOW_RANK.value: "#7f7f7f",
    Family.RUNTIME.value: "#393b79",
}

PHASE_LABELS: dict[str, str] = {
    Phase.PRE_TRAINING.value: "Pre-training",
    Phase.POST_TRAINING.value: "Post-training",
    Phase.FINE_TUNING.value: "Fine-tuning",
    Phase.INFERENCE.value: "Inference",
}

IMPACT_LABELS: dict[str, str] = {
    Impact.STATIC.value: "Static",
    Impact.DYNAMIC.value: "Dynamic",
}

PHASES: tuple[str, ...] = tuple(p.value for p in PHASE_ORDER)


def family_colour(family: object) -> str:
    """Colour of a family; an unknown family (added to the schema later) gets a neutral grey."""
    return FAMILY_COLOURS.get(str(family), "#555555")


def phase_index(phase: object) -> int:
    """Column of a phase in lifecycle order (0 = pre-training, 3 = inference)."""
    return PHASES.index(str(phase))
