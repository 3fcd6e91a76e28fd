"""Estimates per method (the method's defaults), and the estimate of a recipe.

Since issue 10 the recommender ranks *recipes*: their memory comes from the model's shape
(``engine.memory``: weights by tensor class plus the KV cache) and their quality from evidence rows
matched on the recipe (``engine.quality``, "unknown" without rows); :class:`RecipeEstimate` at the end
of this file carries both. The per-method functions below (parameters x bits, grade fallback) remain
for a method's own page and for callers that have no recipe; the ranking no longer uses the grade
fallback.

Memory. ``model_params x footprint.param_fraction x footprint.bits_per_weight / 8`` bytes, reported in
decimal GB (1e9 bytes, what disk and most budgets use). ``bits_per_weight`` in the knowledge base already
counts scales, zeros, indices and outliers (4-bit with an fp16 scale per group of 128 is 4.125) of the
*dense* layout. When ``footprint.sparsity_stored`` is true (zeros stored compressed) only the non-zero
values are stored, plus a bitmask of one bit per weight (compressed-tensors' sparse-bitmask layout):
``bits x (1 - sparsity) + 1``; zeros that are not stored compressed save nothing. Caveat, documented rather than
guessed: the estimate applies the bits to *every* parameter, while real checkpoints usually keep the
embedding and output layers in 16 bits. For a 7B model that is a few percent more than estimated; for a
model of ~100M parameters whose embeddings are a quarter of the weights, the real file can be ~1.5x the
estimate. KV cache and activations are not weights and are not counted.

Quality. From the method's evidence rows of metric perplexity or accuracy that have a baseline: the
relative change in percent (perplexity rise, or accuracy loss relative to the baseline), median over the
rows of the models closest in size to ``model_params`` (within a factor of two of the closest). When
no such row exists the method's ``quality_drop`` grade is mapped to a nominal percent from
``engine/data/grades.yaml`` and the estimate says that it is grade-based. When rows measured by
Shrinkwise itself (``Evidence.measured_here``) are among the pooled rows, the note says so and names
the model(s) they were measured on ("measured here on SmolLM2-135M-Instruct"), so a reader can tell a
paper's figure from one of their own runs.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from knowledge.schema import Evidence, Method, Metric

GRADES_FILE = Path(__file__).parent / "data" / "grades.yaml"

QUALITY_METRICS = (Metric.PERPLEXITY, Metric.ACCURACY)

#: Evidence rows from models within this factor of the closest model size are pooled.
SIZE_POOL_FACTOR = 2.0

BASIS_EVIDENCE = "evidence"
BASIS_GRADE = "grade"


@lru_cache(maxsize=1)
def grade_tables() -> dict[str, dict[str, float]]:
    """The nominal numbers behind the paper's grades (``engine/data/grades.yaml``)."""
    with GRADES_FILE.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return {name: {str(k): float(v) for k, v in table.items()} for name, table in data.items()}


#: Index overhead of stored sparsity: a bitmask of one bit per weight position.
SPARSE_INDEX_BITS = 1.0


def stored_bits(method: Method) -> float:
    """Bits stored per weight position after the method, including stored sparsity's savings and index."""
    fp = method.footprint
    if fp.sparsity_stored and fp.sparsity:
        return fp.bits_per_weight * (1.0 - fp.sparsity) + SPARSE_INDEX_BITS
    return fp.bits_per_weight


def weight_memory_gb(model_params: float, bits_per_weight: float, param_fraction: float = 1.0) -> float:
    """Bytes of weights after compression, in GB (1e9). 7e9 params at 4.125 bits -> 3.61 GB."""
    return model_params * param_fraction * bits_per_weight / 8.0 / 1e9


