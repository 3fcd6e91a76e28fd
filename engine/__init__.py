"""Pure decision logic: constraints in, ranked and explained recipes out.
Imports neither Streamlit nor torch.

Public API (the CLI and the app call these)::

    Constraints, ConstraintsError               engine.constraints (model, device, context, batch too)
    recommend(constraints, methods, evidence, top=None, recipes=...) -> Recommendation of recipes
    estimate_memory(shape, bits, ...)           engine.memory (weights + KV cache from the shape)
    estimate_quality(recipe, method, ...)       engine.quality (evidence-calibrated, or unknown)
    gap_report(catalog_or_methods) -> GapReport
    position(method) / positions(methods)       predictability/adaptivity (claim 3)
    estimate(method, rows, model_params, memory_gb) -> Estimate
    load_rules(path) / default_rules()          rules as data, checked at load time
"""

from .axes import Position, position, positions
from .constraints import Constraints, ConstraintsError, Priority, TargetEngine, TrainingBudget, Workload
from .estimates import Estimate, RecipeEstimate, estimate, weight_memory_gb
from .gaps import GapCell, GapReport, gap_report
from .pipelines import Pipeline, build_pipelines
from .recommend import (
    ExcludedMethod,
    ExcludedRecipe,
    RankedMethod,
    RankedRecipe,
    Reason,
    Recommendation,
    evaluate,
    recommend,
)
from .ruleset import Rule, RulesError, RuleSet, default_rules, load_rules

__all__ = [
    "Constraints",
    "ConstraintsError",
    "Estimate",
    "ExcludedMethod",
    "ExcludedRecipe",
    "GapCell",
    "GapReport",
    "Pipeline",
    "Position",
    "Priority",
    "RankedMethod",
    "RankedRecipe",
    "RecipeEstimate",
    "Reason",
    "Recommendation",
    "Rule",
    "RuleSet",
    "RulesError",
    "TargetEngine",
    "TrainingBudget",
    "Workload",
    "build_pipelines",
    "default_rules",
    "estimate",
    "evaluate",
    "gap_report",
    "load_rules",
    "position",
    "positions",
    "recommend",
    "weight_memory_gb",
]
