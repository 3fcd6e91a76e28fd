"""The rules file: every paper claim is encoded, and every mistake in a rule fails at load time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.constraints import Constraints
from engine.context import SYMBOLS
from engine.recommend import evaluate
from engine.ruleset import RULES_FILE, RulesError, default_rules, load_rules

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "constraints"

GOOD = """
  - id: r1
    description: "{m_name} is static"
    condition: m_impact == 'static'
    effect: score
    weight: 1.0
    claims: [1]
"""


def write_rules(tmp_path, body: str) -> Path:
    p = tmp_path / "rules.yaml"
    p.write_text("rules:\n" + textwrap.dedent(body))
    return p


def test_bundled_rules_load_and_cover_every_paper_claim():
    rules = load_rules()
    assert rules.claims_covered == set(range(1, 9))
    assert len(rules) >= 30
    assert {r.effect for r in rules} == {"exclude", "score", "note"}


def test_every_bundled_rule_is_compiled_to_the_fast_evaluator():
    assert [r.id for r in default_rules() if r.fast is None] == []


def test_a_valid_minimal_file_loads(tmp_path):
    rules = load_rules(write_rules(tmp_path, GOOD))
    assert [r.id for r in rules] == ["r1"] and rules.by_id("r1").source == "paper claim 1"


@pytest.mark.parametrize(
    "condition, message",
    [
        ("m_phse == 'inference'", "unknown symbol 'm_phse'; did you mean 'm_phase'?"),
        ("m_fits > 3.0", "does not parse or type-check"),  # boolean compared with a number
        ("m_memory_gb == 'big' and m_bits_per_weight > 'four'", "does not parse or type-check"),
        (
            "c_priority == 'predictabilty'",
            "'predictabilty' is not a value of c_priority (did you mean 'predictability'?)",
        ),
        ("'weight' in m_changes", "'weight' is not a value of m_changes (did you mean 'weights'?)"),
        ("m_phase in ['inference', 'finetuning']", "'finetuning' is not a value of m_phase"),
        ("m_impact == ", "does not parse"),
        ("m_memory_gb", "condition must be true/false"),
    ],
)
def test_a_typo_in_a_condition_fails_at_load_time(tmp_path, condition, message):
    body = f"""
  - id: broken-rule
    description: "text"
    condition: "{condition}"
    effect: exclude
    claims: [2]
"""
    with pytest.raises(RulesError) as info:
        load_rules(write_rules(tmp_path, body))
    assert "rule 'broken-rule'" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"description": "'{m_nmae} is static'"}, "placeholder ['m_nmae'] is not a symbol"),
        ({"effect": "penalty"}, "effect 'penalty' is not allowed; use one of exclude, score, note"),
        ({"weight": "0"}, "needs a non-zero weight"),
        ({"claims": "[9]"}, "claims [9] must be a list of the paper's claim numbers 1-8"),
        ({"scale": "m_phase"}, "scale 'm_phase' must be a numeric symbol"),
        ({"wieght": "1.0"}, "unknown key(s) ['wieght']"),
    ],
)
def test_other_mistakes_fail_at_load_time(tmp_path, patch, message):
    fields = {
        "id": "r1",
        "description": "'{m_name} is static'",
        "condition": "m_impact == 'static'",
        "effect": "score",
        "weight": "1.0",
        "claims": "[1]",
    }
    fields.update(patch)
    body = "\n  - " + "\n    ".join(f"{k}: {v}" for k, v in fields.items()) + "\n"
    with pytest.raises(RulesError) as info:
        load_rules(write_rules(tmp_path, body))
    assert message in str(info.value)


def test_duplicate_ids_and_missing_origin_fail(tmp_path):
    with pytest.raises(RulesError, match="appears twice"):
        load_rules(write_rules(tmp_path, GOOD + GOOD))
    with pytest.raises(RulesError, match="give its origin"):
        load_rules(write_rules(tmp_path, GOOD.replace("    claims: [1]\n", "")))


def test_broken_copy_of_the_bundled_file_names_the_rule(tmp_path):
    text = RULES_FILE.read_text().replace("not m_phase in c_phases", "not m_phase in c_phase", 1)
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(p)
    assert "rule 'phase-not-allowed'" in str(info.value) and "'c_phase'" in str(info.value)
    assert str(p) in str(info.value)


def _scenarios():
    yield Constraints()
    for f in sorted(EXAMPLES.glob("*.*")):
        yield Constraints.from_file(f)
    yield Constraints(priority="predictability", training_budget="high", memory_gb=4, serving_engine="vllm")
    yield Constraints(
        priority="adaptivity",
        training_budget="low",
        calibration_data=False,
        workload="batch",
        hardware="cpu",
        max_quality_drop=1,
    )


def test_fast_evaluator_agrees_with_rule_engine_on_every_rule_method_and_scenario(catalog):
    from engine.recommend import contexts

    rules = default_rules()
    checked = 0
    for c in [*_scenarios(), *_recipe_scenarios()]:
        for _r, _m, _est, _eng, _pos, ctx in contexts(
            c, catalog.methods, catalog.evidence, recipes=catalog.recipes
        ):
            assert set(ctx) == set(SYMBOLS)
            for rule in rules:
                assert rule.fast(ctx) == rule.parsed.matches(ctx), (rule.id, ctx["r_id"], c.to_query())
                checked += 1
    assert checked > 2000


def _recipe_scenarios():
    """Scenarios with a model shape and a device, where the recipe rules (FP8, KV cache) can fire."""
    return [
        Constraints(model="llama-3.1-8b", device="h100-sxm", serving_engine="vllm", max_quality_drop=10),
        Constraints(model="llama-3.1-8b", keep_original=True),
        Constraints(model="llama-3.1-8b", context_length=131072, batch_size=4, serving_engine="vllm"),
        Constraints(model="llama-3.1-8b", hardware="cpu", serving_engine="llama.cpp", max_quality_drop=10),
        Constraints(model="llama-3.1-8b", phases=("pre-training",), training_budget="high"),
    ]


def test_every_rule_fires_for_some_method_in_some_scenario(methods, evidence, catalog):
    fired = set()
    for c in _recipe_scenarios():
        for e in evaluate(c, catalog.methods, catalog.evidence, recipes=catalog.recipes):
            fired |= {r.rule_id for r in e.reasons} | {r.rule_id for r in e.exclusions}
    for c in _scenarios():
        for e in evaluate(c, methods, evidence):
            fired |= {r.rule_id for r in e.reasons} | {r.rule_id for r in e.exclusions}
    extra = [
        Constraints(training_budget="low"),
        Constraints(workload="long-context"),
        Constraints(workload="multimodal"),
        Constraints(priority="adaptivity"),
        Constraints(max_quality_drop=0.5),
    ]
    for c in extra:
        for e in evaluate(c, methods, evidence):
            fired |= {r.rule_id for r in e.reasons} | {r.rule_id for r in e.exclusions}
    assert {r.id for r in default_rules()} - fired == set()


def test_rules_readme_lists_every_symbol():
    text = (RULES_FILE.parent / "README.md").read_text()
    missing = [name for name in SYMBOLS if f"`{name}`" not in text]
    assert missing == []
