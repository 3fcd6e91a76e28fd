"""The recommender: every recipe is evaluated against every rule, then ranked or excluded, with reasons.

A *recipe* (``knowledge.recipes``) is a method with a concrete configuration, format, engines and
commands; a method without recipe data is ranked as its default recipe. For each recipe:

1. **Hard constraints** exclude, with the reason: the phase is not allowed, the recipe changes the
   model while the original must stay (load-time quantization and lossless decoding leave the
   checkpoint untouched and are allowed), calibration or training needs are not met, no usable engine
   runs it (a named engine that does not load the format, or research code only), the hardware or the
   named device lacks the kernel or number format (FP8 W8A8 needs compute capability 8.9, Marlin
   8.0, CUDA-only kernels exclude phones and Macs, x86-only runtimes exclude Apple silicon).
2. **Memory** from the model's shape (``engine.memory``): weights at the recipe's stored bits and the
   KV cache at its KV bits for ``context_length x batch_size``; the budget (``memory_gb``, else the
   named device's memory) is checked against weights + KV cache.
3. **Quality** from evidence (``engine.quality``): a drop over the limit excludes; a recipe without
   evidence is *unknown* and ranks below every recipe whose evidence meets the limit.
4. **Ranking**: recipes that meet memory and quality first, then the unknown ones; within each group
   by score, the sum of the rules' weights (the user's priorities and the paper's claims, each an
   explained adjustment; ``engine/rules/rules.yaml``).

Pure: methods, recipes and evidence come in as arguments (the CLI and the app load them from the
knowledge base). Example::

    from knowledge.catalog import load_catalog
    from engine import Constraints, recommend

    cat = load_catalog()
    c = Constraints(model="llama-3.1-8b", device="h100-sxm", serving_engine="vllm", max_quality_drop=1)
    rec = recommend(c, cat.methods, cat.evidence, recipes=cat.recipes)
    rec.ranked[0].id, rec.ranked[0].commands["serve"]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from knowledge.recipes import Recipe, compress_command, describe, fill, recipes_for, run_it_query
from knowledge.schema import Evidence, Method

from .axes import Position, position
from .constraints import Constraints
from .context import constraint_symbols, display, method_symbols
from .estimates import Estimate, RecipeEstimate
from .memory import TensorBits, estimate_memory, llama_cpp_bits
from .quality import index_for
from .ruleset import RuleSet, default_rules

log = logging.getLogger(__name__)

#: Tiers of the ranking: evidence meets the limits, or the quality is unknown.
TIER_MEETS = "meets"
TIER_UNKNOWN = "quality-unknown"


@dataclass(frozen=True)
class Reason:
    """One rule that fired for a recipe: the sentence the user reads and what it did to the score."""

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
    """A recipe after all rules: its score, every reason, and whether (and why) it is excluded."""

    recipe: Recipe
    method: Method
    score: float
    reasons: tuple[Reason, ...]  # score and note reasons, strongest first
    exclusions: tuple[Reason, ...]
    estimate: RecipeEstimate
    position: Position
    standalone_only: bool  # every exclusion concerns the recipe used alone (memory, quality)
    engines: tuple[str, ...]  # engines usable here, best first

    @property
    def id(self) -> str:
        return self.recipe.id

    @property
    def excluded(self) -> bool:
        return bool(self.exclusions)

    @property
    def tier(self) -> str:
        return TIER_MEETS if self.estimate.quality_known else TIER_UNKNOWN


def _commands(recipe: Recipe, engines: Sequence[str], model: str) -> dict[str, Any]:
    out_dir = f"out/{recipe.id}"
    serve = {}
    for use in recipe.engines:
        if not engines or use.engine.value in engines:
            serve[use.engine.value] = fill(use.serve, model, out_dir)
    return {
        "compress": compress_command(recipe, model, out_dir),
        "produce": fill(" ".join(recipe.produce.split()) if recipe.produce else None, model, out_dir),
        "serve": serve,
        "run_it": run_it_query(recipe),
    }


@dataclass(frozen=True)
class RankedRecipe:
    recipe: Recipe
    method: Method
    score: float
    reasons: tuple[Reason, ...]
    estimate: RecipeEstimate
    position: Position
    engines: tuple[str, ...]
    tier: str
    commands: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.recipe.id

    @property
    def method_id(self) -> str:
        return self.method.id

    @property
    def engine(self) -> str | None:
        return self.engines[0] if self.engines else None

    @property
    def bundled(self) -> bool:
        return self.recipe.compressor is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            **describe(self.recipe),
            "phase": self.method.phase.value,
            "impact": self.method.impact.value,
            "score": round(self.score, 3),
            "tier": self.tier,
            "engine": self.engine,
            "engines": list(self.engines),
            "bundled": self.bundled,
            "commands": self.commands,
            "reasons": [r.to_dict() for r in self.reasons],
            "estimate": self.estimate.to_dict(),
        }


@dataclass(frozen=True)
class ExcludedRecipe:
    recipe: Recipe
    method: Method
    reasons: tuple[Reason, ...]
    estimate: RecipeEstimate

    @property
    def id(self) -> str:
        return self.recipe.id

    @property
    def method_id(self) -> str:
        return self.method.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method.id,
            "name": self.recipe.name,
            "reasons": [r.to_dict() for r in self.reasons],
            "memory_gb": round(self.estimate.memory_gb, 3),
        }


#: Backward-compatible names: the unit of the recommendation is the recipe now.
RankedMethod = RankedRecipe
ExcludedMethod = ExcludedRecipe


@dataclass(frozen=True)
class Recommendation:
    ranked: tuple[RankedRecipe, ...]  # meets-the-limits first, then quality unknown; by score within
    excluded: tuple[ExcludedRecipe, ...]  # by id
    pipelines: tuple[Any, ...]  # engine.pipelines.Pipeline, best first
    constraints: Constraints
    bundled: RankedRecipe | None = None  # best bundled recipe when the first one is not bundled
    nothing_fits: dict[str, Any] | None = None  # what would make something fit, when nothing does
    model: dict[str, Any] | None = None  # the shape used (None: parameter count only)

    def to_dict(self) -> dict[str, Any]:
        """The ``shrinkwise recommend --json`` document."""
        return {
            "ranked": [r.to_dict() for r in self.ranked],
            "bundled_alternative": self.bundled.to_dict() if self.bundled else None,
            "nothing_fits": self.nothing_fits,
            "excluded": [e.to_dict() for e in self.excluded],
            "pipelines": [p.to_dict() for p in self.pipelines],
            "constraints": self.constraints.to_dict(),
            "model": self.model,
        }

    @property
    def ranked_ids(self) -> list[str]:
        return [r.id for r in self.ranked]

    @property
    def excluded_ids(self) -> list[str]:
        return [e.id for e in self.excluded]

    @property
    def ranked_method_ids(self) -> list[str]:
        """Methods with at least one ranked recipe, in the order of their best recipe."""
        out: list[str] = []
        for r in self.ranked:
            if r.method_id not in out:
                out.append(r.method_id)
        return out

    @property
    def excluded_method_ids(self) -> list[str]:
        """Methods all of whose recipes are excluded."""
        ranked = set(self.ranked_method_ids)
        return sorted({e.method_id for e in self.excluded} - ranked)

    def get(self, recipe_id: str) -> RankedRecipe | ExcludedRecipe:
        items: list[RankedRecipe | ExcludedRecipe] = [*self.ranked, *self.excluded]
        for item in items:
            if item.id == recipe_id:
                return item
        raise KeyError(f"recipe {recipe_id!r} is not in this recommendation")


def _as_mapping(methods: Mapping[str, Method] | Iterable[Method]) -> Mapping[str, Method]:
    if isinstance(methods, Mapping):
        return methods
    return {m.id: m for m in methods}


@lru_cache(maxsize=64)
def _shape(spec: str) -> Any:
    from knowledge.shapes import load_shape

    return load_shape(spec)


@lru_cache(maxsize=64)
def _device(device_id: str) -> Any:
    from knowledge.devices import load_device

    return load_device(device_id)


def _storage_bits(recipe: Recipe, shape: Any) -> TensorBits:
    """The recipe's stored bits; a llama.cpp k-quant mix is computed from the shape when there is one."""
    gguf_type = recipe.config.get("type")
    if shape is not None and recipe.format == "gguf" and isinstance(gguf_type, str):
        try:
            return llama_cpp_bits(shape, gguf_type)
        except (KeyError, ValueError):
            pass
    s = recipe.storage
    return TensorBits(linear=s.linear, embedding=s.embedding, lm_head=s.lm_head, other=s.other)