_UNIT = {"b": 1e9, "m": 1e6}
_RANGE = re.compile(r"(\d+(?:\.\d+)?)\s*([bm])\s*-\s*(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
_SIZE = re.compile(r"(?<![0-9.])(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def model_size_from_name(name: str) -> float | None:
    """Parameters read from a model name: 'LLaMA-2-7B' -> 7e9, 'OPT-125M' -> 1.25e8, 'Mixtral-8x7B' -> 5.6e10.

    A range ('6B-20B LLMs') gives its geometric middle.
    ``NxMB`` (mixture of experts) is read as N*M, an upper bound on the total; None when no size is named.
    """
    rng = _RANGE.search(name)
    if rng:  # "6B-20B LLMs": the geometric middle of the range
        lo = float(rng.group(1)) * _UNIT[rng.group(2).lower()]
        hi = float(rng.group(3)) * _UNIT[rng.group(4).lower()]
        return math.sqrt(lo * hi)
    found = None
    for m in _SIZE.finditer(name):
        found = m  # the last size in the name is the model's ("Llama-3.1-8B", "Qwen2-VL-7B")
    if not found:
        return None
    count = float(found.group(2)) * (1e9 if found.group(3).lower() == "b" else 1e6)
    if found.group(1):
        count *= float(found.group(1))
    return count


def quality_drop_of(row: Evidence) -> float | None:
    """Percent quality drop of one row: perplexity rise, or accuracy loss, relative to its baseline."""
    if row.metric not in QUALITY_METRICS or row.baseline in (None, 0):
        return None
    change = (row.value - row.baseline) / row.baseline * 100.0
    return change if row.metric is Metric.PERPLEXITY else -change


@dataclass(frozen=True)
class QualityEstimate:
    pct: float
    basis: str  # "evidence" or "grade"
    note: str
    rows: tuple[Evidence, ...] = ()
    measured_on: tuple[str, ...] = ()  # models of the pooled rows that Shrinkwise measured itself

    @property
    def from_evidence(self) -> bool:
        return self.basis == BASIS_EVIDENCE


_BITS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-\s*bit|\s+bits?\b|\s+average bits)", re.IGNORECASE)

#: Rows whose setting names a bit width within this distance of the method's bits per weight are preferred.
BITS_MATCH = 0.5


#: A run's setting names its configuration as ``key=value`` ("gptq (bits=4, group_size=128)"); only the
#: ``bits`` key counts (not ``qq_bits``, SpQR's bits of its scales).
_BITS_KEY = re.compile(r"(?<![a-z_])bits\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def bits_from_setting(setting: str) -> float | None:
    """'4-bit, no grouping' -> 4.0; 'SpQR, 3.94 average bits per weight' -> 3.94; a measured run's
    'gptq (bits=4, group_size=128)' -> 4.0; None when no width is named."""
    m = _BITS.search(setting) or _BITS_KEY.search(setting)
    return float(m.group(1)) if m else None


def expected_quality_drop(method: Method, rows: Iterable[Evidence], model_params: float) -> QualityEstimate:
    """Median relative quality drop over the evidence of the models closest in size; grade as fallback.

    For a quantizer, rows whose setting names a bit width close to the method's own bits per weight
    (within ``BITS_MATCH``) are used when there are any, so 3-bit rows do not count against a 4-bit entry.
    """
    usable = [r for r in rows if r.method == method.id and quality_drop_of(r) is not None]
    bits = method.footprint.bits_per_weight
    if usable and bits < 16:
        matching = [
            r
            for r in usable
            if (b := bits_from_setting(r.setting)) is not None and abs(b - bits) <= BITS_MATCH
        ]
        if matching:
            usable = matching
    if usable:
        sized = [(r, model_size_from_name(r.model)) for r in usable]
        with_size = [(r, s) for r, s in sized if s]
        if with_size:
            dist = {id(r): abs(math.log(s / model_params)) for r, s in with_size}
            best = min(dist.values())
            chosen = [r for r, _ in with_size if dist[id(r)] <= best + math.log(SIZE_POOL_FACTOR)]
        else:
            chosen = usable
        # input order must not matter: the same rows give the same answer and the same listing
        chosen.sort(
            key=lambda r: (r.model, r.dataset or "", r.setting, r.metric.value, r.value, r.source.locator)
        )
        # every chosen row has a drop (``usable`` kept only those); the filter states it for the checker
        pct = statistics.median(d for r in chosen if (d := quality_drop_of(r)) is not None)
        models = sorted({r.model for r in chosen})
        measured = [r for r in chosen if r.measured_here]
        measured_on = tuple(sorted({r.model for r in measured}))
        if measured and len(measured) == len(chosen):
            note = f"measured here on {', '.join(measured_on)}: median of {len(chosen)} measured row(s)"
        elif measured:
            note = (
                f"median of {len(chosen)} evidence row(s) on {', '.join(models)}, "
                f"{len(measured)} of them measured here on {', '.join(measured_on)}"
            )
        else:
            note = f"median of {len(chosen)} evidence row(s) on {', '.join(models)}"
        return QualityEstimate(
            pct=float(pct), basis=BASIS_EVIDENCE, note=note, rows=tuple(chosen), measured_on=measured_on
        )
    grade = method.grades.quality_drop.value
    pct = grade_tables()["quality_drop_pct"][grade]
    note = f"grade-based fallback: no perplexity/accuracy evidence; grade '{grade}' read as ~{pct:g}%"
    return QualityEstimate(pct=pct, basis=BASIS_GRADE, note=note)


def evidence_row_dict(row: Evidence) -> dict[str, Any]:
    """One evidence row as the JSON output shows it."""
    drop = quality_drop_of(row)
    return {
        "model": row.model,
        "setting": row.setting,
        "metric": row.metric.value,
        "dataset": row.dataset,
        "value": row.value,
        "baseline": row.baseline,
        "quality_drop_pct": None if drop is None else round(drop, 3),
        "source": f"{row.source.paper}, {row.source.locator}",
        "measured_here": row.measured_here,
    }


@dataclass(frozen=True)
class Estimate:
    """What one method (or stack) does to a model of ``model_params`` parameters."""

    bits_per_weight: float
    param_fraction: float
    memory_gb: float
    fits: bool | None  # None when no memory budget was given
    quality_drop_pct: float
    quality_basis: str
    quality_note: str
    evidence: tuple[Evidence, ...] = field(default=())
    #: Models on which Shrinkwise itself measured rows used by the quality estimate (empty: papers only).
    quality_measured_on: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits_per_weight": round(self.bits_per_weight, 4),
            "param_fraction": round(self.param_fraction, 4),
            "memory_gb": round(self.memory_gb, 3),
            "fits": self.fits,
            "quality_drop_pct": round(self.quality_drop_pct, 3),
            "quality_basis": self.quality_basis,
            "quality_note": self.quality_note,
            "quality_measured_on": list(self.quality_measured_on),
            "evidence": [evidence_row_dict(r) for r in self.evidence],
        }


def fits_budget(memory_gb: float, budget_gb: float | None) -> bool | None:
    return None if budget_gb is None else memory_gb <= budget_gb


def estimate(
    method: Method, rows: Sequence[Evidence], model_params: float, memory_budget_gb: float | None = None
) -> Estimate:
    """Memory, fit and expected quality drop of ``method`` applied to a ``model_params`` model."""
    fp = method.footprint
    bits = stored_bits(method)
    mem = weight_memory_gb(model_params, bits, fp.param_fraction)
    q = expected_quality_drop(method, rows, model_params)
    return Estimate(
        bits_per_weight=bits,
        param_fraction=fp.param_fraction,
        memory_gb=mem,
        fits=fits_budget(mem, memory_budget_gb),
        quality_drop_pct=q.pct,
        quality_basis=q.basis,
        quality_note=q.note,
        evidence=q.rows,
        quality_measured_on=q.measured_on,
    )


# --- recipes (second version of the recommender) ---------------------------------------------------------


@dataclass(frozen=True)
class RecipeEstimate:
    """What one recipe does to the user's model: memory from the shape (weights and KV cache, with the
    16-bit deployment beside it) and the quality estimate from evidence (``engine.quality``).

    ``fits`` compares weights + KV cache with the budget (the runtime overhead is shown, not charged);
    None when there is no budget.
    """

    memory: Any  # engine.memory.MemoryEstimate
    baseline: Any  # engine.memory.MemoryEstimate of the 16-bit deployment
    quality: Any  # engine.quality.QualityEstimate
    linear_bits: float
    kv_bits: float
    fits: bool | None
    budget_gb: float | None

    @property
    def memory_gb(self) -> float:
        return float(self.memory.weights_and_kv_gb)

    @property
    def quality_drop_pct(self) -> float | None:
        drop = self.quality.drop_pct
        return None if drop is None else float(drop)

    @property
    def quality_known(self) -> bool:
        return self.quality.drop_pct is not None

    @property
    def quality_basis(self) -> str:
        return str(self.quality.basis)

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_gb": round(self.memory_gb, 3),
            "weights_gb": round(self.memory.weights_gb, 3),
            "kv_cache_gb": round(self.memory.kv_cache_gb, 3),
            "overhead_gb": round(self.memory.overhead_gb, 3),
            "baseline_memory_gb": round(float(self.baseline.weights_and_kv_gb), 3),
            "memory": self.memory.to_dict(),
            "linear_bits": round(self.linear_bits, 4),
            "kv_bits": round(self.kv_bits, 3),
            "fits": self.fits,
            "budget_gb": self.budget_gb,
            "quality_drop_pct": None if self.quality_drop_pct is None else round(self.quality_drop_pct, 3),
            "quality_basis": self.quality_basis,
            "quality": self.quality.to_dict(),
        }
