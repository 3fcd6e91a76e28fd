"""The vocabulary of the knowledge base: what a method, an evidence row and a citation are.

Everything here is validated on construction (pydantic), so a data file with a typo fails when it is
loaded, naming the field, rather than when a user's recommendation happens to touch it. The enums
are the axes of the paper (phase of application x nature of impact) and its four grades (Table 1);
everything else is what an engineer needs to act on a method: what it needs, where it gives a real
gain, and what loads its output.

The database tables (``knowledge.tables``) store these models as JSON beside a few indexed columns,
so adding a field here needs no migration of existing rows.
"""

from __future__ import annotations

import difflib
import re
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from knowledge.evidence_vocab import MODEL_FAMILIES, recipe_ids
from knowledge.ids import MethodId


class _StrEnum(str, Enum):
    """String enum whose str() is its value, so it prints and serialises as the data file spells it."""

    _value_: str  # tells the type checker what ``.value`` holds

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]


class Phase(_StrEnum):
    """When in the model's life the compression happens (the paper's first axis), in lifecycle order."""

    PRE_TRAINING = "pre-training"
    POST_TRAINING = "post-training"
    FINE_TUNING = "fine-tuning"
    INFERENCE = "inference"


#: Lifecycle order used by the map (left to right) and by pipelines (a stack runs in this order).
#: The paper draws fine-tuning after post-training: a trained model is adapted, then served.
PHASE_ORDER: tuple[Phase, ...] = (
    Phase.PRE_TRAINING,
    Phase.POST_TRAINING,
    Phase.FINE_TUNING,
    Phase.INFERENCE,
)


class Impact(_StrEnum):
    """Static: weights/structure change for good. Dynamic: computation adapts per input, weights stay."""

    STATIC = "static"
    DYNAMIC = "dynamic"


class Family(_StrEnum):
    QUANTIZATION = "quantization"
    PRUNING = "pruning"
    DISTILLATION = "distillation"
    COMPACT_ARCHITECTURE = "compact-architecture"
    DYNAMIC_NETWORK = "dynamic-network"
    ACTIVATION_SPARSITY = "activation-sparsity"
    KV_CACHE = "kv-cache"
    TOKEN_PRUNING = "token-pruning"
    DECODING = "decoding"
    LOW_RANK = "low-rank"
    RUNTIME = "runtime"


class SizeReduction(_StrEnum):
    """The paper's grade of how much smaller the deployed model gets (Table 1)."""

    LOW = "low"
    LOW_TO_MEDIUM = "low-to-medium"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very-high"
    VARIABLE = "variable"


class QualityDrop(_StrEnum):
    MINIMAL = "minimal"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


