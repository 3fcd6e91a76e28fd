"""What the user can and cannot do: the recommender's input.

The same fields come from a YAML/JSON file, from CLI flags and from the web app's URL query, so there is
one model here and three thin loaders. Validation is strict (unknown fields and bad values are errors)
and every error is turned into a :class:`ConstraintsError` whose message names the field, the bad value
and the allowed values, because the person reading it is choosing what to type next.

Example::

    >>> c = Constraints.from_dict({"phases": "post-training,inference", "model_params": "7B"})
    >>> c.model_params
    7000000000.0
    >>> Constraints.from_query(c.to_query()) == c
    True
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from knowledge.schema import PHASE_ORDER, Hardware, Phase, _StrEnum


class Priority(_StrEnum):
    """The paper's central trade-off (claim 4): structural robustness vs contextual adaptivity."""

    PREDICTABILITY = "predictability"
    BALANCED = "balanced"
    ADAPTIVITY = "adaptivity"


class TrainingBudget(_StrEnum):
    NONE = "none"
    LOW = "low"
    HIGH = "high"


class Workload(_StrEnum):
    CHAT = "chat"
    LONG_CONTEXT = "long-context"
    BATCH = "batch"
    MULTIMODAL = "multimodal"


class TargetEngine(_StrEnum):
    """Serving engines a user can name; the values match ``knowledge.schema.ServingEngine``."""

    VLLM = "vllm"
    LLAMA_CPP = "llama.cpp"
    TRANSFORMERS = "transformers"
    TENSORRT_LLM = "tensorrt-llm"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class ConstraintsError(ValueError):
    """Bad constraints; the message names the field, the bad value, the allowed values and the fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_PARAMS = re.compile(r"^\s*([0-9][0-9_,]*\.?[0-9]*(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)
_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}


def parse_param_count(value: Any) -> float:
    """``7e9``, ``"7e9"``, ``"7B"``, ``"135M"``, ``"1.5b"`` -> a float number of parameters."""
    if isinstance(value, bool):
        raise ValueError("a parameter count, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _PARAMS.match(value)
        if m:
            number = float(m.group(1).replace("_", "").replace(",", ""))
            return number * _SUFFIX[m.group(2).lower()]
    raise ValueError("a number of parameters such as 7e9, 7B, 1.5B or 135M")


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    return value


class Constraints(BaseModel):
    """The recommender's input: what you can change, what you need, what you run on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phases: tuple[Phase, ...] = Field(
        default=PHASE_ORDER, description="Phases you can intervene in (the paper's first axis)."
    )
    keep_original: bool = Field(
        default=False, description="The original weights must stay usable as they are."
    )
    priority: Priority = Field(
        default=Priority.BALANCED, description="Predictability vs adaptivity (claim 4)."
    )
    hardware: Hardware = Field(default=Hardware.NVIDIA_GPU, description="Where the model runs.")
    model_params: float = Field(default=7e9, gt=0, description="Number of parameters of the model.")
    memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="Memory budget on the target for the weights and the KV cache, GB (default: the device's memory).",
    )
    max_quality_drop: float = Field(
        default=5.0, ge=0, le=100, description="Acceptable drop, percent, on perplexity or task accuracy."
    )
    calibration_data: bool = Field(default=True, description="A sample of representative text is available.")
    training_budget: TrainingBudget = Field(
        default=TrainingBudget.NONE, description="Compute for (re)training."
    )
    workload: Workload = Field(default=Workload.CHAT, description="What the model mostly serves.")
    serving_engine: TargetEngine | None = Field(
        default=None, description="The engine that must load the result."
    )
    model: str | None = Field(
        default=None,
        description="The model's shape: a bundled id (llama-3.1-8b), a config.json path or a hub id.",
    )
    device: str | None = Field(
        default=None, description="The device it runs on (knowledge/data/devices.yaml id, e.g. h100-sxm)."
    )
    context_length: int = Field(default=4096, ge=1, le=10_000_000, description="Tokens per sequence.")
    batch_size: int = Field(default=1, ge=1, le=100_000, description="Sequences served concurrently.")

    @model_validator(mode="before")
    @classmethod
    def _from_model_and_device(cls, data: Any) -> Any:
        """A named device sets the hardware kind; a named model sets the parameter count.

        Both are checked here, so a bad id fails with the close matches when the constraints are read.
        """
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        device = data.get("device")
        if isinstance(device, str) and device.strip().lower() in {"", "none", "null"}:
            data["device"] = device = None
        if isinstance(device, str):
            from knowledge.devices import DeviceError, load_device

            try:
                dev = load_device(device)
            except DeviceError as exc:
                raise ValueError(str(exc)) from None
            data["device"] = dev.id
            given = data.get("hardware")
            if given in (None, "") or str(given) == dev.hardware.value:
                data["hardware"] = dev.hardware.value
            else:
                raise ValueError(
                    f"device {dev.id!r} is {dev.hardware.value}, but hardware is {given!r}; "
                    "leave hardware out when you name a device"
                )
        model = data.get("model")
        if isinstance(model, str) and model.strip().lower() in {"", "none", "null"}:
            data["model"] = model = None
        if isinstance(model, str):
            from knowledge.shapes import ShapeError, load_shape

            try:
                shape = load_shape(model.strip())
            except ShapeError as exc:
                raise ValueError(str(exc)) from None
            if data.get("model_params") in (None, ""):
                data["model_params"] = shape.params
        return data

    # --- normalisation ---------------------------------------------------------------------------------

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, (list, tuple, set, frozenset)):
            if not v:
                raise ValueError("at least one phase")
            phases = [Phase(p) if str(p) in Phase.values() else p for p in v]
            bad = [p for p in phases if not isinstance(p, Phase)]
            if bad:
                return bad[0]  # let pydantic report the first bad phase against the enum
            return tuple(p for p in PHASE_ORDER if p in set(phases))
        return v

    @field_validator("model_params", mode="before")
    @classmethod
    def _params(cls, v: Any) -> Any:
        return parse_param_count(v)

    @field_validator("keep_original", "calibration_data", mode="before")
    @classmethod
    def _bools(cls, v: Any) -> Any:
        return _parse_bool(v)

    @field_validator("memory_gb", "serving_engine", mode="before")
    @classmethod
    def _optional(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in {"", "none", "null"}:
            return None
        return v

    # --- loaders ---------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraints:
        """Validate a mapping (from a file, flags or a form); raise :class:`ConstraintsError` on bad input."""
        if not isinstance(data, Mapping):
            raise ConstraintsError(
                f"constraints must be a mapping of field: value, got {type(data).__name__}; "
                f"allowed fields: {', '.join(FIELDS)}"
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _friendly(exc, data) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Constraints:
        """Read a YAML or JSON file (YAML is a superset of JSON, so one parser reads both)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConstraintsError(
                f"cannot read constraints file {str(p)!r}: {exc.strerror or exc}"
            ) from None
        try:
            data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ConstraintsError(f"constraints file {str(p)!r} is not valid YAML/JSON: {exc}") from None
        if data is None:
            data = {}
        try:
            return cls.from_dict(data)
        except ConstraintsError as exc:
            raise ConstraintsError(f"{p}: {exc}", field=exc.field) from None

    @classmethod
    def from_query(cls, params: Mapping[str, Any], *, strict: bool = True) -> Constraints:
        """Read the flat string mapping written by :meth:`to_query` (e.g. a URL's query parameters).

        A value may be a list (repeated query keys); its last item wins, except for ``phases`` where the
        items are joined. With ``strict=False`` keys that are not fields are ignored (other state in the URL).
        """
        data: dict[str, Any] = {}
        for key, value in params.items():
            if not strict and key not in FIELDS:
                continue
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value)) if key == "phases" else (value[-1] if value else "")
            data[key] = value
        return cls.from_dict(data)

    # --- writers ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, the shape a constraints file has; ``None`` fields are kept as ``None``."""
        return {
            "phases": [p.value for p in self.phases],
            "keep_original": self.keep_original,
            "priority": self.priority.value,
            "hardware": self.hardware.value,
            "model_params": self.model_params,
            "memory_gb": self.memory_gb,
            "max_quality_drop": self.max_quality_drop,
            "calibration_data": self.calibration_data,
            "training_budget": self.training_budget.value,
            "workload": self.workload.value,
            "serving_engine": self.serving_engine.value if self.serving_engine else None,
            "model": self.model,
            "device": self.device,
            "context_length": self.context_length,
            "batch_size": self.batch_size,
        }

    def to_query(self) -> dict[str, str]:
        """A flat mapping of strings (URL query parameters); unset optional fields are left out."""
        out: dict[str, str] = {}
        for key, value in self.to_dict().items():
            if value is None:
                continue
            if isinstance(value, list):
                out[key] = ",".join(value)
            elif isinstance(value, bool):
                out[key] = "true" if value else "false"
            elif isinstance(value, float):
                out[key] = _number(value)
            else:
                out[key] = str(value)
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> Constraints:
        """A validated copy with ``overrides`` applied (CLI flags over a file's values).

        A new ``device`` re-derives ``hardware`` and a new ``model`` re-derives ``model_params``
        (unless those are overridden too): the base's values came from the old device or model, or
        from the defaults, and keeping them would contradict the new one (``--device m3-max-64gb`` on
        the default ``nvidia-gpu``) or size the model wrongly (Llama-3.1-8B as the default 7e9).
        """
        base = self.to_dict()
        given = dict(overrides)
        for key, derived in _DERIVED.items():
            if given.get(key) not in (None, "") and derived not in given:
                base.pop(derived, None)
        return Constraints.from_dict({**base, **given})


#: fields whose value follows from another one when that one is given (see Constraints.with_overrides)
_DERIVED = {"device": "hardware", "model": "model_params"}


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


FIELDS: tuple[str, ...] = tuple(Constraints.model_fields)

#: What each field accepts, in the words the error messages use.
ALLOWED: dict[str, str] = {
    "phases": "a list (or comma-separated string) of " + ", ".join(Phase.values()),
    "keep_original": "true or false",
    "priority": ", ".join(Priority.values()),
    "hardware": ", ".join(Hardware.values()),
    "model_params": "a positive number of parameters such as 7e9, 7B, 1.5B or 135M",
    "memory_gb": "a positive number of gigabytes, or leave it out for no budget",
    "max_quality_drop": "a percentage between 0 and 100",
    "calibration_data": "true or false",
    "training_budget": ", ".join(TrainingBudget.values()),
    "workload": ", ".join(Workload.values()),
    "serving_engine": ", ".join(TargetEngine.values()) + ", or leave it out",
    "model": "a bundled model id (shrinkwise kb models), a config.json path or a hub id",
    "device": "a bundled device id (knowledge/data/devices.yaml), or leave it out",
    "context_length": "a positive number of tokens per sequence, e.g. 4096 or 131072",
    "batch_size": "a positive number of concurrent sequences",
}


def _friendly(exc: ValidationError, data: Mapping[str, Any]) -> ConstraintsError:
    """Turn pydantic's report into one message per bad field that says what to type instead."""
    lines: list[str] = []
    first: str | None = None
    for err in exc.errors():
        if not err["loc"]:  # a model-level check (device/model): its message already says what to do
            lines.append(str(err.get("ctx", {}).get("error", err["msg"])))
            continue
        field = str(err["loc"][0])
        first = first or field
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(field, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown field {field!r}{hint}; allowed fields: {', '.join(FIELDS)}")
            continue
        value = data.get(field, err.get("input"))
        if field == "phases" and err.get("input") is not None and not isinstance(err["input"], (list, tuple)):
            value = err["input"]
        lines.append(f"{field}: {value!r} is not allowed; use {ALLOWED.get(field, err['msg'])}")
    return ConstraintsError("; ".join(lines), field=first)


def allowed_values(field: str) -> str:
    """The allowed values of ``field`` as a sentence fragment (for forms and help texts)."""
    return ALLOWED[field]


def iter_fields() -> Iterable[tuple[str, Any, str]]:
    """(name, default, description) of every field, for the questionnaire and the CLI help."""
    for name, info in Constraints.model_fields.items():
        yield name, info.default, info.description or ""
