"""Sweeps: several recipes run on one model with one shared text, compared on one chart (issue 14).

A sweep is a parent of ordinary jobs. :func:`create_sweep` stores a :class:`knowledge.tables.Sweep` row
and submits one child job per recipe through :func:`jobs.backend.get_backend` (the local worker pool, or
a cluster backend), each a ``CompressionRun`` with ``sweep_id`` and ``recipe`` set. Everything else is
read back from the children:

* **Status** (:func:`derive_status`): counted from the children's states, never stored, so it cannot
  disagree with them. Cancelling a sweep (:func:`cancel_sweep`) cancels its unfinished children.
* **The original is measured once.** Every child gets the same calibration and evaluation settings, so
  they share one key in :mod:`compressors.measure_cache`; children that run at the same time wait on
  :class:`compressors.measure_cache.BaselineLock` while the first measures, then reuse its measurement.
  A lock (rather than a baseline job queued first) because children may run in any order, on any worker
  or cluster node sharing the data folder, and a failed first measurement must not block the others.
* **Recipe set** (:func:`build_recipe_set`): the recommendation's ranked recipes that Shrinkwise can run
  itself (a recipe names its bundled compressor), plus neighbours (:func:`neighbours`: bits one step
  either way, group size 64/128, unstructured vs 2:4 sparsity, the next GGUF type), each validated by the
  compressor's own config, deduplicated by compressor and settings.
* **Measured vs predicted** (:func:`measured_points`, :func:`comparison_rows`, :func:`pareto`,
  :func:`select_within_limits`): the recommender's predicted point of every recipe is stored with the
  sweep when it starts (``Sweep.predicted``), next to the user's limits, so the page compares the
  measurements with the prediction that led to them.
* **Measured on your model** (:func:`measured_on_model`, :func:`annotate_recommendation`): the latest
  measurement of each swept recipe on a model, which the Recommend page shows on that recipe's card.

No Streamlit here: the page is ``app/views/sweep.py``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import col, select

from jobs import queue
from jobs.backend import JobBackend, JobInfo, JobSpec, get_backend
from knowledge.db import init_db, session
from knowledge.ids import MethodId
from knowledge.tables import RunStatus, Sweep

log = logging.getLogger(__name__)

#: How many of the recommendation's bundled recipes a sweep preselects, and how many recipes at most.
DEFAULT_TOP = 3
MAX_RECIPES = 8

#: The demo model is SmolLM2-135M-Instruct: its bundled shape, for "measured on your model".
DEMO_MODEL_KEY = "smollm2-135m"


# ---------------------------------------------------------------------------------------------------
# the recipes of a sweep


@dataclass(frozen=True)
class SweepItem:
    """One recipe of a sweep: what its child job runs. ``recipe`` is a knowledge-base recipe id, or
    ``<base>@<setting>=<value>`` for a neighbour the knowledge base has no recipe for."""

    recipe: str
    name: str
    method: str
    compressor: str
    config: dict[str, Any]
    neighbour_of: str | None = None

    def key(self) -> tuple[str, str]:
        """Identity for deduplication: the compressor and its full, normalised settings."""
        return self.compressor, json.dumps(self.config, sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepItem:
        return cls(
            recipe=str(data["recipe"]),
            name=str(data.get("name") or data["recipe"]),
            method=str(data["method"]),
            compressor=str(data["compressor"]),
            config=dict(data.get("config") or {}),
            neighbour_of=data.get("neighbour_of"),
        )


def _normalise(compressor: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The compressor's full settings for ``config`` (defaults filled), or None when it refuses them."""
    from compressors.base import CompressionError, CompressorId, get_compressor

    try:
        out: dict[str, Any] = (
            get_compressor(CompressorId(compressor)).config_cls.from_dict(dict(config)).to_dict()
        )
        return out
    except (CompressionError, KeyError, ValueError, TypeError):
        return None


