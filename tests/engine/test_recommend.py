"""recommend(): every method is ranked or excluded, with reasons, estimates and a stable order."""

from __future__ import annotations

import json

import pytest

from engine import Constraints, recommend
from engine.ruleset import load_rules

from .conftest import make_evidence, make_method


def test_every_method_is_ranked_or_excluded_once(methods, evidence):
    rec = recommend(Constraints(memory_gb=8), methods, evidence)
    ids = rec.ranked_ids + rec.excluded_ids
    assert sorted(ids) == sorted(methods) and len(set(ids)) == len(ids)
    assert all(e.reasons and all(r.effect == "exclude" for r in e.reasons) for e in rec.excluded)
    assert all(r.effect in ("score", "note") for x in rec.ranked for r in x.reasons)


def test_score_is_the_sum_of_the_score_reasons(methods, evidence):
    rec = recommend(Constraints(priority="adaptivity", workload="long-context"), methods, evidence)
    for r in rec.ranked:
        assert r.score == pytest.approx(sum(x.weight for x in r.reasons if x.effect == "score"))
        assert all(x.weight == 0 for x in r.reasons if x.effect == "note")
        assert all("{" not in x.text for x in r.reasons)  # every placeholder was filled


def test_ranking_is_best_first_with_id_tie_breaks_and_deterministic(methods, evidence):
    c = Constraints()
    a = recommend(c, methods, evidence)
    b = recommend(c, dict(reversed(list(methods.items()))), list(reversed(evidence)))
    assert a.to_dict() == b.to_dict()
    keys = [(r.tier != "meets", -round(r.score, 9), r.id) for r in a.ranked]
    assert keys == sorted(keys)


def test_top_truncates_only_the_ranked_list(methods, evidence):
    full = recommend(Constraints(), methods, evidence)
    top3 = recommend(Constraints(), methods, evidence, top=3)
    assert top3.ranked_ids == full.ranked_ids[:3]
    assert top3.excluded_ids == full.excluded_ids and len(top3.pipelines) == len(full.pipelines)


def test_json_shape_is_the_issues(methods, evidence):
    d = recommend(Constraints(memory_gb=6), methods, evidence).to_dict()
    json.dumps(d)  # serialisable
    assert set(d) == {
        "ranked",
        "bundled_alternative",
        "nothing_fits",
        "excluded",
        "pipelines",
        "constraints",
        "model",
    }
    r0 = d["ranked"][0]
    assert {
        "id",
        "method",
        "config",
        "format",
        "engine",
        "commands",
        "score",
        "tier",
        "reasons",
        "estimate",
    } <= set(r0)
    assert set(r0["reasons"][0]) == {"rule_id", "text", "effect", "weight", "source"}
    assert {
        "memory_gb",
        "weights_gb",
        "kv_cache_gb",
        "fits",
        "quality_drop_pct",
        "quality_basis",
        "quality",
    } <= set(r0["estimate"])
    assert {"id", "method", "reasons"} <= set(d["excluded"][0])
    assert d["constraints"]["memory_gb"] == 6


def test_custom_rules_and_fixture_methods(tmp_path):
    p = tmp_path / "rules.yaml"
    p.write_text(
        "rules:\n"
        "  - id: no-dynamic\n    description: '{m_name} is dynamic'\n    condition: m_impact == 'dynamic'\n"
        "    effect: exclude\n    claims: [2]\n"
        "  - id: bits\n    description: 'fewer bits'\n    condition: m_bits_per_weight < 8.0\n"
        "    effect: score\n    weight: 2.0\n    reference: test\n"
    )
    ms = [make_method("s1", "post-training", "static"), make_method("d1", "inference", "dynamic")]
    rec = recommend(Constraints(), ms, rules=load_rules(p))
    assert rec.ranked_ids == ["s1"] and rec.ranked[0].score == 2.0
    assert rec.get("d1").reasons[0].text == "D1 is dynamic"


def test_evidence_quality_over_the_limit_excludes_and_no_evidence_is_unknown():
    ms = [
        make_method("ev", "post-training", "static"),
        make_method("gr", "post-training", "static", grades={"quality_drop": "high"}),
    ]
    rows = [make_evidence("ev", "LLaMA-7B", 6.5, 5.68)]  # +14%
    rec = recommend(Constraints(max_quality_drop=5), ms, rows)
    assert rec.excluded_ids == ["ev"]
    assert rec.get("ev").reasons[0].rule_id == "quality-drop-over-budget"
    assert "14.4%" in rec.get("ev").reasons[0].text
    # a method without evidence is never assumed to meet the limit: its quality is unknown (shown as such,
    # ranked after every recipe whose evidence meets it), whatever its paper grade
    gr = rec.get("gr")
    assert gr.estimate.quality_drop_pct is None and gr.tier == "quality-unknown"
    assert any(r.rule_id == "quality-unknown" for r in gr.reasons)


def test_recommend_over_the_catalog_is_fast(methods, evidence):
    import time

    c = Constraints(memory_gb=6)
    recommend(c, methods, evidence)
    runs = []
    for _ in range(5):
        t = time.process_time()  # CPU time: the test machine is shared, wall time measures the neighbours
        recommend(c, methods, evidence)
        runs.append(time.process_time() - t)
    assert sorted(runs)[2] < 0.05  # the issue's bound (measured: ~6-9 ms, benchmarks/recommend_speed.py)


def test_constraints_may_be_a_plain_mapping(methods, evidence):
    a = recommend({"phases": "inference", "keep_original": "true"}, methods, evidence)
    b = recommend(Constraints(phases=("inference",), keep_original=True), methods, evidence)
    assert a.to_dict() == b.to_dict()
    from engine import ConstraintsError

    with pytest.raises(ConstraintsError, match="priority"):
        recommend({"priority": "speed"}, methods, evidence)
