"""Loading the recommender's rules (``engine/rules/rules.yaml``) and checking them before any request.

Each rule is data: an ``id``, the ``description`` the user reads (``{symbol}`` placeholders are filled
from the context, e.g. ``{m_name}``, ``{m_memory_gb:.1f}``), a ``condition`` in the rule-engine language
(https://zeroSteiner.github.io/rule-engine) over the symbols of :mod:`engine.context`, an ``effect``
(``exclude``, ``score`` with a signed ``weight`` and an optional numeric ``scale`` symbol, or ``note``),
and its origin: ``claims`` (numbers of "What the paper claims" in the paper) and/or a ``reference``.
``standalone: true`` marks an exclusion about the method used alone (memory, quality): a pipeline whose
combined estimate passes may still include such a method.

Everything that can be checked is checked at load time: unknown keys, unknown symbols, type mismatches,
string values outside a symbol's domain, unknown placeholders, duplicate ids. A typo therefore fails
here, with the file, the rule and the fix named, not in the middle of a user's request.

Speed: rule-engine's evaluator resolves and type-checks every symbol on every call (~50 us per rule).
With ~60 methods x ~40 rules that alone is over 100 ms, so each parsed rule's syntax tree is also
compiled once into plain Python closures over the same tree (same operators, same short-circuits).
Rules using a construct the compiler does not know keep rule-engine's own evaluator; a test checks that
both evaluators agree on every rule for every method of the knowledge base.
"""

from __future__ import annotations

import difflib
import logging
import operator
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import rule_engine
import yaml
from rule_engine import ast as rast

from .context import SYMBOLS, rule_context, sample_display

log = logging.getLogger(__name__)

RULES_FILE = Path(__file__).parent / "rules" / "rules.yaml"

EFFECTS = ("exclude", "score", "note")
RULE_KEYS = (
    "id",
    "description",
    "condition",
    "effect",
    "weight",
    "scale",
    "claims",
    "reference",
    "standalone",
)
PAPER_CLAIMS = tuple(range(1, 9))