def _engine_info() -> dict[str, tuple[str, ...]]:
    """Hardware kinds each engine runs on (``knowledge/data/formats.yaml``)."""
    from knowledge.catalog import load_catalog

    try:
        cat = load_catalog(include_measured=False)
    except ValueError:  # an invalid knowledge base: every engine is taken to run everywhere
        return {}
    return {e.value: tuple(h.value for h in info.hardware) for e, info in cat.engines.items()}


@lru_cache(maxsize=1)
def _engine_hardware() -> dict[str, tuple[str, ...]]:
    return _engine_info()


def feasibility(recipe: Recipe, c: Constraints, device: Any) -> tuple[tuple[str, ...], str, str]:
    """(usable engines, engine problem, device problem) of ``recipe`` here; problems are '' when none."""
    hw = c.hardware.value
    needs = recipe.requires
    device_problem = ""
    if hw not in {h.value for h in needs.hardware}:
        kinds = ", ".join(h.value for h in needs.hardware)
        device_problem = f"it runs on {kinds}, not on {hw}"
    elif device is not None:
        cc = device.compute_capability
        if needs.min_compute_capability is not None and cc is not None and cc < needs.min_compute_capability:
            device_problem = (
                f"it needs NVIDIA compute capability {needs.min_compute_capability:g} or newer; "
                f"the {device.name} is {cc:g}"
            )
        missing = [f for f in needs.supports if f not in device.supports]
        if not device_problem and missing:
            device_problem = f"the {device.name} lacks {', '.join(missing)}"
        if not device_problem and needs.supports_any and not set(needs.supports_any) & device.supports:
            device_problem = f"it needs one of {', '.join(needs.supports_any)}; the {device.name} has none"
    engine_hw = _engine_hardware()
    usable: list[str] = []
    why: list[str] = []
    for use in recipe.engines:
        eid = use.engine.value
        engine_kinds = {h.value for h in use.hardware} if use.hardware else None
        if engine_kinds is not None and hw not in engine_kinds:
            why.append(f"{eid} runs it only on {', '.join(sorted(engine_kinds))}")
            continue
        if engine_hw and eid in engine_hw and hw not in engine_hw[eid]:
            why.append(f"{eid} does not run on {hw}")
            continue
        if device is not None:
            cc = device.compute_capability
            if use.min_compute_capability is not None and cc is not None and cc < use.min_compute_capability:
                why.append(f"{eid} needs compute capability {use.min_compute_capability:g}")
                continue
            if any(f not in device.supports for f in use.supports):
                why.append(f"{eid} needs {', '.join(use.supports)}")
                continue
        usable.append(eid)
    engine_problem = ""
    if c.serving_engine is not None:
        wanted = c.serving_engine.value
        if wanted not in recipe.engine_ids:
            runs = ", ".join("research code" if e == "custom" else e for e in recipe.engine_ids)
            engine_problem = f"{wanted} does not load or run it (it runs in: {runs})"
        elif wanted not in usable:
            engine_problem = f"{wanted} cannot run it here ({'; '.join(why) or 'unsupported'})"
        usable = [wanted] if not engine_problem else []
    elif not usable:
        engine_problem = "no engine that loads it runs here (" + ("; ".join(why) or "none listed") + ")"
    return tuple(usable), engine_problem, device_problem


