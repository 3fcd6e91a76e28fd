"""Expected quality drop of a recipe on a model, calibrated on the evidence rows.

The estimate is made in four steps, each stated in the result's ``basis`` and ``note``:

1. **Lossless** recipes (speculative decoding, architecture choices made at pre-training) drop 0 by
   construction: the output distribution is the original model's.
2. **Which rows.** The rows tagged with the recipe (``basis="config"``); when there are none, the
   rows of the same method at the same bits (``basis="method"``), of the group size nearest to the
   recipe's (per-channel, ``-1``, counts as the largest group). Only rows with a perplexity or
   accuracy figure and a baseline count. No rows: ``basis="unknown"``, ``drop_pct=None``: never
   assumed to meet a budget.
3. **Which family.** When some of those rows are of the user's model family, only they are used
   (``family_match=True``); otherwise all of them.
4. **Which size.** One row's drop is its relative perplexity rise, or its relative accuracy loss, in
   percent. When the rows span two or more model sizes the drop is fitted by least squares against
   ``log10(params)`` (quantization error shrinks as models grow: GPTQ Table 3, AWQ Table 4) and the
   fit is read at the model's size, clamped to the sizes measured (a 405B model reads the fit at the
   largest size in the rows; the range then also covers the fit extrapolated to the real size). With
   one size only, the median of the rows at the size nearest (in log) to the model's, with no
   extrapolation (the note names the sizes the rows come from, e.g. "175B", so a reader sees it).

The range (``low_pct`` .. ``high_pct``) is the spread of the rows used around the point: the
smallest and largest residual of the fit, or the smallest and largest row at the nearest size, so
it always contains the point.

Speed. The recommender asks for ~60 recipes per request. The rows are indexed once per evidence
tuple (:class:`QualityIndex`, cached by the tuple's identity in :func:`index_for`), so one estimate
is a dictionary lookup and a fit over a handful of rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.schema import Evidence, Metric

BASIS_LOSSLESS = "lossless"
BASIS_CONFIG = "config"
BASIS_METHOD = "method"
BASIS_UNKNOWN = "unknown"

#: Metrics that measure quality (perplexity rises, accuracy falls).
QUALITY_METRICS = frozenset({Metric.PERPLEXITY, Metric.ACCURACY})

#: Per-channel quantization (``group_size=-1``) compared with group sizes as if it were this large.
PER_CHANNEL_GROUP = 1 << 16

#: Two sizes closer than this (in log10) are the same size: 6.7B and 7B models are one point.
SAME_SIZE_LOG10 = 0.05

#: Estimates remembered per index (recipe x model); the memo is emptied when it grows past this.
MEMO_LIMIT = 4096


@dataclass(frozen=True)
class QualityEstimate:
    """Expected quality drop of one recipe on one model, with the range and what it rests on."""

    drop_pct: float | None  # point estimate, percent; None = unknown
    low_pct: float | None
    high_pct: float | None
    basis: str  # "lossless" | "config" | "method" | "unknown"
    rows: int  # evidence rows used
    family_match: bool  # rows of the model's own family were used
    note: str  # one sentence a user reads

    @property
    def known(self) -> bool:
        return self.drop_pct is not None

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "drop_pct": r(self.drop_pct),
            "low_pct": r(self.low_pct),
            "high_pct": r(self.high_pct),
            "basis": self.basis,
            "rows": self.rows,
            "family_match": self.family_match,
            "note": self.note,
        }


def row_drop_pct(row: Evidence) -> float | None:
    """Percent quality drop of one row: perplexity rise, or accuracy loss, relative to its baseline.

    None for rows that do not measure quality or have no baseline.
    """
    if row.metric not in QUALITY_METRICS or row.baseline is None or row.baseline == 0:
        return None
    change = (row.value - row.baseline) / row.baseline * 100.0
    return change if row.metric is Metric.PERPLEXITY else -change


@dataclass(frozen=True)
class _Row:
    """What the estimate needs of one evidence row, computed once when the index is built."""

    drop: float
    log_params: float | None
    family: str | None
    group: int | None  # group size with per-channel as PER_CHANNEL_GROUP
    model: str


def _group_key(group_size: int | None) -> int | None:
    if group_size is None:
        return None
    return PER_CHANNEL_GROUP if group_size == -1 else group_size


def _bits_key(bits: float | None) -> float | None:
    return None if bits is None else round(bits, 2)


class QualityIndex:
    """The quality rows of an evidence collection, indexed by recipe and by (method, bits).

    Build it once per evidence collection; :meth:`estimate` is then cheap. ``estimate_quality`` does
    this through :func:`index_for`, which caches the index by the identity of the evidence tuple.
    """

    def __init__(self, evidence: Sequence[Evidence]) -> None:
        self.by_recipe: dict[str, list[_Row]] = {}
        self.by_method_bits: dict[tuple[str, float | None], list[_Row]] = {}
        self._memo: dict[tuple[Any, ...], QualityEstimate] = {}
        for ev in evidence:
            drop = row_drop_pct(ev)
            if drop is None or not math.isfinite(drop):
                continue
            row = _Row(
                drop=drop,
                log_params=math.log10(ev.params) if ev.params else None,
                family=ev.family,
                group=_group_key(ev.group_size),
                model=ev.model,
            )
            if ev.recipe is not None:
                self.by_recipe.setdefault(ev.recipe, []).append(row)
            self.by_method_bits.setdefault((str(ev.method), _bits_key(ev.bits)), []).append(row)

    def estimate(
        self,
        recipe_id: str,
        method_id: str,
        *,
        bits: float | None,
        group_size: int | None,
        lossless: bool,
        params: float,
        family: str | None,
    ) -> QualityEstimate:
        """See :func:`estimate_quality`."""
        key = (recipe_id, method_id, bits, group_size, lossless, params, family)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._estimate(recipe_id, method_id, bits, group_size, lossless, params, family)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = hit
        return hit

    def _estimate(
        self,
        recipe_id: str,
        method_id: str,
        bits: float | None,
        group_size: int | None,
        lossless: bool,
        params: float,
        family: str | None,
    ) -> QualityEstimate:
        if lossless:
            return QualityEstimate(
                drop_pct=0.0,
                low_pct=0.0,
                high_pct=0.0,
                basis=BASIS_LOSSLESS,
                rows=0,
                family_match=False,
                note=f"{recipe_id}: lossless by construction (the output distribution is the original model's)",
            )
        rows = self.by_recipe.get(recipe_id, [])
        basis = BASIS_CONFIG
        what = f"{recipe_id}"
        if not rows:
            basis = BASIS_METHOD
            rows = self._nearest_group(self.by_method_bits.get((method_id, _bits_key(bits)), []), group_size)
            bits_text = f" at {bits:g} bits" if bits is not None else ""
            groups = sorted({r.group for r in rows if r.group is not None})
            group_text = ""
            if groups:
                group_text = ", " + (
                    "per-channel" if groups[0] == PER_CHANNEL_GROUP else f"group size {groups[0]}"
                )
            what = f"{method_id}{bits_text}{group_text} (no rows of {recipe_id} itself)"
        if not rows:
            return QualityEstimate(
                drop_pct=None,
                low_pct=None,
                high_pct=None,
                basis=BASIS_UNKNOWN,
                rows=0,
                family_match=False,
                note=f"{recipe_id}: unknown, no evidence row of this recipe or of {method_id}"
                + (f" at {bits:g} bits" if bits is not None else ""),
            )
        same_family = [r for r in rows if family is not None and r.family == family]
        family_match = bool(same_family)
        if same_family:
            rows = same_family
        point, low, high, how = _size_model(rows, math.log10(params))
        families = sorted({r.family for r in rows if r.family})
        fam_text = "/".join(families) if families else "unstated families"
        if family is not None and not family_match:
            fam_text += f" (no {family} rows)"
        note = (
            f"{what}: {len(rows)} row(s) on {fam_text} {_size_span(rows)}, {how}: "
            f"{point:+.1f}% ({low:+.1f}% to {high:+.1f}%)"
        )
        return QualityEstimate(
            drop_pct=point,
            low_pct=low,
            high_pct=high,
            basis=basis,
            rows=len(rows),
            family_match=family_match,
            note=note,
        )

    @staticmethod
    def _nearest_group(rows: list[_Row], group_size: int | None) -> list[_Row]:
        """The rows whose group size is nearest (in log2) to ``group_size``; all when it is not given."""
        want = _group_key(group_size)
        grouped = [r for r in rows if r.group is not None]
        if want is None or not grouped:
            return rows
        dist = {r.group: abs(math.log2(r.group) - math.log2(want)) for r in grouped if r.group}
        best = min(dist.values())
        return [r for r in grouped if r.group is not None and dist[r.group] == best]


def _size_span(rows: Sequence[_Row]) -> str:
    sizes = sorted({r.log_params for r in rows if r.log_params is not None})
    if not sizes:
        return "of unstated size"
    lo, hi = _fmt_params(10 ** sizes[0]), _fmt_params(10 ** sizes[-1])
    return lo if lo == hi else f"{lo}-{hi}"


def _fmt_params(p: float) -> str:
    return f"{p / 1e9:.3g}B" if p >= 1e9 else f"{p / 1e6:.3g}M"


def _size_model(rows: Sequence[_Row], x: float) -> tuple[float, float, float, str]:
    """(point, low, high, how) for a model of log10 size ``x`` from ``rows``."""
    sized = [r for r in rows if r.log_params is not None]
    xs = [r.log_params for r in sized if r.log_params is not None]
    distinct: list[float] = []
    for v in sorted(xs):
        if not distinct or v - distinct[-1] > SAME_SIZE_LOG10:
            distinct.append(v)
    if len(distinct) >= 2:
        ys = [r.drop for r in sized]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((a - mx) ** 2 for a in xs)
        slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sxx
        intercept = my - slope * mx
        residuals = [b - (intercept + slope * a) for a, b in zip(xs, ys, strict=True)]
        lo_x, hi_x = min(xs), max(xs)
        xc = min(max(x, lo_x), hi_x)
        point = intercept + slope * xc
        low, high = point + min(residuals), point + max(residuals)
        how = "fit against log size"
        if xc != x:  # outside the sizes measured: the range also covers the extrapolated fit
            extrapolated = intercept + slope * x
            low, high = min(low, extrapolated), max(high, extrapolated)
            how += " (read at the nearest measured size)"
        # a straight line through rows of very different drops (one model that collapses) can read far
        # outside every measured drop: the point stays within the rows' drops, and the range within one
        # spread of them (and never below -100%: a perplexity cannot fall by more than all of it)
        lo_y, hi_y = min(ys), max(ys)
        spread = hi_y - lo_y
        point = min(max(point, lo_y), hi_y)
        low = min(max(low, lo_y - spread, -100.0), point)
        high = max(min(high, hi_y + spread), point)
        return point, low, high, how
    if sized:
        best = min(abs(v - x) for v in xs)
        near = [
            r for r in sized if r.log_params is not None and abs(r.log_params - x) <= best + SAME_SIZE_LOG10
        ]
    else:
        near = list(rows)
    drops = [r.drop for r in near]
    how = "median at the nearest size" if sized else "median"
    return statistics.median(drops), min(drops), max(drops), how


# ---------------------------------------------------------------------------------------------------
# The API the recommender calls

_INDEXES: dict[int, tuple[Sequence[Evidence], QualityIndex]] = {}
_MAX_INDEXES = 8


def index_for(evidence: Sequence[Evidence]) -> QualityIndex:
    """The :class:`QualityIndex` of ``evidence``, built once per collection object.

    Keyed by the object's identity (the catalog's evidence is one tuple for the process); the entry
    keeps a reference to the collection, so an id is never reused for another object while cached.
    Pass an immutable sequence (a tuple): a list changed after indexing would not be re-read.
    """
    hit = _INDEXES.get(id(evidence))
    if hit is not None and hit[0] is evidence:
        return hit[1]
    index = QualityIndex(evidence)
    if len(_INDEXES) >= _MAX_INDEXES:
        _INDEXES.pop(next(iter(_INDEXES)))
    _INDEXES[id(evidence)] = (evidence, index)
    return index


def index_by_recipe(evidence: Sequence[Evidence]) -> QualityIndex:
    """Alias of :func:`index_for`, the contract's name for the helper."""
    return index_for(evidence)


def estimate_quality(
    recipe_id: str,
    method_id: str,
    *,
    bits: float | None,
    group_size: int | None,
    lossless: bool,
    params: float,
    family: str | None,
    evidence: Sequence[Evidence],
) -> QualityEstimate:
    """Expected quality drop of recipe ``recipe_id`` (of method ``method_id``) on a model of ``params``
    parameters of ``family``, from ``evidence`` (see the module docstring for the steps).

    >>> estimate_quality("speculative-eagle", "eagle", bits=None, group_size=None, lossless=True,
    ...                  params=8e9, family="llama-3", evidence=()).drop_pct
    0.0
    """
    if params <= 0:
        raise ValueError(f"params must be a positive parameter count (e.g. 7e9), got {params!r}")
    return index_for(evidence).estimate(
        recipe_id,
        method_id,
        bits=bits,
        group_size=group_size,
        lossless=lossless,
        params=params,
        family=family,
    )