Evaluator = Callable[[Mapping[str, Any]], Any]


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule, the field and the fix."""


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    condition: str
    effect: str  # exclude | score | note
    weight: float
    scale: str | None
    claims: tuple[int, ...]
    reference: str | None
    standalone: bool
    parsed: rule_engine.Rule
    fast: Evaluator | None  # compiled closure, None when rule-engine's evaluator is used
    source: str  # "paper claim 1, 5; <reference>", what the user reads as the origin

    def matches(self, ctx: Mapping[str, Any]) -> bool:
        if self.fast is not None:
            return bool(self.fast(ctx))
        return bool(self.parsed.matches(ctx))

    def weight_for(self, ctx: Mapping[str, Any]) -> float:
        return self.weight * (float(ctx[self.scale]) if self.scale else 1.0)

    def text(self, display_ctx: Mapping[str, Any]) -> str:
        return self.description.format_map(display_ctx)


def _source(claims: list[int], reference: str | None) -> str:
    parts = []
    if claims:
        parts.append("paper claim " + ", ".join(str(c) for c in claims))
    if reference:
        parts.append(reference)
    return "; ".join(parts)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    path: str

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def by_id(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(f"no rule {rule_id!r}; known rules: {', '.join(r.id for r in self.rules)}")

    @property
    def claims_covered(self) -> set[int]:
        return {c for r in self.rules for c in r.claims}


# --- compiling ---------------------------------------------------------------------------------------------

_CMP = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
_ARITH = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "tdiv": operator.truediv,
    "fdiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
}


class _Unsupported(Exception):
    pass


def _compile(node: Any) -> Evaluator:
    """Python closure equivalent to rule-engine's evaluation of ``node`` for our typed flat contexts.

    Values in our contexts are str, float, bool and tuples of str, so rule-engine's coercions (float ->
    Decimal, list -> tuple) do not change any result; equality keeps rule-engine's rule that values of
    different types are unequal.
    """
    t = type(node)
    if t is rast.Statement:
        return _compile(node.expression)
    if t is rast.SymbolExpression:
        if node.scope is not None:
            raise _Unsupported("scoped symbol")
        name = node.name
        return lambda ctx: ctx[name]
    if t is rast.FloatExpression:
        fv = float(node.value)
        return lambda ctx: fv
    if t in (rast.StringExpression, rast.BooleanExpression, rast.NullExpression):
        v = node.value
        return lambda ctx: v
    if t is rast.ArrayExpression:
        items = [_compile(v) for v in node.value]
        return lambda ctx: tuple(i(ctx) for i in items)
    if t is rast.LogicExpression:
        left, right = _compile(node.left), _compile(node.right)
        if node.type == "and":
            return lambda ctx: bool(left(ctx) and right(ctx))
        if node.type == "or":
            return lambda ctx: bool(left(ctx) or right(ctx))
        raise _Unsupported(node.type)
    if t is rast.ComparisonExpression:
        left, right = _compile(node.left), _compile(node.right)
        if node.type == "eq":

            def eq(ctx: Mapping[str, Any]) -> bool:
                a, b = left(ctx), right(ctx)
                return type(a) is type(b) and a == b

            return eq
        if node.type == "ne":

            def ne(ctx: Mapping[str, Any]) -> bool:
                a, b = left(ctx), right(ctx)
                return type(a) is not type(b) or a != b

            return ne
        raise _Unsupported(node.type)
    if t is rast.ArithmeticComparisonExpression:
        left, right = _compile(node.left), _compile(node.right)
        op = _CMP[node.type]
        if not (
            node.left.result_type == rule_engine.DataType.FLOAT
            and node.right.result_type == rule_engine.DataType.FLOAT
        ):
            raise _Unsupported("ordered comparison of non-floats")
        return lambda ctx: op(left(ctx), right(ctx))
    if t is rast.ContainsExpression:
        container, member = _compile(node.container), _compile(node.member)
        return lambda ctx: bool(member(ctx) in container(ctx))
    if t is rast.UnaryExpression:
        right = _compile(node.right)
        if node.type == "not":
            return lambda ctx: not right(ctx)
        if node.type == "uminus":
            return lambda ctx: -right(ctx)
        raise _Unsupported(node.type)
    if t in (rast.AddExpression, rast.SubtractExpression, rast.ArithmeticExpression):
        if not (
            node.left.result_type == rule_engine.DataType.FLOAT
            and node.right.result_type == rule_engine.DataType.FLOAT
        ):
            raise _Unsupported("arithmetic on non-floats")
        left, right = _compile(node.left), _compile(node.right)
        aop = _ARITH[node.type]
        return lambda ctx: aop(left(ctx), right(ctx))
    if t is rast.TernaryExpression:
        cond, yes, no = _compile(node.condition), _compile(node.case_true), _compile(node.case_false)
        return lambda ctx: yes(ctx) if cond(ctx) else no(ctx)
    raise _Unsupported(t.__name__)


def compile_rule(parsed: rule_engine.Rule) -> Evaluator | None:
    """The fast evaluator of a parsed rule, or None when it uses a construct we do not compile."""
    try:
        return _compile(parsed.statement)
    except _Unsupported as exc:
        log.debug("rule %r keeps rule-engine's evaluator (%s)", parsed.text, exc)
        return None


# --- checking ----------------------------------------------------------------------------------------------


def _domain_errors(node: Any) -> list[str]:
    """String literals compared with an enumerated symbol must be among its values."""
    errors: list[str] = []

    def check(sym: Any, lit: Any) -> None:
        if type(sym) is not rast.SymbolExpression:
            return
        domain = SYMBOLS[sym.name].domain if sym.name in SYMBOLS else None
        if domain is None:
            return
        values = []
        if type(lit) is rast.StringExpression:
            values = [lit.value]
        elif type(lit) is rast.ArrayExpression:
            values = [v.value for v in lit.value if type(v) is rast.StringExpression]
        for v in values:
            if v not in domain:
                close = difflib.get_close_matches(v, domain, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(
                    f"{v!r} is not a value of {sym.name}{hint}; allowed: {', '.join(d for d in domain if d)}"
                )

    def walk(n: Any) -> None:
        t = type(n)
        if t is rast.Statement:
            walk(n.expression)
            return
        if t is rast.ComparisonExpression:
            check(n.left, n.right)
            check(n.right, n.left)
        if t is rast.ContainsExpression:
            check(n.container, n.member)  # 'x' in m_changes
            check(n.member, n.container)  # m_phase in ['a', 'b']
        for attr in (
            "left",
            "right",
            "container",
            "member",
            "expression",
            "condition",
            "case_true",
            "case_false",
        ):
            child = getattr(n, attr, None)
            if isinstance(child, rast.ASTNodeBase):
                walk(child)
        if t is rast.ArrayExpression:
            for v in n.value:
                walk(v)

    walk(node)
    return errors


def _placeholders(text: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(text) if f]


def _parse_rule(raw: Any, index: int, where: str, ctx: rule_engine.Context) -> Rule:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: rule #{index + 1} must be a mapping with keys {', '.join(RULE_KEYS)}")
    rid = raw.get("id")
    label = f"{where}: rule {rid!r}" if rid else f"{where}: rule #{index + 1}"
    unknown = sorted(set(raw) - set(RULE_KEYS))
    if unknown:
        raise RulesError(f"{label}: unknown key(s) {unknown}; allowed keys: {', '.join(RULE_KEYS)}")
    for key in ("id", "description", "condition", "effect"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise RulesError(f"{label}: '{key}' is missing or not a non-empty string")
    effect = raw["effect"]
    if effect not in EFFECTS:
        raise RulesError(f"{label}: effect {effect!r} is not allowed; use one of {', '.join(EFFECTS)}")
    weight = raw.get("weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise RulesError(f"{label}: weight {weight!r} must be a number")
    if effect == "score" and weight == 0:
        raise RulesError(f"{label}: a 'score' rule needs a non-zero weight (use effect 'note' for weight 0)")
    if effect != "score" and weight:
        raise RulesError(f"{label}: only 'score' rules carry a weight; effect is {effect!r}")
    scale = raw.get("scale")
    if scale is not None:
        sym = SYMBOLS.get(scale)
        if sym is None or sym.type != rule_engine.DataType.FLOAT:
            floats = [n for n, s in SYMBOLS.items() if s.type == rule_engine.DataType.FLOAT]
            raise RulesError(f"{label}: scale {scale!r} must be a numeric symbol; one of {', '.join(floats)}")
    claims = raw.get("claims", [])
    if not isinstance(claims, list) or any(c not in PAPER_CLAIMS for c in claims):
        raise RulesError(f"{label}: claims {claims!r} must be a list of the paper's claim numbers 1-8")
    reference = raw.get("reference")
    if not claims and not reference:
        raise RulesError(f"{label}: give its origin: 'claims' (paper claims 1-8) and/or a 'reference'")
    standalone = raw.get("standalone", False)
    if not isinstance(standalone, bool) or (standalone and effect != "exclude"):
        raise RulesError(f"{label}: standalone must be true/false and only marks 'exclude' rules")

    try:
        parsed = rule_engine.Rule(raw["condition"], context=ctx)
    except rule_engine.errors.SymbolResolutionError as exc:
        close = difflib.get_close_matches(exc.symbol_name, SYMBOLS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RulesError(
            f"{label}: condition uses unknown symbol {exc.symbol_name!r}{hint} "
            f"(symbols are listed in engine/context.py SYMBOLS)"
        ) from None
    except rule_engine.errors.EngineError as exc:
        raise RulesError(
            f"{label}: condition {raw['condition']!r} does not parse or type-check: {exc.message}"
        ) from None
    if parsed.statement.expression.result_type not in (
        rule_engine.DataType.BOOLEAN,
        rule_engine.DataType.UNDEFINED,
    ):
        raise RulesError(
            f"{label}: condition must be true/false, not {parsed.statement.expression.result_type.name}"
        )
    bad_values = _domain_errors(parsed.statement)
    if bad_values:
        raise RulesError(f"{label}: " + "; ".join(bad_values))
    try:
        raw["description"].format_map(sample_display())
    except (KeyError, ValueError, IndexError) as exc:
        names = [p for p in _placeholders(raw["description"]) if p.split(":")[0] not in SYMBOLS]
        raise RulesError(
            f"{label}: description placeholder {names or exc!s} is not a symbol; use names from engine/context.py"
        ) from None
    return Rule(
        id=raw["id"],  # checked above: a non-empty string
        description=raw["description"].strip(),
        condition=raw["condition"],
        effect=effect,
        weight=float(weight),
        scale=scale,
        claims=tuple(claims),
        reference=reference,
        standalone=standalone,
        parsed=parsed,
        fast=compile_rule(parsed),
        source=_source(claims, reference),
    )


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Parse, check and compile a rules file (default: the bundled one). Raises :class:`RulesError`."""
    p = Path(path) if path is not None else RULES_FILE
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"cannot read rules file {str(p)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RulesError(f"{p}: expected a mapping with a list under 'rules'")
    ctx = rule_context()
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["rules"]):
        rule = _parse_rule(raw, i, str(p), ctx)
        if rule.id in seen:
            raise RulesError(f"{p}: rule id {rule.id!r} appears twice; ids must be unique")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(rules=tuple(rules), path=str(p))


@lru_cache(maxsize=8)
def _cached(path: str) -> RuleSet:
    return load_rules(path)


def default_rules() -> RuleSet:
    """The bundled rules, parsed and compiled once per process."""
    return _cached(str(RULES_FILE))
