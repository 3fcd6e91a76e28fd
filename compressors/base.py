"""The contract every bundled compressor follows, and the one registry that holds them.

A compressor is a class with capability flags (phase, impact, what it needs) that the knowledge
base, the engine and the UI read as the single source of truth, the knowledge-base method(s) it
implements (``implements``: a run is credited to one of them, never to the compressor's own id, so its
measured figures reach that method's page), a config dataclass that validates
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
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NewType, TypeVar

# Cancelled lives with the progress reporter (which raises it); re-exported here, where callers look
from compressors.progress import Cancelled as Cancelled
from compressors.progress import Count, ProgressSink, Reporter
from knowledge.ids import MethodId

if TYPE_CHECKING:  # torch-side types, for annotations only (this module imports no torch)
    from compressors.calibration import BlockStep

log = logging.getLogger(__name__)


#: Id of a bundled compressor in the registry below, e.g. ``"magnitude"``. Not a knowledge-base method
#: id (:data:`knowledge.ids.MethodId`, e.g. ``"magnitude-pruning"``): the two are kept apart by type.
CompressorId = NewType("CompressorId", str)


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
class Calibration:
    """How much calibration text a run feeds the compressor: ``samples`` windows of ``seq_len`` tokens.

    Estimates take it because the calibration passes and Hessians of the layer-wise methods scale with
    it; a card that assumed the default while the user chose 16 windows overstated GPTQ's time 8x.
    """

    samples: int = 128
    seq_len: int = 512


DEFAULT_CALIBRATION = Calibration()


@dataclass(frozen=True)
class CostEstimate:
    """Peak memory and wall time of a run, before it starts.

    ``seconds`` is an operation count divided by this machine's measured throughput
    (:mod:`compressors.throughput`), so it holds on any machine; ``uncertainty`` says how far off it
    may be (the true time is expected between ``seconds / uncertainty`` and ``seconds * uncertainty``:
    the probe's kernels are not the run's, and Python overhead is only counted roughly); ``basis``
    names the throughput it was divided by and where that figure came from.
    """

    peak_memory_bytes: int
    seconds: float
    note: str = ""
    uncertainty: float = 1.0
    basis: str = ""

    @property
    def seconds_range(self) -> tuple[float, float]:
        """``(low, high)``: the time the run is expected to take, given the stated uncertainty."""
        u = max(self.uncertainty, 1.0)
        return self.seconds / u, self.seconds * u


@dataclass
class RunContext:
    """What a running compressor may use: calibration tokens, progress reporting and cancellation.

    ``report(stage, fraction, message, count=Count(17, 210, "layers"))``: stage is a short name
    ("calibrate", "layer 3/30"), fraction in [0, 1] for the whole compression, ``count`` (optional) the
    layers done so far, from which the job panel shows an ETA; report at least once per layer. ``check_cancelled()`` raises :class:`Cancelled` and should be called
    at least once per layer so a cancel stops the work within seconds. ``progress`` is where reports go: a
    :class:`compressors.progress.Reporter` (a span of the run's, whose ``lines`` are then ``log_lines``)
    or any ``callback(stage, fraction, message)``; either way :class:`Reporter` handles the report, so
    each message becomes exactly one line of ``log_lines``.
    """

    calibration: Any | None = None  # torch.LongTensor [n_samples, seq_len] of token ids
    progress: ProgressSink = field(default=lambda stage, frac, msg="": None)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    device: str = "cpu"
    seed: int = 0
    log_lines: list[str] = field(default_factory=list)
    # the Reporter a plain callback is wrapped in, kept so its rate meter sees every counted report
    _wrapped: tuple[ProgressSink, Reporter] | None = field(
        default=None, init=False, repr=False, compare=False
    )

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
        if self._wrapped is None or self._wrapped[0] is not self.progress:
            self._wrapped = (self.progress, Reporter(self.progress, self.cancel_event, self.log_lines))
        return self._wrapped[1]

    def report(self, stage: str, fraction: float, message: str = "", *, count: Count | None = None) -> None:
        """See the class docstring; ``count`` (layers done of all) adds the count and an ETA to the
        shown stage (:mod:`compressors.progress`)."""
        self.check_cancelled()
        self.reporter()(stage, fraction, message, count=count)

    def span(self, lo: float, hi: float, **changes: Any) -> RunContext:
        """A context whose reports fill ``[lo, hi]`` of this one's progress, with the same log and cancel
        event (a compressor that runs another one as a step of its own); ``changes`` replace fields."""
        return dataclasses.replace(self, progress=self.reporter().span(lo, hi), **changes)


class Compressor(ABC, Generic[ConfigT]):
    """Base class. Subclasses set the capability flags and implement ``compress`` and ``estimate``.

    Generic over the config dataclass, so a subclass declared as ``Compressor[GPTQConfig]`` receives a
    ``GPTQConfig`` in ``compress``/``estimate`` with its fields typed. Callers that pick a compressor by
    id (:func:`get_compressor`) get a ``Compressor[Any]`` and pass ``comp.config_cls.from_dict(...)``.
    """

    id: ClassVar[CompressorId]
    #: Knowledge-base methods this compressor runs, its own method first (the one a run is credited to
    #: when only the compressor is named, as the CLI does). A compressor that stands in for several
    #: entries (dynamic int8 runs both "cpu-inference" and "dynamic-int8") lists them all; each entry's
    #: ``compressor:`` in the data files names this id back, and its flags must agree with these.
    implements: ClassVar[tuple[MethodId, ...]]
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

    def uses_calibration(self, config: ConfigT) -> bool:
        """Whether this run takes calibration tokens: ``needs_calibration``, or an option that asks for
        them (the GGUF k-quants' importance matrix is optional, so the method does not *need* data)."""
        return self.needs_calibration

    def check_model(self, model_type: str) -> None:
        """Raise :class:`CompressionError` when this compressor cannot run a ``model_type`` at all.

        Called from the config alone, before any weight is loaded (the Compress page's pre-run check and
        the first step of a run), so an unsupported architecture is refused at once instead of after
        loading and measuring the original. Default: every architecture the layer discovery handles.
        """

    def block_step(self, config: ConfigT) -> BlockStep | None:
        """How this compressor treats one decoder block on its own, or None when it needs the whole model.

        A compressor that returns a step here can be **streamed** (:mod:`compressors.streaming`): its
        blocks are read from the checkpoint's shards one at a time, so a model far larger than memory
        can be compressed. Its ``compress`` should run the same step, so both paths give one result.
        """
        return None

    def whole_model_reason(self, config: ConfigT) -> str:
        """Why this run needs the whole model in memory (shown when :meth:`block_step` gives None)."""
        return "it has no block-by-block form yet"

    @abstractmethod
    def estimate(
        self, shape: ModelShape, config: ConfigT, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        """Peak memory and wall time on this machine, from the model's shape, the settings and the
        calibration size the run will use (ignored by methods that need no calibration text)."""

    @abstractmethod
    def compress(self, model: Any, tokenizer: Any, config: ConfigT, ctx: RunContext) -> Any:
        """Compress ``model`` in place (or return a new one) and return the model to save."""


_REGISTRY: dict[CompressorId, type[Compressor[Any]]] = {}
_CompressorCls = TypeVar("_CompressorCls", bound=type[Compressor[Any]])


def register(cls: _CompressorCls) -> _CompressorCls:
    """Class decorator adding a compressor to the registry; a duplicate id, or a compressor that does not
    say which knowledge-base method it implements, is a programming error."""
    cid = cls.id
    implements = getattr(cls, "implements", None)
    if not isinstance(implements, tuple) or not implements or not all(isinstance(m, str) for m in implements):
        raise ValueError(
            f"compressor {cid!r} ({cls.__name__}) must set implements = (MethodId('<knowledge-base id>'), ...)"
        )
    if cid in _REGISTRY and _REGISTRY[cid] is not cls:
        raise ValueError(
            f"compressor id {cid!r} is registered twice ({_REGISTRY[cid].__name__} and {cls.__name__})"
        )
    _REGISTRY[cid] = cls
    return cls


def get_compressor(cid: CompressorId) -> Compressor[Any]:
    from compressors import methods  # noqa: F401  (importing registers every bundled compressor)

    try:
        return _REGISTRY[cid]()
    except KeyError:
        raise CompressionError(f"unknown compressor {cid!r}; known: {sorted(_REGISTRY)}") from None


def all_compressors() -> dict[CompressorId, type[Compressor[Any]]]:
    from compressors import methods  # noqa: F401

    return dict(sorted(_REGISTRY.items()))


def default_method(cid: CompressorId) -> MethodId:
    """The knowledge-base method a run of ``cid`` is credited to when no method was named."""
    return type(get_compressor(cid)).implements[0]


def check_pairing(method: MethodId, cid: CompressorId) -> None:
    """Raise :class:`CompressionError` unless compressor ``cid`` implements knowledge-base ``method``.

    A run is stored under its method; a mismatched pair would file its figures under a method whose
    code did not run (or under no method at all, as ``method="magnitude"`` once did).
    """
    implements = type(get_compressor(cid)).implements
    if method not in implements:
        runners = [c for c, cls in all_compressors().items() if method in cls.implements]
        hint = f"{method!r} is run by {runners}" if runners else f"no bundled compressor runs {method!r}"
        raise CompressionError(
            f"compressor {cid!r} does not implement the method {method!r}: it runs {list(implements)}; {hint}"
        )
