"""Pure decision logic: constraints in, ranked and explained recommendations out.
Imports neither Streamlit nor torch.

Public API (the CLI and the app call these)::

    Constraints, ConstraintsError               engine.constraints
    recommend(constraints, methods, evidence, top=None) -> Recommendation
    gap_report(catalog_or_methods) -> GapReport
    position(method) / positions(methods)       predictability/adaptivity (claim 3)
    estimate(method, rows, model_params, memory_gb) -> Estimate
    load_rules(path) / default_rules()          rules as data, checked at load time
"""

from .axes import Position, position, positions
from .constraints import Constraints, ConstraintsError, Priority, TargetEngine, TrainingBudget, Workload
from .estimates import Estimate, estimate, weight_memory_gb
from .gaps import GapCell, GapReport, gap_report
from .pipelines import Pipeline, build_pipelines
from .recommend import ExcludedMethod, RankedMethod, Reason, Recommendation, evaluate, recommend
from .ruleset import Rule, RulesError, RuleSet, default_rules, load_rules

__all__ = [
    "Constraints",
    "ConstraintsError",
    "Estimate",
    "ExcludedMethod",
    "GapCell",
    "GapReport",
    "Pipeline",
    "Position",
    "Priority",
    "RankedMethod",
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
