"""The measured figures of a compression run, typed once from the evaluation harness to the database.

:class:`RunMetrics` is what a run's ``before_metrics``/``after_metrics`` JSON columns hold. Its fields are
the names the pages and the evidence read (``size_bytes``, ``peak_memory_bytes``...); each field also
says which :class:`compressors.evaluate.EvalResult` attribute it is measured as (``size_on_disk_bytes``)
and which evidence metric it becomes, in which unit. That used to be two renaming tables that had to
agree (``METRIC_ALIASES`` in the job executor, ``METRIC_KEYS`` in the run evidence); now adding a figure
is one field here.

Everything else the harness returns (the greedy generation, token counts...) is kept as extra keys, so
the stored JSON carries all of it; keys written by older versions (``size_mb``, ``peak_memory_gb``, the
harness's own names) are still read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from knowledge.schema import Metric

log = logging.getLogger(__name__)


class Figure(NamedTuple):
    """How a field becomes evidence: the metric, the divisor to its unit, what the setting says of it."""

    metric: Metric
    per_unit: float
    what: str


class RunMetrics(BaseModel):
    """One side (before or after) of a run's measurements. ``None``: not measured (or not finite)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    perplexity: float | None = Field(default=None, json_schema_extra={"metric": Metric.PERPLEXITY.value})
    size_bytes: int | float | None = Field(
        default=None,
        validation_alias=AliasChoices("size_bytes", "size_on_disk_bytes"),
        json_schema_extra={"metric": Metric.SIZE_MB.value, "per_unit": 1e6, "what": "size on disk"},
    )
    bits_per_weight: float | None = Field(
        default=None,
        validation_alias=AliasChoices("bits_per_weight", "bits_per_weight_compressed"),
        json_schema_extra={"metric": Metric.BITS_PER_WEIGHT.value, "what": "compressed layers"},
    )
    model_bits_per_weight: float | None = Field(
        default=None,
        validation_alias=AliasChoices("model_bits_per_weight", "bits_per_weight_model"),
        json_schema_extra={"metric": Metric.BITS_PER_WEIGHT.value, "what": "whole model"},
    )
    decode_tokens_per_s: float | None = Field(
        default=None, json_schema_extra={"metric": Metric.TOKENS_PER_S.value, "what": "decode"}
    )
    prefill_tokens_per_s: float | None = Field(
        default=None, json_schema_extra={"metric": Metric.TOKENS_PER_S.value, "what": "prefill"}
    )
    peak_memory_bytes: int | float | None = Field(
        default=None,
        validation_alias=AliasChoices("peak_memory_bytes", "peak_rss_bytes"),
        json_schema_extra={"metric": Metric.MEMORY_GB.value, "per_unit": 1e9, "what": "peak memory"},
    )
    params: int | float | None = Field(
        default=None,
        validation_alias=AliasChoices("params", "n_params"),
        json_schema_extra={"metric": Metric.PARAMETERS_B.value, "per_unit": 1e9, "what": "parameters"},
    )
    sparsity: float | None = Field(
        default=None, json_schema_extra={"metric": Metric.SPARSITY.value, "what": "weight sparsity"}
    )

    @model_validator(mode="before")
    @classmethod
    def _older_units(cls, data: Any) -> Any:
        """Rows written by hand or by older versions gave sizes in MB and memory in GB."""
        if isinstance(data, dict):
            data = dict(data)
            for old, new, factor in (
                ("size_mb", "size_bytes", 1e6),
                ("peak_memory_gb", "peak_memory_bytes", 1e9),
            ):
                if data.get(old) is not None and data.get(new) is None:
                    try:
                        data[new] = float(data.pop(old)) * factor
                    except (TypeError, ValueError):
                        pass
        return data

    @field_validator(
        "perplexity",
        "size_bytes",
        "bits_per_weight",
        "model_bits_per_weight",
        "decode_tokens_per_s",
        "prefill_tokens_per_s",
        "peak_memory_bytes",
        "params",
        "sparsity",
        mode="before",
    )
    @classmethod
    def _number_or_none(cls, value: Any) -> int | float | None:
        """A diverged (inf/NaN) or unreadable figure is 'not measured', never an error: JSON has no inf.
        Counts (bytes, parameters) measured as whole numbers stay whole numbers in the stored JSON."""
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            log.warning("a run metric is not a number (%r); ignored", value)
            return None
        return number if math.isfinite(number) else None

    # -- in --------------------------------------------------------------------------------------

    @classmethod
    def from_eval(cls, result: Any, **extra: Any) -> RunMetrics:
        """From an ``EvalResult`` (or its dict): its figures under their stored names, the rest as is."""
        if result is None:
            data: dict[str, Any] = {}
        elif isinstance(result, dict):
            data = dict(result)
        elif hasattr(result, "to_dict"):
            data = dict(result.to_dict())
        elif dataclasses.is_dataclass(result) and not isinstance(result, type):  # an instance, not a class
            data = dataclasses.asdict(result)
        else:
            data = dict(vars(result))
        json_like = (int, float, str, bool, type(None), dict, list)
        data = {k: v for k, v in data.items() if isinstance(v, json_like)}
        return cls.model_validate({**data, **extra})

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RunMetrics:
        """From a stored ``before_metrics``/``after_metrics`` column (any version)."""
        return cls.model_validate(dict(data or {}))

    # -- out -------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """What the run's JSON column stores: measured figures under their names, plus every extra key."""
        figures = {
            name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None
        }
        return {**figures, **(self.model_extra or {})}

    @classmethod
    def figures(cls) -> Iterator[tuple[str, Figure]]:
        """``(field name, Figure)`` for each field that becomes evidence, in evidence order."""
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and "metric" in extra:
                per_unit = extra.get("per_unit", 1.0)
                yield (
                    name,
                    Figure(
                        Metric(str(extra["metric"])),
                        float(per_unit) if isinstance(per_unit, (int, float)) else 1.0,
                        str(extra.get("what", "")),
                    ),
                )

    def in_unit(self, name: str) -> float | None:
        """Field ``name`` in its evidence metric's unit (MB, GB, billions), or None when not measured."""
        value = getattr(self, name)
        figure = dict(self.figures())[name]
        return None if value is None else value / figure.per_unit
