"""Stacks of compatible recipes across phases, in lifecycle order (a directed acyclic graph, networkx).

Nodes are the recipes the recommender ranked, plus those excluded only by the memory or quality
limit (a stack's combined estimate decides for them). Only recipes with a positive score take part,
at most ``PER_PHASE`` per phase (the best), which keeps the number of paths small. A recipe excluded
for any hard reason (phase, engine, device, calibration, training) never joins a stack, so a stack is
feasible on the user's device and engine; when no engine was named, its members must also share one
engine that runs all of them.

An edge A -> B means "B can be applied after A":

* B comes later in :data:`STACK_ORDER`, or in the same phase when both are dynamic and touch disjoint
  things (KV-cache quantization and token pruning both run at inference); same-phase edges go in id order
  so the graph stays acyclic. STACK_ORDER is the lifecycle order with one deliberate difference from the
  map's ``knowledge.schema.PHASE_ORDER``: fine-tuning comes *before* post-training. The paper defines
  post-training compression as applied to a fully trained model with no further training, so in a stack
  every training step (pruning with recovery tuning, distillation, trained draft heads) must happen
  before it. Pre-training steps (grouped-query attention, mixture of experts) come first;
* neither method lists the other in ``excludes``, and they are not two configurations of one method;
* they do not rewrite the same thing twice: two weight quantizers, or two recipes of one family that
  change an overlapping part of the model (a recipe's ``changes`` narrows its method's: the FP8 KV
  cache touches only the KV cache).

Paths of one to three recipes are scored by the sum of the members' scores plus ``COMPOSE_BONUS`` for
each pair whose methods list each other in ``composes_with``. The combined memory takes, per tensor
class, the fewest stored bits of any member and the fewest KV bits; the quality drop is the *sum* of the
members' drops (an upper bound: no evidence measures the stack itself), unknown when a lossy member's
is unknown. A stack must fit the memory budget and keep a known drop within the limit; stacks whose
drop is unknown come after those whose drop is known.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from knowledge.recipes import Recipe
from knowledge.schema import Impact, Method, Phase

from .constraints import Constraints
from .memory import MemoryEstimate, TensorBits, estimate_memory
from .recommend import Evaluation, _shape, rank_key

#: The order in which a stack applies its methods (see the module docstring for why it differs from PHASE_ORDER).
STACK_ORDER: tuple[Phase, ...] = (Phase.PRE_TRAINING, Phase.FINE_TUNING, Phase.POST_TRAINING, Phase.INFERENCE)

PER_PHASE = 6
MAX_LENGTH = 3
COMPOSE_BONUS = 1.0
#: A stack is skipped when it shares this Jaccard share of its members with a better stack already chosen.
MAX_OVERLAP = 0.5


@dataclass(frozen=True)
class PipelineEstimate:
    """The combined estimate of a stack: memory from the shape and an upper bound on the drop."""

    memory: MemoryEstimate
    fits: bool | None
    quality_drop_pct: float | None  # sum of the members' drops; None when a lossy member's is unknown
    note: str

    @property
    def memory_gb(self) -> float:
        return float(self.memory.weights_and_kv_gb)

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_gb": round(self.memory_gb, 3),
            "weights_gb": round(self.memory.weights_gb, 3),
            "kv_cache_gb": round(self.memory.kv_cache_gb, 3),
            "fits": self.fits,
            "quality_drop_pct": None if self.quality_drop_pct is None else round(self.quality_drop_pct, 3),
            "quality_note": self.note,
        }


@dataclass(frozen=True)
class Pipeline:
    recipes: tuple[Recipe, ...]
    methods: tuple[Method, ...]
    score: float
    compatibility_bonus: float
    estimate: PipelineEstimate
    engines: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.recipes)

    @property
    def method_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.methods)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipes": list(self.ids),
            "methods": list(self.method_ids),
            "phases": [m.phase.value for m in self.methods],
            "engines": list(self.engines),
            "score": round(self.score, 3),
            "compatibility_bonus": round(self.compatibility_bonus, 3),
            "estimate": self.estimate.to_dict(),
            "notes": list(self.notes),
        }


def _changes(e: Evaluation) -> set[str]:
    if e.recipe.changes is not None:
        return set(e.recipe.changes)
    return {c.value for c in e.method.changes}


def _weight_quantizer(e: Evaluation) -> bool:
    return e.method.family.value == "quantization" and "weights" in _changes(e)


def conflict_of(a: Evaluation, b: Evaluation) -> str | None:
    """Why recipes ``a`` and ``b`` cannot be stacked, or None when they can."""
    ma, mb = a.method, b.method
    if mb.id in ma.excludes or ma.id in mb.excludes:
        return f"{ma.id} and {mb.id} exclude each other"
    if ma.id == mb.id and _changes(a) & _changes(b):
        return f"{a.id} and {b.id} are two configurations of {ma.id}"
    if _weight_quantizer(a) and _weight_quantizer(b):
        return f"{a.id} and {b.id} both quantize the weights"
    shared = _changes(a) & _changes(b)
    if ma.family == mb.family and shared:
        return (
            f"{a.id} and {b.id} are both {ma.family.value} recipes rewriting the {', '.join(sorted(shared))}"
        )
    return None


def conflict(a: Method, b: Method) -> str | None:
    """Why methods ``a`` and ``b`` cannot be stacked (their default configurations), or None."""
    if b.id in a.excludes or a.id in b.excludes:
        return f"{a.id} and {b.id} exclude each other"
    wa = a.family.value == "quantization" and any(c.value == "weights" for c in a.changes)
    wb = b.family.value == "quantization" and any(c.value == "weights" for c in b.changes)
    if wa and wb:
        return f"{a.id} and {b.id} both quantize the weights"
    if a.family == b.family and set(a.changes) & set(b.changes):
        shared = ", ".join(sorted(c.value for c in set(a.changes) & set(b.changes)))
        return f"{a.id} and {b.id} are both {a.family.value} methods rewriting the {shared}"
    return None


def _can_follow(a: Evaluation, b: Evaluation) -> bool:
    """True when ``b`` may come after ``a`` in a stack (order only; see :func:`conflict_of`)."""
    ia, ib = STACK_ORDER.index(a.method.phase), STACK_ORDER.index(b.method.phase)
    if ib > ia:
        return True
    if ib == ia and a.method.impact is Impact.DYNAMIC and b.method.impact is Impact.DYNAMIC:
        return a.id < b.id and not (_changes(a) & _changes(b))
    if ib == ia and (a.recipe.load_time or b.recipe.load_time):  # a serving setting beside a load-time one
        return a.id < b.id and not (_changes(a) & _changes(b))
    return False


def composes(a: Method, b: Method) -> bool:
    return b.id in a.composes_with or a.id in b.composes_with


def candidate_graph(evals: Sequence[Evaluation]) -> nx.DiGraph:
    """The DAG of stackable recipes (nodes carry ``evaluation``)."""
    eligible = [e for e in evals if (not e.excluded or e.standalone_only) and e.score > 0]
    eligible.sort(key=lambda e: rank_key(e.score, e.id))
    kept: list[Evaluation] = []
    per_phase: dict[str, int] = {}
    for e in eligible:
        ph = e.method.phase.value
        if per_phase.get(ph, 0) < PER_PHASE:
            per_phase[ph] = per_phase.get(ph, 0) + 1
            kept.append(e)
    g = nx.DiGraph()
    for e in kept:
        g.add_node(e.id, evaluation=e)
    compatible: dict[tuple[str, str], bool] = {}
    for a, b in itertools.combinations(kept, 2):
        ok = conflict_of(a, b) is None
        compatible[(a.id, b.id)] = compatible[(b.id, a.id)] = ok
    g.graph["compatible"] = compatible
    for a, b in itertools.permutations(kept, 2):
        if compatible[(a.id, b.id)] and _can_follow(a, b):
            g.add_edge(a.id, b.id)
    return g


def _bits(members: Sequence[Evaluation]) -> tuple[TensorBits, float]:
    """Per tensor class, the fewest bits of any member; the fewest KV bits.

    The linear layers' figure is effective bits per original weight: a pruned member's share of kept
    parameters multiplies the fewest bits any member stores per kept weight.
    """
    mems = [e.estimate for e in members]
    kept = 1.0
    raw = 16.0
    for e, m in zip(members, mems, strict=True):
        f = e.recipe.param_fraction
        kept *= f
        raw = min(raw, m.linear_bits / f)
    low = TensorBits(
        linear=min(16.0, raw * kept),
        embedding=min(16.0, *(e.recipe.storage.embedding for e in members)),
        lm_head=min(16.0, *(e.recipe.storage.lm_head for e in members)),
        other=min(16.0, *(e.recipe.storage.other for e in members)),
    )
    return low, min(m.kv_bits for m in mems)


def combine(members: Sequence[Evaluation], constraints: Constraints) -> PipelineEstimate:
    """The combined estimate of a stack (see the module docstring)."""
    shape = _shape(constraints.model) if constraints.model else None
    bits, kv_bits = _bits(members)
    mem = estimate_memory(
        shape,
        bits,
        params=constraints.model_params,
        context=constraints.context_length,
        batch=constraints.batch_size,
        kv_bits=kv_bits,
    )
    budget = members[0].estimate.budget_gb
    fits = None if budget is None else mem.weights_and_kv_gb <= budget
    unknown = [e.id for e in members if e.estimate.quality_drop_pct is None]
    if unknown:
        drop = None
        note = f"quality unknown: no evidence for {', '.join(unknown)}"
    else:
        drop = sum(max(0.0, e.estimate.quality_drop_pct or 0.0) for e in members)
        note = "sum of the members' drops (an upper bound); no evidence measures this stack"
    return PipelineEstimate(memory=mem, fits=fits, quality_drop_pct=drop, note=note)


def _common_engines(members: Sequence[Evaluation]) -> tuple[str, ...]:
    common = list(members[0].engines)
    for e in members[1:]:
        common = [x for x in common if x in e.engines]
    return tuple(common)


def _pipeline(members: Sequence[Evaluation], constraints: Constraints) -> Pipeline:
    pairs = [
        (a.method, b.method) for a, b in itertools.combinations(members, 2) if composes(a.method, b.method)
    ]
    bonus = COMPOSE_BONUS * len(pairs)
    notes = [f"{a.id} lists {b.id} as composable" for a, b in pairs]
    if len(members) > 1:
        notes.append("order: " + " -> ".join(f"{e.id} ({e.method.phase.value})" for e in members))
    waived = [e.id for e in members if e.excluded]
    if waived:
        notes.append(f"{', '.join(waived)} alone would not pass the memory/quality limits; the stack does")
    return Pipeline(
        recipes=tuple(e.recipe for e in members),
        methods=tuple(e.method for e in members),
        score=sum(e.score for e in members) + bonus,
        compatibility_bonus=bonus,
        estimate=combine(members, constraints),
        engines=_common_engines(members),
        notes=tuple(notes),
    )


def build_pipelines(evals: Sequence[Evaluation], constraints: Constraints, k: int = 3) -> list[Pipeline]:
    """The best ``k`` distinct stacks for these evaluations (see module docstring)."""
    g = candidate_graph(evals)
    ids = sorted(g.nodes)
    ev: dict[str, Evaluation] = {i: g.nodes[i]["evaluation"] for i in ids}
    ok = g.graph["compatible"]
    succ = {i: sorted(g.successors(i)) for i in ids}
    max_drop = constraints.max_quality_drop
    found: list[tuple[int, float, tuple[str, ...]]] = []
    shape = _shape(constraints.model) if constraints.model else None
    budget = next(iter(ev.values())).estimate.budget_gb if ev else None
    bonus = {(a, b): COMPOSE_BONUS if composes(ev[a].method, ev[b].method) else 0.0 for a in ids for b in ids}
    # per node: (raw linear bits per kept weight, kept share, embedding, lm_head, other, kv bits, drop or None)
    node = {
        i: (
            e.estimate.linear_bits / e.recipe.param_fraction,
            e.recipe.param_fraction,
            e.recipe.storage.embedding,
            e.recipe.storage.lm_head,
            e.recipe.storage.other,
            e.estimate.kv_bits,
            e.estimate.quality_drop_pct,
        )
        for i, e in ev.items()
    }

    def walk(
        path: tuple[str, ...],
        state: tuple[float, ...],
        drop: float | None,
        engines: frozenset[str],
        score: float,
    ) -> None:
        # running totals (the same figures :func:`combine` computes for the chosen stacks)
        if engines:
            raw, kept, emb, head, other, kv = state
            bits = TensorBits(min(16.0, raw * kept), min(16.0, emb), min(16.0, head), min(16.0, other))
            mem = estimate_memory(
                shape,
                bits,
                params=constraints.model_params,
                context=constraints.context_length,
                batch=constraints.batch_size,
                kv_bits=kv,
            )
            fits = budget is None or mem.weights_and_kv_gb <= budget
            if fits and (drop is None or drop <= max_drop):
                found.append((0 if drop is not None else 1, score, path))
        if len(path) == MAX_LENGTH:
            return
        for nxt in succ[path[-1]]:
            if all(ok[(p, nxt)] for p in path):
                n = node[nxt]
                raw, kept, emb, head, other, kv = state
                nd = n[6]
                walk(
                    path + (nxt,),
                    (
                        min(raw, n[0]),
                        kept * n[1],
                        min(emb, n[2]),
                        min(head, n[3]),
                        min(other, n[4]),
                        min(kv, n[5]),
                    ),
                    None if drop is None or nd is None else drop + max(0.0, nd),
                    engines & frozenset(ev[nxt].engines),
                    score + ev[nxt].score + sum(bonus[(p, nxt)] for p in path),
                )

    for i in ids:
        n = node[i]
        walk((i,), n[:6], None if n[6] is None else max(0.0, n[6]), frozenset(ev[i].engines), ev[i].score)
    # stacks of two or more first when they pass: a single recipe is already in the ranked list
    found.sort(key=lambda t: (t[0], len(t[2]) == 1, -round(t[1], 9), t[2]))
    chosen: list[tuple[str, ...]] = []
    for _, _, path in found:
        if len(chosen) >= k:
            break
        s = set(path)
        if any(len(s & set(c)) / len(s | set(c)) >= MAX_OVERLAP for c in chosen):
            continue
        chosen.append(path)

    # When the user trains the model (pre-training allowed, high budget), at least one stack starts
    # with a pre-training step: the architecture is decided then, whatever evidence exists for it.
    def pretrains(path: tuple[str, ...]) -> bool:
        return any(ev[i].method.phase is Phase.PRE_TRAINING for i in path)

    can_pretrain = Phase.PRE_TRAINING in constraints.phases and constraints.training_budget.value == "high"
    if k and can_pretrain and not any(pretrains(c) for c in chosen):
        best = next((path for _, _, path in found if pretrains(path) and len(path) > 1), None)
        best = best or next((path for _, _, path in found if pretrains(path)), None)
        if best is not None:
            chosen = [*chosen[: k - 1], best] if len(chosen) >= k else [*chosen, best]
    return [_pipeline([ev[i] for i in path], constraints) for path in chosen]