def item_for_recipe(recipe: Any) -> SweepItem | None:
    """The sweep item of a knowledge-base recipe, or None when Shrinkwise has no compressor for it (or
    the compressor refuses the recipe's flags)."""
    comp = getattr(recipe, "compressor", None)
    if comp is None:
        return None
    config = _normalise(comp.id, comp.flags)
    if config is None:
        return None
    return SweepItem(recipe.id, recipe.name, recipe.method, comp.id, config)


def _fields(compressor: str) -> dict[str, dict[str, Any]]:
    from compressors.base import CompressorId, get_compressor

    return {f["name"]: f for f in get_compressor(CompressorId(compressor)).config_cls.describe()}


def _adjacent(choices: Sequence[Any], value: Any) -> list[Any]:
    """The choices just below and just above ``value`` in the compressor's own order."""
    ordered = sorted(choices) if all(isinstance(c, (int, float)) for c in choices) else list(choices)
    if value not in ordered:
        return []
    i = ordered.index(value)
    return [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)]


def _group_neighbour(group: int) -> int:
    """Group size 128 <-> 64; any other group size (per-channel -1 included) -> 128."""
    return 64 if group == 128 else 128


def neighbours(item: SweepItem) -> list[SweepItem]:
    """Settings next to ``item`` worth measuring beside it, each accepted by the compressor.

    Only the settings the recipe itself sets are varied (its bits, group size, sparsity pattern, GGUF
    type), one at a time: bits one step down and up among the compressor's choices, group size 64 vs
    128, unstructured vs 2:4 sparsity, the GGUF type on either side.
    """
    fields = _fields(item.compressor)
    changes: list[tuple[str, Any]] = []
    cfg = item.config
    if "bits" in cfg and fields.get("bits", {}).get("choices"):
        changes += [("bits", b) for b in _adjacent(fields["bits"]["choices"], cfg["bits"])]
    if "group_size" in cfg and isinstance(cfg["group_size"], int):
        changes.append(("group_size", _group_neighbour(cfg["group_size"])))
    if "pattern" in cfg and "choices" in fields.get("pattern", {}):
        other = "2:4" if cfg["pattern"] == "unstructured" else "unstructured"
        if other in fields["pattern"]["choices"]:
            changes.append(("pattern", other))
    if "type" in cfg and fields.get("type", {}).get("choices"):
        changes += [("type", t) for t in _adjacent(fields["type"]["choices"], cfg["type"])]
    out = []
    for name, value in changes:
        config = _normalise(item.compressor, {**cfg, name: value})
        if config is None or config == cfg:
            continue
        out.append(
            SweepItem(
                recipe=f"{item.recipe}@{name}={value}",
                name=f"{item.name}, {name.replace('_', ' ')} {value}",
                method=item.method,
                compressor=item.compressor,
                config=config,
                neighbour_of=item.recipe,
            )
        )
    return out


def build_recipe_set(
    ranked_ids: Sequence[str],
    recipes: Mapping[str, Any],
    *,
    top: int = DEFAULT_TOP,
    with_neighbours: bool = True,
    limit: int = MAX_RECIPES,
) -> list[SweepItem]:
    """The preselected recipes of a sweep: the first ``top`` recipes of ``ranked_ids`` (the
    recommendation's feasible recipes, best first) that have a bundled compressor, then their neighbours,
    deduplicated by compressor and settings, at most ``limit`` in all.

    A neighbour whose settings are those of a knowledge-base recipe takes that recipe's id and name, so
    the recommender's prediction for it is shown too.
    """
    by_key: dict[tuple[str, str], SweepItem] = {}
    for rid in recipes:
        known = item_for_recipe(recipes[rid])
        if known is not None:
            by_key.setdefault(known.key(), known)
    chosen: list[SweepItem] = []
    seen: set[tuple[str, str]] = set()

    def add(item: SweepItem) -> None:
        if item.key() in seen or len(chosen) >= limit:
            return
        seen.add(item.key())
        chosen.append(item)

    base = []
    for rid in ranked_ids:
        recipe = recipes.get(rid)
        item = item_for_recipe(recipe) if recipe is not None else None
        if item is None:
            continue
        base.append(item)
        if len(base) >= top:
            break
    for item in base:
        add(item)
    if with_neighbours:
        for item in base:
            for n in neighbours(item):
                known = by_key.get(n.key())
                add(
                    SweepItem(
                        known.recipe, known.name, known.method, known.compressor, known.config, item.recipe
                    )
                    if known
                    else n
                )
    return chosen