def _model_label(c: Constraints, shape: Any) -> str:
    if shape is not None and getattr(shape, "hub_id", None):
        return str(shape.hub_id)
    return c.model or "<your-model>"


def contexts(
    constraints: Constraints,
    methods: Mapping[str, Method] | Iterable[Method],
    evidence: Sequence[Evidence] = (),
    *,
    recipes: Mapping[str, Recipe] | Iterable[Recipe] | None = None,
) -> Iterator[tuple[Recipe, Method, RecipeEstimate, tuple[str, ...], Position, dict[str, Any]]]:
    """The rule context of every recipe (what :func:`evaluate` tests the rules on), in id order."""
    c = constraints
    mapping = _as_mapping(methods)
    yield from _contexts(c, mapping, evidence, recipes)


def _contexts(
    c: Constraints,
    mapping: Mapping[str, Method],
    evidence: Sequence[Evidence],
    recipes: Mapping[str, Recipe] | Iterable[Recipe] | None,
) -> Iterator[tuple[Recipe, Method, RecipeEstimate, tuple[str, ...], Position, dict[str, Any]]]:
    """Per recipe: the recipe, its method, its estimate, usable engines, position and rule context."""
    shape = _shape(c.model) if c.model else None
    device = _device(c.device) if c.device else None
    params = float(shape.params) if shape is not None else float(c.model_params)
    family = shape.family if shape is not None else None
    budget = c.memory_gb if c.memory_gb is not None else (device.memory_gb if device is not None else None)
    ctx_len, batch = c.context_length, c.batch_size
    baseline = estimate_memory(shape, TensorBits(16.0), params=params, context=ctx_len, batch=batch)
    cctx = constraint_symbols(c, baseline.weights_gb)
    cctx["c_has_memory_budget"] = budget is not None
    cctx["c_memory_gb"] = float(budget or 0.0)
    base_total = max(baseline.weights_and_kv_gb, 1e-9)
    kv_share = baseline.kv_cache_gb / base_total
    quality_index = index_for(tuple(evidence) if not isinstance(evidence, tuple) else evidence)
    for r in recipes_for(mapping, recipes).values():
        m = mapping[r.method]
        bits = _storage_bits(r, shape)
        kv_bits = float(r.kv_bits) if r.kv_bits is not None else 16.0
        mem = estimate_memory(shape, bits, params=params, context=ctx_len, batch=batch, kv_bits=kv_bits)
        q = quality_index.estimate(
            r.id,
            r.method,
            bits=r.bits,
            group_size=r.group_size,
            lossless=r.lossless,
            params=params,
            family=family,
        )
        fits = None if budget is None else mem.weights_and_kv_gb <= budget
        est = RecipeEstimate(mem, baseline, q, bits.linear, kv_bits, fits, budget)
        engines, engine_problem, device_problem = feasibility(r, c, device)
        pos = position(m)
        drop = q.drop_pct
        margin = 0.0
        if drop is not None and c.max_quality_drop > 0 and drop <= c.max_quality_drop:
            margin = 1.0 - max(0.0, drop) / c.max_quality_drop
        elif drop is not None and c.max_quality_drop == 0 and drop <= 0:
            margin = 1.0
        legacy = Estimate(
            bits_per_weight=bits.linear,
            param_fraction=r.param_fraction,
            memory_gb=mem.weights_and_kv_gb,
            fits=fits,
            quality_drop_pct=float(drop) if drop is not None else 0.0,
            quality_basis="evidence" if q.basis in ("config", "method") else str(q.basis),
            quality_note=q.note,
        )
        ctx = cctx | method_symbols(m, legacy, pos, q.rows, baseline.weights_gb)
        ctx["m_memory_saved_gb"] = float(baseline.weights_and_kv_gb - mem.weights_and_kv_gb)
        ctx.update(
            {
                "r_id": r.id,
                "r_name": r.name,
                "r_format": r.format,
                "r_engines": r.engine_ids,
                "r_engines_here": engines,
                "r_research_only": set(r.engine_ids) <= {"custom"},
                "r_engine_problem": engine_problem,
                "r_device_problem": device_problem,
                "r_lossless": r.lossless,
                "r_load_time": r.load_time,
                "r_keeps_checkpoint": r.keeps_checkpoint,
                "r_calibration": r.calibration,
                "r_training": r.training,
                "r_linear_bits": float(bits.linear),
                "r_kv_bits": kv_bits,
                "r_changes_weights": bits.linear < 16.0 and (r.changes is None or "weights" in r.changes),
                "r_weight_saving": max(0.0, 1.0 - mem.weights_gb / max(baseline.weights_gb, 1e-9)),
                "r_kv_saving": max(0.0, 1.0 - kv_bits / 16.0),
                "r_kv_share": float(kv_share),
                "r_weights_gb": float(mem.weights_gb),
                "r_kv_cache_gb": float(mem.kv_cache_gb),
                "r_quality_known": drop is not None,
                "r_quality_basis": str(q.basis),
                "r_quality_margin": float(margin),
                "r_fp8_tensor_cores": r.config.get("scheme") == "W8A8"
                and "fp8" in str(r.config.get("weights", ""))
                and device is not None
                and "fp8" in device.supports,
                "r_has_compressor": r.compressor is not None,
                "r_gguf": r.format == "gguf",
            }
        )
        yield r, m, est, engines, pos, ctx


