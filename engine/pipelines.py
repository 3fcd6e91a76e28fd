"""Stacks of compatible methods across phases, in lifecycle order (a directed acyclic graph, networkx).

Nodes are the methods the recommender ranked, plus those excluded only for a reason about the method
used alone (weight memory, quality): a stack's combined estimate decides for them. Only methods with a
positive score take part, and at most ``PER_PHASE`` per phase (the best), which keeps the number of paths
small enough for an interactive request.

An edge A -> B means "B can be applied after A":

* B comes later in :data:`STACK_ORDER`, or in the same phase when both are dynamic and touch disjoint
  things (KV-cache quantization and token pruning both run at inference); same-phase edges go in id order
  so the graph stays acyclic. STACK_ORDER is the lifecycle order with one deliberate difference from the
  map's ``knowledge.schema.PHASE_ORDER``: fine-tuning comes *before* post-training. The paper defines
  post-training compression as applied to a fully trained model with no further training, so in a stack
  every training step (pruning with recovery tuning, distillation, trained draft heads) must happen
  before it; this is the order of the issue's example (structural pruning at fine-tuning -> 4-bit
  post-training quantization -> token pruning at inference). On the map, fine-tuning stays where the
  paper draws it;
* neither lists the other in ``excludes``;
* they do not rewrite the same thing twice: two weight quantizers, or two methods of one family that
  change an overlapping part of the model (two pruners, two speculative decoders) conflict.

Paths of one to three methods are scored by the sum of the members' scores plus ``COMPOSE_BONUS`` for
each pair that lists the other in ``composes_with``. The combined estimate takes the fewest bits of any
member, the product of the parameter fractions, and the *sum* of the members' quality drops, an upper
bound since no evidence measures the stack itself. A stack must fit the memory budget and keep that upper
bound within the acceptable quality drop.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from knowledge.schema import Impact, Method, Phase

from .constraints import Constraints
from .estimates import Estimate, fits_budget, weight_memory_gb
from .recommend import Evaluation, rank_key

#: The order in which a stack applies its methods (see the module docstring for why it differs from PHASE_ORDER).
STACK_ORDER: tuple[Phase, ...] = (Phase.PRE_TRAINING, Phase.FINE_TUNING, Phase.POST_TRAINING, Phase.INFERENCE)

PER_PHASE = 6
MAX_LENGTH = 3
COMPOSE_BONUS = 1.0
#: A stack is skipped when it shares this Jaccard share of its members with a better stack already chosen.
MAX_OVERLAP = 0.5


@dataclass(frozen=True)
class Pipeline:
    methods: tuple[Method, ...]
    score: float
    compatibility_bonus: float
    estimate: Estimate
    notes: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.methods)

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": list(self.ids),
            "phases": [m.phase.value for m in self.methods],
            "score": round(self.score, 3),
            "compatibility_bonus": round(self.compatibility_bonus, 3),
            "estimate": self.estimate.to_dict(),
            "notes": list(self.notes),
        }


def _weight_quantizer(m: Method) -> bool:
    return m.family.value == "quantization" and any(c.value == "weights" for c in m.changes)


def conflict(a: Method, b: Method) -> str | None:
    """Why ``a`` and ``b`` cannot be stacked, or None when they can."""
    if b.id in a.excludes or a.id in b.excludes:
        return f"{a.id} and {b.id} exclude each other"
    if _weight_quantizer(a) and _weight_quantizer(b):
        return f"{a.id} and {b.id} both quantize the weights"
    if a.family == b.family and set(a.changes) & set(b.changes):
        shared = ", ".join(sorted(c.value for c in set(a.changes) & set(b.changes)))
        return f"{a.id} and {b.id} are both {a.family.value} methods rewriting the {shared}"
    return None


def _can_follow(a: Method, b: Method) -> bool:
    """True when ``b`` may come after ``a`` in a stack (order only; see :func:`conflict`)."""
    ia, ib = STACK_ORDER.index(a.phase), STACK_ORDER.index(b.phase)
    if ib > ia:
        return True
    if ib == ia and a.impact is Impact.DYNAMIC and b.impact is Impact.DYNAMIC:
        return a.id < b.id and not (set(a.changes) & set(b.changes))
    return False


def composes(a: Method, b: Method) -> bool:
    return b.id in a.composes_with or a.id in b.composes_with


def candidate_graph(evals: Sequence[Evaluation]) -> nx.DiGraph:
    """The DAG of stackable methods (nodes carry ``evaluation``)."""
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
        compatible[(a.id, b.id)] = compatible[(b.id, a.id)] = conflict(a.method, b.method) is None
    g.graph["compatible"] = compatible  # every pair, for checking whole stacks
    for a, b in itertools.permutations(kept, 2):
        if compatible[(a.id, b.id)] and _can_follow(a.method, b.method):
            g.add_edge(a.id, b.id)
    return g


def combine(evals: Sequence[Evaluation], constraints: Constraints) -> Estimate:
    """The combined estimate of a stack (see module docstring for how each figure combines)."""
    bits = min(e.estimate.bits_per_weight for e in evals)
    fraction = 1.0
    for e in evals:
        fraction *= e.estimate.param_fraction
    mem = weight_memory_gb(constraints.model_params, bits, fraction)
    drop = sum(max(0.0, e.estimate.quality_drop_pct) for e in evals)
    bases = sorted({e.estimate.quality_basis for e in evals})
    return Estimate(
        bits_per_weight=bits,
        param_fraction=fraction,
        memory_gb=mem,
        fits=fits_budget(mem, constraints.memory_gb),
        quality_drop_pct=drop,
        quality_basis="sum of members (upper bound)",
        quality_note=f"sum of the members' drops ({'/'.join(bases)}-based); no evidence measures this stack",
        evidence=(),
    )


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
        methods=tuple(e.method for e in members),
        score=sum(e.score for e in members) + bonus,
        compatibility_bonus=bonus,
        estimate=combine(members, constraints),
        notes=tuple(notes),
    )


def build_pipelines(evals: Sequence[Evaluation], constraints: Constraints, k: int = 3) -> list[Pipeline]:
    """The best ``k`` distinct stacks for these evaluations (see module docstring).

    Paths are walked over the DAG with running totals (score, fewest bits, parameter fraction, summed
    drop) and pairwise compatibility looked up in a table built once, so only the chosen few become
    :class:`Pipeline` objects.
    """
    g = candidate_graph(evals)
    ids = sorted(g.nodes)
    ev = {i: g.nodes[i]["evaluation"] for i in ids}
    ok = g.graph["compatible"]
    bonus = {
        (a, b): COMPOSE_BONUS if composes(ev[a].method, ev[b].method) else 0.0
        for a in ids
        for b in ids
        if a != b
    }
    succ = {i: sorted(g.successors(i)) for i in ids}
    params, budget, max_drop = constraints.model_params, constraints.memory_gb, constraints.max_quality_drop
    found: list[tuple[float, tuple[str, ...]]] = []

    def walk(path: tuple[str, ...], score: float, bits: float, fraction: float, drop: float) -> None:
        mem = weight_memory_gb(params, bits, fraction)
        if (budget is None or mem <= budget) and drop <= max_drop:
            found.append((score, path))
        if len(path) == MAX_LENGTH:
            return
        for nxt in succ[path[-1]]:
            if all(ok[(p, nxt)] for p in path):  # every pair in the stack, not only neighbours
                e = ev[nxt].estimate
                walk(
                    path + (nxt,),
                    score + ev[nxt].score + sum(bonus[(p, nxt)] for p in path),
                    min(bits, e.bits_per_weight),
                    fraction * e.param_fraction,
                    drop + max(0.0, e.quality_drop_pct),
                )

    for i in ids:
        e = ev[i].estimate
        walk((i,), ev[i].score, e.bits_per_weight, e.param_fraction, max(0.0, e.quality_drop_pct))

    found.sort(key=lambda sp: (-round(sp[0], 9), sp[1]))
    chosen: list[tuple[str, ...]] = []
    for _, path in found:
        if len(chosen) >= k:
            break
        s = set(path)
        if any(len(s & set(c)) / len(s | set(c)) >= MAX_OVERLAP for c in chosen):
            continue
        chosen.append(path)
    return [_pipeline([ev[i] for i in path], constraints) for path in chosen]
