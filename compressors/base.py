"""The contract every bundled compressor follows, and the one registry that holds them.

A compressor is a class with capability flags (phase, impact, what it needs) that the knowledge
base, the engine and the UI read as the single source of truth, a config dataclass that validates
itself on construction, a cost estimate that can be shown *before* a run, and ``compress`` which
works in place on a loaded model and reports progress through a :class:`RunContext`.

Modelled on transformers' quantizers (flags on a base class, a registry that rejects duplicates and
lists the known ids on a miss) and torchao's config dataclasses validated in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from compressors.progress import Cancelled, ProgressSink, Reporter

log = logging.getLogger(__name__)


class CompressionError(Exception):
    """A problem the user can fix (bad setting, unsupported model); the message says how."""


class ConfigError(CompressionError, ValueError):
    """A config value is out of range; the message names the field, the value and what is allowed."""


@dataclass
class CompressorConfig:
    """Base of every method's config. Subclasses are dataclasses whose fields carry UI metadata:

    ``field(default=4, metadata={"help": "Bits per weight", "choices": [2, 3, 4, 8]})`` or
    ``metadata={"help": ..., "min": 0.0, "max": 0.95}``. The web form and the CLI are built from these.
    Subclasses validate in ``__post_init__`` and raise :class:`ConfigError`.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown} for {cls.__name__}; allowed: {sorted(known)}")
        return cls(**data)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Fields with type, default and UI metadata, in declaration order (for forms and --help)."""
        out = []
        for f in dataclasses.fields(cls):
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
                )
            )
            out.append(
                {
                    "name": f.name,
                    "type": f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
                    "default": default,
                    **dict(f.metadata),
                }
            )
        return out


def check_choice(name: str, value: Any, allowed: list[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{name}={value!r} is out of range; it must be between {lo} and {hi}")


@dataclass(frozen=True)
class ModelShape:
    """What a cost estimate needs to know about a model, readable from its config alone."""

    n_params: int
    n_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    n_heads: int
    n_kv_heads: int
    dtype_bytes: int = 4
    linear_params: int = 0  # parameters inside the decoder blocks' linear layers


@dataclass(frozen=True)
class CostEstimate:
    peak_memory_bytes: int
    seconds: float
    note: str = ""


@dataclass
class RunContext:
    """What a running compressor may use: calibration tokens, progress reporting and cancellation.

    ``report(stage, fraction, message)``: stage is a short name ("calibrate", "layer 3/30"), fraction in
    [0, 1] for the whole compression. ``check_cancelled()`` raises :class:`Cancelled` and should be called
    at least once per layer so a cancel stops the work within seconds. ``progress`` is where reports go: a
    :class:`compressors.progress.Reporter` (a span of the run's, whose ``lines`` are then ``log_lines``)
    or any ``callback(stage, fraction, message)``; either way :class:`Reporter` handles the report, so
    each message becomes exactly one line of ``log_lines``.
    """

    calibration: Any | None = None  # torch.LongTensor [n_samples, seq_len] of token ids
    progress: ProgressSink = lambda stage, frac, msg="": None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    device: str = "cpu"
    seed: int = 0
    log_lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.progress, Reporter):
            self.log_lines = self.progress.lines

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("cancelled by the user")

    def reporter(self) -> Reporter:
        """``progress`` as a :class:`Reporter` (itself when it is one; ``progress`` may be reassigned)."""
        if isinstance(self.progress, Reporter):
            return self.progress
        return Reporter(self.progress, self.cancel_event, self.log_lines)

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        self.reporter()(stage, fraction, message)

    def span(self, lo: float, hi: float, **changes: Any) -> RunContext:
        """A context whose reports fill ``[lo, hi]`` of this one's progress, with the same log and cancel
        event (a compressor that runs another one as a step of its own); ``changes`` replace fields."""
        return dataclasses.replace(self, progress=self.reporter().span(lo, hi), **changes)


class Compressor(ABC):
    """Base class. Subclasses set the capability flags and implement ``compress`` and ``estimate``."""

    id: ClassVar[str]
    name: ClassVar[str]
    phase: ClassVar[str]  # one of knowledge.schema.Phase values
    impact: ClassVar[str]  # "static" or "dynamic"
    needs_calibration: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    needs_gpu: ClassVar[bool] = False
    output_format: ClassVar[str] = "shrinkwise-packed"
    config_cls: ClassVar[type[CompressorConfig]]
    summary: ClassVar[str] = ""

    @abstractmethod
    def estimate(self, shape: ModelShape, config: CompressorConfig) -> CostEstimate:
        """Peak memory and wall time on this kind of machine, from the model's shape alone."""

    @abstractmethod
    def compress(self, model: Any, tokenizer: Any, config: CompressorConfig, ctx: RunContext) -> Any:
        """Compress ``model`` in place (or return a new one) and return the model to save."""


_REGISTRY: dict[str, type[Compressor]] = {}


def register(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator adding a compressor to the registry; a duplicate id is a programming error."""
    cid = cls.id
    if cid in _REGISTRY and _REGISTRY[cid] is not cls:
        raise ValueError(
            f"compressor id {cid!r} is registered twice ({_REGISTRY[cid].__name__} and {cls.__name__})"
        )
    _REGISTRY[cid] = cls
    return cls


def get_compressor(cid: str) -> Compressor:
    from compressors import methods  # noqa: F401  (importing registers every bundled compressor)

    try:
        return _REGISTRY[cid]()
    except KeyError:
        raise CompressionError(f"unknown compressor {cid!r}; known: {sorted(_REGISTRY)}") from None


def all_compressors() -> dict[str, type[Compressor]]:
    from compressors import methods  # noqa: F401

    return dict(sorted(_REGISTRY.items()))