class HardwareDependence(_StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class BackwardCompatibility(_StrEnum):
    """Whether the original model stays usable as it was. The paper writes "—" for static methods."""

    NONE = "none"
    PARTIAL = "partial"
    FULL = "full"


class Changes(_StrEnum):
    """What a method touches; decides which methods can stack (two methods rewriting weights conflict)."""

    WEIGHTS = "weights"
    ACTIVATIONS = "activations"
    KV_CACHE = "kv-cache"
    TOKENS = "tokens"
    ARCHITECTURE = "architecture"
    DECODING = "decoding"


class Hardware(_StrEnum):
    CPU = "cpu"
    NVIDIA_GPU = "nvidia-gpu"
    AMD_GPU = "amd-gpu"
    APPLE_SILICON = "apple-silicon"
    MOBILE = "mobile"


class ServingEngine(_StrEnum):
    VLLM = "vllm"
    LLAMA_CPP = "llama.cpp"
    TRANSFORMERS = "transformers"
    TENSORRT_LLM = "tensorrt-llm"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    SGLANG = "sglang"
    DEEPSPARSE = "deepsparse"
    MLC_LLM = "mlc-llm"
    EXLLAMA = "exllama"
    CUSTOM = "custom"


class Grade(_StrEnum):
    """A coarse amount, for training compute where GPU-hours are not known."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_ID = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt field in a data file must not be silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Grades(_Strict):
    """The paper's four qualitative grades, exactly as Table 1 spells them for its eight methods."""

    size_reduction: SizeReduction
    quality_drop: QualityDrop
    hardware_dependence: HardwareDependence
    backward_compatibility: BackwardCompatibility


class Requirements(_Strict):
    calibration_data: bool = Field(description="Needs a sample of representative text (no labels).")
    gradients: bool = Field(description="Needs backward passes through the model (memory ~3-4x inference).")
    training_compute: Grade = Field(description="Coarse training cost: none (one-shot), low, medium, high.")
    gpu_hours_per_billion: float | None = Field(
        default=None, ge=0, description="GPU-hours per billion parameters, when the paper reports it."
    )
    retraining_from_scratch: bool = Field(
        default=False, description="Only applies when the model is (re)trained from scratch."
    )


class HardwareTarget(_Strict):
    """Hardware where the method gives a *real* gain, and the kernels or engines that deliver it."""

    target: Hardware
    kernels: list[str] = Field(default_factory=list)


class OutputFormat(_Strict):
    format: str
    engines: list[ServingEngine] = Field(default_factory=list)


class Citation(_Strict):
    authors: str
    title: str
    venue: str
    year: int = Field(ge=1980, le=2100)
    arxiv: str | None = None
    doi: str | None = None
    url: str

    @field_validator("arxiv")
    @classmethod
    def _arxiv_shape(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{4}\.\d{4,5}", v):
            raise ValueError(f"arXiv id {v!r} should look like 2210.17323 (no 'arXiv:' prefix, no version)")
        return v


class Footprint(_Strict):
    """What the method does to the stored weights, for memory estimates.

    ``bits_per_weight`` counts everything stored per weight of the compressed layers (scales, zeros,
    indices, outliers), so 4-bit weights with an fp16 scale per group of 128 are 4.125, not 4.
    ``param_fraction`` is the share of parameters left after structural pruning or a smaller student.
    Dynamic methods leave both at their defaults: the weights are untouched.
    """

    bits_per_weight: float = Field(default=16.0, gt=0, le=32)
    param_fraction: float = Field(default=1.0, gt=0, le=1.0)
    sparsity: float | None = Field(
        default=None, ge=0, lt=1, description="Unstructured zero fraction reached."
    )
    sparsity_stored: bool = Field(
        default=False,
        description="True when the zeros are stored compressed (bitmask, 2:4 metadata), so they save memory.",
    )
    compute_fraction: float | None = Field(
        default=None, gt=0, le=1, description="Share of compute left per token, for dynamic methods."
    )


class Method(_Strict):
    """One compression method: one entry of a methods data file."""

    id: MethodId
    name: str
    family: Family
    phase: Phase
    impact: Impact
    grades: Grades
    changes: list[Changes] = Field(min_length=1)
    bits: list[float] | None = Field(default=None, description="Weight/activation bit-widths it reaches.")
    footprint: Footprint = Field(default_factory=Footprint)
    requirements: Requirements
    hardware: list[HardwareTarget] = Field(min_length=1)
    formats: list[OutputFormat] = Field(default_factory=list)
    composes_with: list[str] = Field(default_factory=list)
    excludes: list[str] = Field(default_factory=list)
    summary: str = Field(min_length=10, max_length=240, description="One line: what it does.")
    mechanism: str = Field(min_length=40, description="How it works, in prose.")
    tradeoff: str = Field(min_length=20, description="What it costs and when to pick it.")
    citation: Citation
    compressor: str | None = Field(
        default=None,
        description="Id of the bundled compressor that runs it, if any (a compressors.base.CompressorId; "
        "that compressor's ``implements`` must list this method's id).",
    )
    in_paper: bool = False
    fills_gap: bool = Field(default=False, description="Dynamic at pre-/post-training: the paper's gap.")
    aliases: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"id {v!r} must be lower-case words joined by '-' (e.g. 'sparse-gpt')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Method:
        if self.id in self.composes_with or self.id in self.excludes:
            raise ValueError(f"method {self.id!r} lists itself in composes_with/excludes")
        both = set(self.composes_with) & set(self.excludes)
        if both:
            raise ValueError(f"{sorted(both)} are both in composes_with and excludes")
        if self.fills_gap and not (
            self.impact is Impact.DYNAMIC and self.phase in (Phase.PRE_TRAINING, Phase.POST_TRAINING)
        ):
            raise ValueError("fills_gap is only for dynamic methods at pre-training or post-training")
        return self

    @property
    def cell(self) -> tuple[Phase, Impact]:
        return (self.phase, self.impact)


class Metric(_StrEnum):
    """What an evidence figure measures; decides whether lower or higher is better."""

    PERPLEXITY = "perplexity"
    ACCURACY = "accuracy"
    SPEEDUP = "speedup"
    BITS_PER_WEIGHT = "bits-per-weight"
    MEMORY_GB = "memory-gb"
    FLOPS_FRACTION = "flops-fraction"
    PARAMETERS_B = "parameters-b"
    LATENCY_S = "latency-s"
    LATENCY_MS_PER_TOKEN = "latency-ms-per-token"
    SPARSITY = "sparsity"
    COMPRESSION_GPU_HOURS = "compression-gpu-hours"
    SIZE_MB = "size-mb"
    TOKENS_PER_S = "tokens-per-s"
    TRAINING_TOKENS_FRACTION = "training-tokens-fraction"  # share of the pre-training tokens a method needs

    @property
    def lower_is_better(self) -> bool:
        return self in {
            Metric.PERPLEXITY,
            Metric.BITS_PER_WEIGHT,
            Metric.MEMORY_GB,
            Metric.FLOPS_FRACTION,
            Metric.PARAMETERS_B,
            Metric.LATENCY_S,
            Metric.LATENCY_MS_PER_TOKEN,
            Metric.COMPRESSION_GPU_HOURS,
            Metric.SIZE_MB,
            Metric.TRAINING_TOKENS_FRACTION,
        }


class SourceTag(_StrEnum):
    PRIMARY = "primary"  # the paper's abstract, or its official repo's code/README/figures
    SECONDARY = "secondary"  # a reproduction or survey quoting the paper's table
    MEASURED = "measured"  # measured by Shrinkwise itself on this machine


class Source(_Strict):
    paper: str = Field(description="Short citation, e.g. 'Frantar et al. 2022, GPTQ (arXiv 2210.17323)'.")
    locator: str = Field(description="Where in it: 'Table 3', 'Figure 1', 'abstract', 'repo README'.")
    tag: SourceTag
    url: str | None = None


class Evidence(_Strict):
    """One figure from a paper (or from a run measured here), with its baseline and exact source.

    The structured fields (``recipe``, ``bits``, ``group_size``, ``family``, ``params``) say in
    machine-readable form what ``model`` and ``setting`` say in words, so the quality estimate
    (``engine.quality``) can match a recipe's rows, then the same method at the same bits, prefer the
    user's model family and fit the drop against model size. They are optional: a row without them
    still counts for its method; a row with them must agree with its setting (checked by the tests).
    """

    method: MethodId
    model: str
    setting: str = Field(description="E.g. '4-bit, no grouping, 128x2048 C4 calibration'.")
    metric: Metric
    dataset: str | None = None
    value: float
    baseline: float | None = None
    baseline_label: str | None = Field(default=None, description="What the baseline is: 'FP16', 'dense'.")
    source: Source
    note: str | None = None
    recipe: str | None = Field(
        default=None,
        description="The recipe measured (knowledge/data/recipes/*.yaml), e.g. 'gptq-w4a16-g128'; "
        "None when the setting matches no recipe (e.g. GPTQ 4-bit per-channel).",
    )
    bits: float | None = Field(
        default=None,
        gt=0,
        le=32,
        description="Bits of the quantized tensors (nominal, e.g. 4): the weights, or the KV cache for KV-cache methods.",
    )
    group_size: int | None = Field(
        default=None, description="Weights sharing one scale; -1 = per-channel (no grouping)."
    )
    family: str | None = Field(
        default=None, description="Model family (knowledge.evidence_vocab.MODEL_FAMILIES), e.g. 'llama-2'."
    )
    params: float | None = Field(
        default=None, ge=1e6, description="Parameters of the model, e.g. 7e9 (not 7: a count, not billions)."
    )

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str | None) -> str | None:
        if v is None:
            return v
        known = recipe_ids()
        if v not in known:
            close = difflib.get_close_matches(v, sorted(known), n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(
                f"unknown recipe {v!r}{hint}; recipes are defined in knowledge/data/recipes/*.yaml"
            )
        return v

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and v < 1:
            raise ValueError(f"group_size {v} must be a positive group size or -1 (per-channel)")
        return v

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str | None) -> str | None:
        if v is not None and v not in MODEL_FAMILIES:
            close = difflib.get_close_matches(v, sorted(MODEL_FAMILIES), n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(
                f"unknown model family {v!r}{hint}; known: {', '.join(sorted(MODEL_FAMILIES))} "
                "(knowledge/evidence_vocab.py)"
            )
        return v

    @property
    def relative_change(self) -> float | None:
        """(value - baseline) / baseline, e.g. +0.05 for a perplexity 5% above the baseline."""
        if self.baseline in (None, 0):
            return None
        return (self.value - self.baseline) / self.baseline

    @property
    def measured_here(self) -> bool:
        return self.source.tag is SourceTag.MEASURED


# --- Hardware targets and serving engines (knowledge/data/hardware.yaml, formats.yaml) -------------
# Added for the loader: the names methods use (Hardware, ServingEngine, OutputFormat.format) are
# described once here, so the app can explain them and the loader can reject a misspelt format.


class HardwareInfo(_Strict):
    """One hardware target the recommender knows (one entry of hardware.yaml)."""

    id: Hardware
    name: str
    description: str = Field(
        min_length=10, max_length=240, description="One line: what it is, what limits it."
    )
    typical_memory_gb: list[float] = Field(
        min_length=2, max_length=2, description="[low, high] memory available to the weights, GB."
    )
    examples: list[str] = Field(default_factory=list)

    @field_validator("typical_memory_gb")
    @classmethod
    def _ordered(cls, v: list[float]) -> list[float]:
        if v[0] <= 0 or v[0] > v[1]:
            raise ValueError(f"typical_memory_gb {v} must be [low, high] with 0 < low <= high")
        return v


class FormatInfo(_Strict):
    """One output format a method can produce (one entry under ``formats:`` in formats.yaml)."""

    id: str
    name: str
    description: str = Field(min_length=10, max_length=300)
    matches: list[str] = Field(
        default_factory=list,
        description="Other spellings that methods' free-text format names start with, e.g. 'safetensors-bnb' "
        "for bitsandbytes; the longest matching prefix (id or one of these) wins.",
    )

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"format id {v!r} must be lower-case words joined by '-' or '.' (e.g. 'gguf')")
        return v


class EngineInfo(_Strict):
    """One serving engine (one entry under ``engines:`` in formats.yaml) and the formats it loads."""

    id: ServingEngine
    name: str
    description: str = Field(min_length=10, max_length=300)
    loads: list[str] = Field(min_length=1, description="Format ids (formats.yaml) this engine loads.")
    hardware: list[Hardware] = Field(min_length=1, description="Targets it runs on.")
    url: str | None = None