def evaluate(
    constraints: Constraints,
    methods: Mapping[str, Method] | Iterable[Method],
    evidence: Sequence[Evidence] = (),
    *,
    recipes: Mapping[str, Recipe] | Iterable[Recipe] | None = None,
    rules: RuleSet | None = None,
) -> list[Evaluation]:
    """Every recipe against every rule, in id order. :func:`recommend` ranks the result."""
    rules = rules if rules is not None else default_rules()
    checks = [(rule, rule.fast or rule.parsed.matches) for rule in rules]
    out: list[Evaluation] = []
    for r, m, est, engines, pos, ctx in _contexts(constraints, _as_mapping(methods), evidence, recipes):
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
                continue
            if shown is None:
                shown = display(ctx)
            reason = Reason(rule.id, rule.text(shown), rule.effect, weight, rule.source)
            if rule.effect == "exclude":
                exclusions.append(reason)
                standalone = standalone and rule.standalone
            else:
                score += weight
                reasons.append(reason)
        order = {x.rule_id: i for i, x in enumerate(reasons)}
        reasons.sort(key=lambda x: (x.effect == "note", -abs(x.weight), order[x.rule_id]))
        out.append(
            Evaluation(
                recipe=r,
                method=m,
                score=score,
                reasons=tuple(reasons),
                exclusions=tuple(exclusions),
                estimate=est,
                position=pos,
                standalone_only=bool(exclusions) and standalone,
                engines=engines,
            )
        )
    return out


