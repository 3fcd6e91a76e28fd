"""The recommender: every method is evaluated against every rule, then ranked or excluded, with reasons.

Pure: methods and evidence come in as arguments (the CLI and the app load them from the knowledge
base), so the same function serves tests with three fixture methods and the app with the whole catalog.

Example::

    from knowledge.catalog import load_catalog
    from engine import Constraints, recommend

    cat = load_catalog()
    rec = recommend(Constraints(phases=("inference",), keep_original=True), cat.methods, cat.evidence)
    rec.ranked[0].id, rec.ranked[0].reasons[0].text
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.schema import Evidence, Method

from .axes import Position, position
from .constraints import Constraints
from .context import constraint_symbols, display, method_symbols
from .estimates import Estimate, estimate
from .ruleset import RuleSet, default_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reason:
    """One rule that fired for a method: the sentence the user reads and what it did to the score."""

    rule_id: str
    text: str
    effect: str  # exclude | score | note
    weight: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "text": self.text,
            "effect": self.effect,
            "weight": round(self.weight, 4),
            "source": self.source,
        }


@dataclass(frozen=True)
class Evaluation:
    """A method after all rules: its score, every reason, and whether (and why) it is excluded."""

    method: Method
    score: float
    reasons: tuple[Reason, ...]  # score and note reasons, strongest first
    exclusions: tuple[Reason, ...]
    estimate: Estimate
    position: Position
    standalone_only: bool  # every exclusion concerns the method used alone (a stack may still use it)

    @property
    def id(self) -> str:
        return self.method.id

    @property
    def excluded(self) -> bool:
        return bool(self.exclusions)


@dataclass(frozen=True)
class RankedMethod:
    method: Method
    score: float
    reasons: tuple[Reason, ...]
    estimate: Estimate
    position: Position

    @property
    def id(self) -> str:
        return self.method.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(self.score, 3),
            "reasons": [r.to_dict() for r in self.reasons],
            "estimate": self.estimate.to_dict(),
        }


@dataclass(frozen=True)
class ExcludedMethod:
    method: Method
    reasons: tuple[Reason, ...]
    estimate: Estimate

    @property
    def id(self) -> str:
        return self.method.id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reasons": [r.to_dict() for r in self.reasons]}


@dataclass(frozen=True)
class Recommendation:
    ranked: tuple[RankedMethod, ...]  # best first (ties: by id)
    excluded: tuple[ExcludedMethod, ...]  # by id
    pipelines: tuple[Any, ...]  # engine.pipelines.Pipeline, best first
    constraints: Constraints

    def to_dict(self) -> dict[str, Any]:
        """The ``shrinkwise recommend --json`` document."""
        return {
            "ranked": [r.to_dict() for r in self.ranked],
            "excluded": [e.to_dict() for e in self.excluded],
            "pipelines": [p.to_dict() for p in self.pipelines],
            "constraints": self.constraints.to_dict(),
        }

    @property
    def ranked_ids(self) -> list[str]:
        return [r.id for r in self.ranked]

    @property
    def excluded_ids(self) -> list[str]:
        return [e.id for e in self.excluded]

    def get(self, method_id: str) -> RankedMethod | ExcludedMethod:
        items: list[RankedMethod | ExcludedMethod] = [*self.ranked, *self.excluded]
        for item in items:
            if item.id == method_id:
                return item
        raise KeyError(f"method {method_id!r} is not in this recommendation")


def _as_mapping(methods: Mapping[str, Method] | Iterable[Method]) -> Mapping[str, Method]:
    if isinstance(methods, Mapping):
        return methods
    return {m.id: m for m in methods}


def index_evidence(evidence: Sequence[Evidence]) -> dict[str, list[Evidence]]:
    """Evidence rows grouped by method id (one pass, per request)."""
    out: dict[str, list[Evidence]] = defaultdict(list)
    for row in evidence:
        out[row.method].append(row)
    return out


def evaluate(
    constraints: Constraints,
    methods: Mapping[str, Method] | Iterable[Method],
    evidence: Sequence[Evidence] = (),
    *,
    rules: RuleSet | None = None,
) -> list[Evaluation]:
    """Every method against every rule, in id order. :func:`recommend` ranks the result."""
    rules = rules if rules is not None else default_rules()
    by_method = index_evidence(evidence)
    cctx = constraint_symbols(constraints)
    baseline_gb = cctx["c_baseline_memory_gb"]
    # the compiled closure where there is one (all bundled rules), rule-engine's evaluator otherwise
    checks = [(rule, rule.fast or rule.parsed.matches) for rule in rules]
    mapping = _as_mapping(methods)
    out: list[Evaluation] = []
    for mid in sorted(mapping):
        m = mapping[mid]
        rows = by_method.get(mid, ())
        est = estimate(m, rows, constraints.model_params, constraints.memory_gb)
        pos = position(m)
        ctx = cctx | method_symbols(m, est, pos, len(rows), baseline_gb)
        shown: dict[str, Any] | None = None
        score = 0.0
        reasons: list[Reason] = []
        exclusions: list[Reason] = []
        standalone = True
        for rule, test in checks:
            if not test(ctx):
                continue
            weight = rule.weight_for(ctx) if rule.effect == "score" else 0.0
            if rule.effect == "score" and weight == 0.0:
                continue  # scaled to nothing (e.g. size grade 'low'): not a reason
            if shown is None:
                shown = display(ctx)
            reason = Reason(rule.id, rule.text(shown), rule.effect, weight, rule.source)
            if rule.effect == "exclude":
                exclusions.append(reason)
                standalone = standalone and rule.standalone
            else:
                score += weight
                reasons.append(reason)
        # strongest reasons first (then file order, which is stable); notes last
        order = {r.rule_id: i for i, r in enumerate(reasons)}
        reasons.sort(key=lambda r: (r.effect == "note", -abs(r.weight), order[r.rule_id]))
        out.append(
            Evaluation(
                method=m,
                score=score,
                reasons=tuple(reasons),
                exclusions=tuple(exclusions),
                estimate=est,
                position=pos,
                standalone_only=bool(exclusions) and standalone,
            )
        )
    return out


def rank_key(score: float, method_id: str) -> tuple[float, str]:
    """Best first; equal scores (to 1e-9) in id order, so the output is deterministic."""
    return (-round(score, 9), method_id)


def recommend(
    constraints: Constraints | Mapping[str, Any],
    methods: Mapping[str, Method] | Iterable[Method],
    evidence: Sequence[Evidence] = (),
    top: int | None = None,
    *,
    rules: RuleSet | None = None,
    max_pipelines: int = 3,
) -> Recommendation:
    """Rank every method for ``constraints`` (or exclude it, with the rules that excluded it).

    ``constraints`` may also be a plain mapping (validated, :class:`ConstraintsError` on bad values);
    ``top`` truncates the ranked list (pipelines are still built from every eligible method);
    ``rules`` defaults to the bundled ``engine/rules/rules.yaml``, parsed once per process.
    """
    if not isinstance(constraints, Constraints):
        constraints = Constraints.from_dict(constraints)
    from .pipelines import build_pipelines  # pipelines import this module's types

    if top is not None and top < 0:
        raise ValueError(f"top must be a positive number of methods or None for all, got {top}")
    evals = evaluate(constraints, methods, evidence, rules=rules)
    ranked_evals = sorted((e for e in evals if not e.excluded), key=lambda e: rank_key(e.score, e.id))
    ranked = tuple(
        RankedMethod(
            method=e.method, score=e.score, reasons=e.reasons, estimate=e.estimate, position=e.position
        )
        for e in ranked_evals
    )
    excluded = tuple(
        ExcludedMethod(method=e.method, reasons=e.exclusions, estimate=e.estimate)
        for e in evals
        if e.excluded
    )
    pipelines = tuple(build_pipelines(evals, constraints, k=max_pipelines)) if max_pipelines else ()
    log.debug("recommend: %d ranked, %d excluded, %d pipelines", len(ranked), len(excluded), len(pipelines))
    return Recommendation(
        ranked=ranked if top is None else ranked[:top],
        excluded=excluded,
        pipelines=pipelines,
        constraints=constraints,
    )