# ---------------------------------------------------------------------------------------------------
# predictions and limits, as stored with the sweep


def predicted_point(estimate: Any, rank: int | None = None, score: float | None = None) -> dict[str, Any]:
    """The recommender's point for one recipe (an ``engine.estimates.RecipeEstimate``) as JSON.

    ``bits_per_weight`` is the whole model's stored bits per weight the estimate implies (its weights
    against the same weights in 16 bits), comparable with a run's measured ``model_bits_per_weight``
    whatever the model's size. The recommender predicts no speed (``speed`` is None).
    """
    q = estimate.quality
    weights = float(estimate.memory.weights_gb)
    base = float(estimate.baseline.weights_gb) or None
    return {
        "memory_gb": round(float(estimate.memory_gb), 4),
        "weights_gb": round(weights, 4),
        "kv_cache_gb": round(float(estimate.memory.kv_cache_gb), 4),
        "bits_per_weight": None if base is None else round(16.0 * weights / base, 3),
        "quality_drop_pct": q.drop_pct,
        "low_pct": q.low_pct,
        "high_pct": q.high_pct,
        "quality_basis": str(q.basis),
        "quality_note": q.note,
        "speed": None,
        "rank": rank,
        "score": None if score is None else round(float(score), 3),
    }


def predictions(
    constraints: Any, catalog: Any, items: Iterable[SweepItem], ranked_ids: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """The recommender's predicted point of every knowledge-base recipe among ``items`` for
    ``constraints`` (excluded recipes too: a recipe is predicted whether or not it is ranked)."""
    from engine.recommend import evaluate

    wanted = {i.recipe for i in items}
    rank = {rid: n for n, rid in enumerate(ranked_ids, 1)}
    out = {}
    for e in evaluate(constraints, catalog.methods, catalog.evidence, recipes=catalog.recipes):
        if e.id in wanted:
            out[e.id] = predicted_point(e.estimate, rank.get(e.id), e.score)
    return out


def limits_of(constraints: Any) -> dict[str, Any]:
    """The user's limits a sweep selects with: the quality drop and memory budget of the constraints."""
    return {
        "max_quality_drop": float(constraints.max_quality_drop),
        "memory_gb": None if constraints.memory_gb is None else float(constraints.memory_gb),
        "constraints": constraints.to_query(),
    }


# ---------------------------------------------------------------------------------------------------
# creating, reading and cancelling sweeps


def create_sweep(
    *,
    model_ref: str,
    model_name: str,
    items: Sequence[SweepItem],
    calibration: Mapping[str, Any] | None = None,
    owner: str | None = None,
    predicted: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
    model_key: str | None = None,
    origin: str = "compress",
    backend: JobBackend | None = None,
    url: str | None = None,
) -> Sweep:
    """Store a sweep and submit one child job per item, all with the same ``calibration`` (text and
    budget), through ``backend`` (default :func:`jobs.backend.get_backend`). Returns the stored sweep.

    Every child's settings are validated before anything is stored, so a refused recipe
    (``CompressionError`` naming it) leaves no half-made sweep.
    """
    from compressors.base import CompressionError, CompressorId

    if not items:
        raise CompressionError("a sweep needs at least one recipe")
    if len({i.recipe for i in items}) != len(items):
        raise CompressionError("a sweep lists a recipe twice")
    cal = dict(calibration or {})
    specs = []
    for item in items:
        spec = JobSpec(
            model_ref=model_ref,
            model_name=model_name,
            method=MethodId(item.method),
            compressor=CompressorId(item.compressor),
            config=dict(item.config),
            calibration=cal,
            owner=owner,
            recipe=item.recipe,
        )
        try:
            spec.validate()
        except CompressionError as exc:
            raise CompressionError(f"{item.name}: {exc}") from None
        specs.append(spec)
    if model_key is None and model_ref == "demo":
        model_key = DEMO_MODEL_KEY
    init_db(url)
    sweep = Sweep(
        owner=owner,
        model_ref=model_ref,
        model_name=model_name,
        model_key=model_key,
        calibration=cal,
        recipes=[i.to_json() for i in items],
        predicted=dict(predicted or {}),
        limits=dict(limits or {}),
        origin=origin,
    )
    with session(url) as s:
        s.add(sweep)
        s.flush()
        s.refresh(sweep)
    runner = backend or get_backend(url=url)
    for spec in specs:
        spec.sweep_id = sweep.stored_id
        runner.submit(spec)
    log.info("sweep #%s: %d recipes on %s", sweep.id, len(specs), model_name)
    return sweep


def get_sweep(public_id: str, url: str | None = None) -> Sweep | None:
    """The sweep a link names (``?sweep=<public_id>``), or None."""
    if not public_id:
        return None
    init_db(url)
    with session(url) as s:
        found: Sweep | None = s.exec(select(Sweep).where(Sweep.public_id == public_id)).first()
        return found


def get_sweep_by_id(sweep_id: int, url: str | None = None) -> Sweep | None:
    """The sweep a run's ``sweep_id`` names, or None."""
    init_db(url)
    with session(url) as s:
        return s.get(Sweep, sweep_id)


def list_sweeps(
    *,
    owner: str | None = None,
    model_key: str | None = None,
    limit: int | None = None,
    url: str | None = None,
) -> list[Sweep]:
    """Sweeps, newest first, filtered by owner (None: everyone's) and model."""
    init_db(url)
    q = select(Sweep)
    if owner is not None:
        q = q.where(Sweep.owner == owner)
    if model_key is not None:
        q = q.where(Sweep.model_key == model_key)
    q = q.order_by(col(Sweep.id).desc())
    if limit is not None:
        q = q.limit(limit)
    with session(url) as s:
        return list(s.exec(q).all())


def children(sweep: Sweep, url: str | None = None) -> list[JobInfo]:
    """The sweep's jobs in the order they were submitted."""
    rows = queue.list_runs(sweep_id=sweep.stored_id, newest_first=False, url=url)
    return [JobInfo.from_row(r) for r in rows]


@dataclass(frozen=True)
class SweepStatus:
    """A sweep's state, counted from its children.

    ``state``: ``queued`` (nothing started), ``running`` (something queued or running, something started),
    and once every child ended: ``succeeded`` (all), ``partial`` (some succeeded, others failed or were
    cancelled), ``failed`` (none succeeded, at least one failed), ``cancelled`` (all cancelled).
    """

    counts: dict[str, int]
    state: str

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        return self.counts.get("queued", 0) + self.counts.get("running", 0) == 0

    @property
    def done(self) -> int:
        return self.total - self.counts.get("queued", 0) - self.counts.get("running", 0)


def derive_status(statuses: Iterable[RunStatus | str]) -> SweepStatus:
    """The sweep's state from its children's statuses (see :class:`SweepStatus`)."""
    counts = {s.value: 0 for s in RunStatus}
    for st in statuses:
        counts[RunStatus(st).value] += 1
    q, r = counts["queued"], counts["running"]
    ok, bad, cancelled = counts["succeeded"], counts["failed"], counts["cancelled"]
    if q + r:
        state = "queued" if r == 0 and ok + bad + cancelled == 0 else "running"
    elif ok and not bad and not cancelled:
        state = "succeeded"
    elif ok:
        state = "partial"
    elif bad:
        state = "failed"
    else:
        state = "cancelled"
    return SweepStatus(counts=counts, state=state)


def sweep_status(sweep: Sweep, url: str | None = None) -> SweepStatus:
    return derive_status(j.status for j in children(sweep, url))


def cancel_sweep(sweep: Sweep, backend: JobBackend | None = None, url: str | None = None) -> list[int]:
    """Cancel the sweep's unfinished children (queued ones at once, running ones asked to stop); returns
    their ids. Finished children keep their results."""
    runner = backend or get_backend(url=url)
    ended = []
    for job in children(sweep, url):
        if job.active:
            runner.cancel(job.id)
            ended.append(job.id)
    return ended


# ---------------------------------------------------------------------------------------------------
# measured points, the front, the choice within limits, measured vs predicted


@dataclass(frozen=True)
class MeasuredPoint:
    """One succeeded child: where it landed on the charts."""

    recipe: str
    name: str
    job_id: int
    public_id: str | None
    quality_drop_pct: float  # perplexity rise over the same model before, percent
    perplexity_before: float
    perplexity_after: float
    size_bytes: float | None
    bits_per_weight: float | None  # whole model, as stored
    decode_tokens_per_s: float | None
    prefill_tokens_per_s: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def measured_points(sweep: Sweep, jobs: Sequence[JobInfo]) -> list[MeasuredPoint]:
    """The measured point of every succeeded child that has perplexity before and after."""
    names = {i.recipe: i.name for i in (SweepItem.from_json(r) for r in sweep.recipes or [])}
    out = []
    for j in jobs:
        if j.status is not RunStatus.SUCCEEDED:
            continue
        b, a = j.before_metrics, j.after_metrics
        pb, pa = _num(b.get("perplexity")), _num(a.get("perplexity"))
        if not pb or pa is None:
            continue
        rid = j.recipe or f"job-{j.id}"
        out.append(
            MeasuredPoint(
                recipe=rid,
                name=names.get(rid, rid),
                job_id=j.id,
                public_id=j.public_id,
                quality_drop_pct=100.0 * (pa - pb) / pb,
                perplexity_before=pb,
                perplexity_after=pa,
                size_bytes=_num(a.get("size_bytes")),
                bits_per_weight=_num(a.get("model_bits_per_weight")),
                decode_tokens_per_s=_num(a.get("decode_tokens_per_s")),
                prefill_tokens_per_s=_num(a.get("prefill_tokens_per_s")),
            )
        )
    return out


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when both coordinates are minimised, by x then y."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def size_front(points: Sequence[MeasuredPoint], attr: str = "size_bytes") -> list[MeasuredPoint]:
    """The measured Pareto front of size against quality drop; ``attr`` is the size the chart plots
    (``size_bytes`` on disk or ``bits_per_weight``), so the front drawn is the front of what is shown:
    two 4-bit recipes of equal bits per weight may differ by a few bytes on disk."""
    sized = [p for p in points if getattr(p, attr) is not None]
    return [sized[i] for i in pareto([(float(getattr(p, attr) or 0.0), p.quality_drop_pct) for p in sized])]


def speed_front(points: Sequence[MeasuredPoint]) -> list[MeasuredPoint]:
    """The measured front of decode speed (higher is better) against quality drop."""
    fast = [p for p in points if p.decode_tokens_per_s]
    return [fast[i] for i in pareto([(-(p.decode_tokens_per_s or 0.0), p.quality_drop_pct) for p in fast])]


def within_limits(point: MeasuredPoint, limits: Mapping[str, Any], predicted: Mapping[str, Any]) -> bool:
    """Whether a measured point meets the user's limits: its quality drop at most ``max_quality_drop``,
    and, with a memory budget, its measured weights (size on disk) plus the KV cache the recommender
    predicted for that recipe at most ``memory_gb``."""
    drop = limits.get("max_quality_drop")
    if drop is not None and point.quality_drop_pct > float(drop):
        return False
    budget = limits.get("memory_gb")
    if budget is not None:
        if point.size_bytes is None:
            return False
        kv = float((predicted.get(point.recipe) or {}).get("kv_cache_gb") or 0.0)
        if point.size_bytes / 1e9 + kv > float(budget):
            return False
    return True


def select_within_limits(
    points: Sequence[MeasuredPoint], limits: Mapping[str, Any], predicted: Mapping[str, Any]
) -> MeasuredPoint | None:
    """The recipe the user's limits select: among the measured points within the limits, the smallest
    on disk (compression is for size; the quality limit says how much loss is acceptable), ties broken
    by the lower quality drop. None when no measured point meets the limits."""
    ok = [p for p in points if within_limits(p, limits, predicted)]
    if not ok:
        return None
    return min(ok, key=lambda p: (p.size_bytes if p.size_bytes is not None else math.inf, p.quality_drop_pct))


def comparison_rows(
    items: Sequence[SweepItem],
    predicted: Mapping[str, Any],
    jobs: Sequence[JobInfo],
    points: Sequence[MeasuredPoint],
) -> list[dict[str, Any]]:
    """The measured-vs-predicted table: one row per recipe of the sweep, in the sweep's order.

    ``in_range`` says whether the measured drop lies in the predicted range (None when either is
    missing); ``drop_error_pct`` is measured minus predicted, in percentage points.
    """
    by_recipe = {p.recipe: p for p in points}
    status = {j.recipe: j.status.value for j in jobs}
    rows = []
    for item in items:
        pred = predicted.get(item.recipe) or {}
        m = by_recipe.get(item.recipe)
        pd, lo, hi = pred.get("quality_drop_pct"), pred.get("low_pct"), pred.get("high_pct")
        md = None if m is None else m.quality_drop_pct
        rows.append(
            {
                "recipe": item.recipe,
                "name": item.name,
                "status": status.get(item.recipe, "not submitted"),
                "predicted_bits_per_weight": pred.get("bits_per_weight"),
                "measured_bits_per_weight": None if m is None else m.bits_per_weight,
                "predicted_drop_pct": pd,
                "predicted_low_pct": lo,
                "predicted_high_pct": hi,
                "measured_drop_pct": md,
                "drop_error_pct": None if md is None or pd is None else md - float(pd),
                "in_range": None if md is None or lo is None or hi is None else float(lo) <= md <= float(hi),
                "predicted_weights_gb": pred.get("weights_gb"),
                "measured_size_mb": None if m is None or m.size_bytes is None else m.size_bytes / 1e6,
                "decode_tokens_per_s": None if m is None else m.decode_tokens_per_s,
                "quality_basis": pred.get("quality_basis"),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# measured on your model: what the recommender shows for a swept recipe


def measured_on_model(
    model_key: str | None, owner: str | None = None, url: str | None = None
) -> dict[str, dict[str, Any]]:
    """The newest measurement of each recipe swept on the model ``model_key`` (a bundled shape id, the
    Recommend page's model), visible to ``owner`` (None: everyone's): recipe id -> figures and links."""
    if not model_key:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for sweep in list_sweeps(owner=owner, model_key=model_key, url=url):  # newest first
        jobs = children(sweep, url)
        for p in measured_points(sweep, jobs):
            if p.recipe in out:
                continue
            out[p.recipe] = {
                "quality_drop_pct": round(p.quality_drop_pct, 3),
                "perplexity_before": p.perplexity_before,
                "perplexity_after": p.perplexity_after,
                "size_bytes": p.size_bytes,
                "bits_per_weight": p.bits_per_weight,
                "decode_tokens_per_s": p.decode_tokens_per_s,
                "model_name": sweep.model_name,
                "sweep": sweep.public_id,
                "run": p.public_id,
                "eval": (sweep.calibration or {}).get("eval"),
            }
    return out


def annotate_recommendation(doc: dict[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """The recommendation document with ``measured`` (see :func:`measured_on_model`) added to each
    ranked recipe that was swept on this model, as ``r["measured"]``; the document is changed in place
    and returned. The prediction stays as it was, beside the measurement."""
    for key in ("ranked",):
        for r in doc.get(key) or []:
            if r.get("id") in measured:
                r["measured"] = dict(measured[r["id"]])
    alt = doc.get("bundled_alternative")
    if alt and alt.get("id") in measured:
        alt["measured"] = dict(measured[alt["id"]])
    return doc