def rank_key(score: float, recipe_id: str) -> tuple[float, str]:
    """Best first; equal scores (to 1e-9) in id order, so the output is deterministic."""
    return (-round(score, 9), recipe_id)


def tier_key(e: Evaluation) -> tuple[int, float, str]:
    """Recipes whose evidence meets the limits first, then unknown quality; by score within each."""
    return (0 if e.tier == TIER_MEETS else 1, *rank_key(e.score, e.id))


def _ranked(e: Evaluation, model: str) -> RankedRecipe:
    return RankedRecipe(
        recipe=e.recipe,
        method=e.method,
        score=e.score,
        reasons=e.reasons,
        estimate=e.estimate,
        position=e.position,
        engines=e.engines,
        tier=e.tier,
        commands=_commands(e.recipe, e.engines, model),
    )


#: Relaxations tried when nothing fits, in the order they are reported.
_RELAX: tuple[tuple[str, str, Any], ...] = (
    ("serving_engine", "any serving engine", None),
    ("keep_original", "not keeping the original", False),
    ("calibration_data", "calibration text", True),
    ("training_budget", "a low training budget", "low"),
    ("device", "any device of this kind", None),
)


def nothing_fits(
    constraints: Constraints,
    evals: Sequence[Evaluation],
    methods: Mapping[str, Method],
    evidence: Sequence[Evidence],
    recipes: Mapping[str, Recipe] | Iterable[Recipe] | None,
    rules: RuleSet | None,
) -> dict[str, Any]:
    """What would make something fit: the smallest footprint among recipes excluded only by the memory or
    quality limit, and which relaxed constraint (or budget) would let recipes through."""

    def only(rule: str) -> list[Evaluation]:
        return [e for e in evals if e.excluded and {r.rule_id for r in e.exclusions} == {rule}]

    out: dict[str, Any] = {"smallest": None, "relaxations": []}
    by_memory = only("memory-does-not-fit")  # would pass with a larger budget, nothing else
    limits = [e for e in evals if e.excluded and e.standalone_only]
    if limits:
        smallest = min(limits, key=lambda e: (e.estimate.memory_gb, e.id))
        out["smallest"] = {
            "recipe": smallest.id,
            "memory_gb": round(smallest.estimate.memory_gb, 3),
            "weights_gb": round(smallest.estimate.memory.weights_gb, 3),
            "kv_cache_gb": round(smallest.estimate.memory.kv_cache_gb, 3),
            "quality_drop_pct": smallest.estimate.quality_drop_pct,
        }
    if by_memory:
        fit = min(by_memory, key=lambda e: (e.estimate.memory_gb, e.id))
        out["relaxations"].append(
            {
                "change": f"a memory budget of {fit.estimate.memory_gb:.1f} GB",
                "field": "memory_gb",
                "value": round(fit.estimate.memory_gb + 0.05, 1),
                "recipe": fit.id,
            }
        )
    by_quality = only("quality-drop-over-budget")  # would pass with a looser quality limit
    if by_quality:
        best = min(by_quality, key=lambda e: (e.estimate.quality_drop_pct or 0.0, e.id))
        drop = max(0.0, best.estimate.quality_drop_pct or 0.0)
        out["relaxations"].append(
            {
                "change": f"an acceptable quality drop of {drop:.1f}%",
                "field": "max_quality_drop",
                "value": round(drop + 0.05, 1),
                "recipe": best.id,
            }
        )
    current = constraints.to_dict()
    for fname, words, value in _RELAX:
        if current.get(fname) == value:
            continue
        try:
            relaxed = constraints.with_overrides({fname: value})
        except ValueError:  # a relaxation that does not validate is simply not offered
            continue
        trial = evaluate(relaxed, methods, evidence, recipes=recipes, rules=rules)
        passing = sorted((e for e in trial if not e.excluded), key=tier_key)
        if passing:
            out["relaxations"].append(
                {
                    "change": words,
                    "field": fname,
                    "value": value,
                    "recipe": passing[0].id,
                    "count": len(passing),
                }
            )
    return out


