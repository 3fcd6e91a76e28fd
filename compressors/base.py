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
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

log = logging.getLogger(__name__)


class CompressionError(Exception):
    """A problem the user can fix (bad setting, unsupported model); the message says how."""


class ConfigError(CompressionError, ValueError):
    """A config value is out of range; the message names the field, the value and what is allowed."""


class Cancelled(Exception):
    """Raised inside a compressor when the run was cancelled; the job runner records it as cancelled."""


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
    def from_dict(cls: type[_ConfigSelf], data: dict[str, Any]) -> _ConfigSelf:
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
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
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


_ConfigSelf = TypeVar("_ConfigSelf", bound=CompressorConfig)
#: The config dataclass a compressor takes (``Compressor[GPTQConfig]``).
ConfigT = TypeVar("ConfigT", bound=CompressorConfig)


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

    ``progress(stage, fraction, message)``: stage is a short name ("calibrate", "layer 3/30"),
    fraction in [0, 1] for the whole run. ``check_cancelled()`` raises :class:`Cancelled` and should
    be called at least once per layer so a cancel stops the work within seconds.
    """

    calibration: Any | None = None  # torch.LongTensor [n_samples, seq_len] of token ids
    progress: Callable[[str, float, str], None] = field(default=lambda stage, frac, msg="": None)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    device: str = "cpu"
    seed: int = 0
    log_lines: list[str] = field(default_factory=list)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("cancelled by the user")

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        line = f"{time.strftime('%H:%M:%S')} [{stage}] {message}".rstrip()
        self.log_lines.append(line)
        log.info(line)
        self.progress(stage, max(0.0, min(1.0, fraction)), message)


class Compressor(ABC, Generic[ConfigT]):
    """Base class. Subclasses set the capability flags and implement ``compress`` and ``estimate``.

    Generic over the config dataclass, so a subclass declared as ``Compressor[GPTQConfig]`` receives a
    ``GPTQConfig`` in ``compress``/``estimate`` with its fields typed. Callers that pick a compressor by
    id (:func:`get_compressor`) get a ``Compressor[Any]`` and pass ``comp.config_cls.from_dict(...)``.
    """

    id: ClassVar[str]
    name: ClassVar[str]
    phase: ClassVar[str]  # one of knowledge.schema.Phase values
    impact: ClassVar[str]  # "static" or "dynamic"
    needs_calibration: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    needs_gpu: ClassVar[bool] = False
    output_format: ClassVar[str] = "shrinkwise-packed"
    # not a ClassVar: a ClassVar cannot mention ConfigT; subclasses assign it in the class body
    config_cls: type[ConfigT]
    summary: ClassVar[str] = ""

    @abstractmethod
    def estimate(self, shape: ModelShape, config: ConfigT) -> CostEstimate:
        """Peak memory and wall time on this kind of machine, from the model's shape alone."""

    @abstractmethod
    def compress(self, model: Any, tokenizer: Any, config: ConfigT, ctx: RunContext) -> Any:
        """Compress ``model`` in place (or return a new one) and return the model to save."""


_REGISTRY: dict[str, type[Compressor[Any]]] = {}
_CompressorCls = TypeVar("_CompressorCls", bound=type[Compressor[Any]])


def register(cls: _CompressorCls) -> _CompressorCls:
    """Class decorator adding a compressor to the registry; a duplicate id is a programming error."""
    cid = cls.id
    if cid in _REGISTRY and _REGISTRY[cid] is not cls:
        raise ValueError(
            f"compressor id {cid!r} is registered twice ({_REGISTRY[cid].__name__} and {cls.__name__})"
        )
    _REGISTRY[cid] = cls
    return cls


def get_compressor(cid: str) -> Compressor[Any]:
    from compressors import methods  # noqa: F401  (importing registers every bundled compressor)

    try:
        return _REGISTRY[cid]()
    except KeyError:
        raise CompressionError(f"unknown compressor {cid!r}; known: {sorted(_REGISTRY)}") from None


def all_compressors() -> dict[str, type[Compressor[Any]]]:
    from compressors import methods  # noqa: F401

    return dict(sorted(_REGISTRY.items()))