def recommend(
    constraints: Constraints | Mapping[str, Any],
    methods: Mapping[str, Method] | Iterable[Method],
    evidence: Sequence[Evidence] = (),
    top: int | None = None,
    *,
    recipes: Mapping[str, Recipe] | Iterable[Recipe] | None = None,
    rules: RuleSet | None = None,
    max_pipelines: int = 3,
) -> Recommendation:
    """Rank every recipe for ``constraints`` (or exclude it, with the rules that excluded it).

    ``recipes`` are the knowledge base's recipes (``Catalog.recipes``); a method without one is ranked
    as its default recipe. ``constraints`` may be a plain mapping (validated, :class:`ConstraintsError`
    on bad values); ``top`` truncates the ranked list; ``rules`` defaults to ``engine/rules/rules.yaml``.
    """
    if not isinstance(constraints, Constraints):
        constraints = Constraints.from_dict(constraints)
    from .pipelines import build_pipelines  # pipelines import this module's types

    if top is not None and top < 0:
        raise ValueError(f"top must be a positive number of recipes or None for all, got {top}")
    mapping = _as_mapping(methods)
    evals = evaluate(constraints, mapping, evidence, recipes=recipes, rules=rules)
    shape = _shape(constraints.model) if constraints.model else None
    model = _model_label(constraints, shape)
    ranked_evals = sorted((e for e in evals if not e.excluded), key=tier_key)
    ranked = tuple(_ranked(e, model) for e in ranked_evals)
    excluded = tuple(
        ExcludedRecipe(recipe=e.recipe, method=e.method, reasons=e.exclusions, estimate=e.estimate)
        for e in evals
        if e.excluded
    )
    bundled = None
    if ranked and not ranked[0].bundled:
        bundled = next((r for r in ranked if r.bundled), None)
    empty = None if ranked else nothing_fits(constraints, evals, mapping, evidence, recipes, rules)
    pipelines = tuple(build_pipelines(evals, constraints, k=max_pipelines)) if max_pipelines else ()
    shape_info = None
    if shape is not None:
        shape_info = {
            "id": shape.id,
            "name": shape.name,
            "family": shape.family,
            "params": shape.params,
            "hub_id": shape.hub_id,
        }
    log.debug("recommend: %d ranked, %d excluded, %d pipelines", len(ranked), len(excluded), len(pipelines))
    return Recommendation(
        ranked=ranked if top is None else ranked[:top],
        excluded=excluded,
        pipelines=pipelines,
        constraints=constraints,
        bundled=bundled,
        nothing_fits=empty,
        model=shape_info,
    )
