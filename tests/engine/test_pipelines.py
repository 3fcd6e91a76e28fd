"""Pipelines: stacks respect the application order, the excludes, the conflicts and the constraints."""

from __future__ import annotations

import networkx as nx
import pytest

from engine import Constraints, recommend
from engine.pipelines import STACK_ORDER, candidate_graph, conflict
from engine.recommend import evaluate

from .conftest import make_evidence, make_method

#: Evidence for the fixture methods (a perplexity rise of 2% each), so that stacks have a known drop.
ROWS = [
    make_evidence(m, "LLaMA-7B", 5.7936, 5.68) for m in ("prune-ft", "quant-a", "quant-b", "tokens-x", "kv-y")
]


def stack_methods():
    return [
        make_method(
            "prune-ft",
            "fine-tuning",
            "static",
            family="pruning",
            changes=["weights", "architecture"],
            footprint={"bits_per_weight": 16, "param_fraction": 0.8},
            requirements={"gradients": True, "training_compute": "low"},
            composes_with=["quant-a"],
        ),
        make_method("quant-a", "post-training", "static"),
        make_method("quant-b", "post-training", "static", excludes=["tokens-x"]),
        make_method("tokens-x", "inference", "dynamic"),
        make_method("kv-y", "inference", "dynamic", family="kv-cache", changes=["kv-cache"]),
    ]


def test_stack_order_puts_training_before_training_free_compression():
    assert [p.value for p in STACK_ORDER] == ["pre-training", "fine-tuning", "post-training", "inference"]


def test_pipelines_follow_application_order_and_combine_estimates():
    ms = stack_methods()
    rec = recommend(Constraints(training_budget="low", max_quality_drop=20), ms, ROWS)
    assert rec.pipelines
    best = rec.pipelines[0]
    assert best.ids[:2] == ("prune-ft", "quant-a")  # pruning with tuning first, then 4-bit PTQ (listed pair)
    assert best.compatibility_bonus >= 1.0 and "prune-ft lists quant-a as composable" in best.notes
    for p in rec.pipelines:
        idx = [STACK_ORDER.index(m.phase) for m in p.methods]
        assert idx == sorted(idx) and 1 <= len(p.methods) <= 3
    est = best.estimate
    # 4.25 bits per kept weight, 80% of the weights kept (no shape given: weights only, every parameter)
    assert est.memory.weights_gb == pytest.approx(7e9 * 0.8 * 4.25 / 8 / 1e9)
    members = [rec.get(i).estimate.quality_drop_pct for i in best.ids]
    assert est.quality_drop_pct == pytest.approx(sum(members))


def test_no_stack_holds_two_weight_quantizers_or_an_excluded_pair():
    ms = stack_methods()
    evals = evaluate(Constraints(training_budget="low", max_quality_drop=50), ms, ROWS)
    g = candidate_graph(evals)
    assert nx.is_directed_acyclic_graph(g)
    assert not g.has_edge("quant-a", "quant-b") and not g.has_edge("quant-b", "quant-a")
    assert not g.has_edge("quant-b", "tokens-x")
    assert g.has_edge("kv-y", "tokens-x") or g.has_edge("tokens-x", "kv-y")  # same phase, disjoint, dynamic
    rec = recommend(Constraints(training_budget="low", max_quality_drop=50), ms, ROWS, max_pipelines=10)
    for p in rec.pipelines:
        assert not {"quant-a", "quant-b"} <= set(p.ids)
        assert not {"quant-b", "tokens-x"} <= set(p.ids)
    assert conflict(ms[1], ms[2]) == "quant-a and quant-b both quantize the weights"


def test_pipelines_never_use_methods_excluded_for_hard_reasons():
    ms = stack_methods()
    rec = recommend(
        Constraints(training_budget="none", max_quality_drop=20), ms, ROWS
    )  # prune-ft needs gradients
    assert "prune-ft" in rec.excluded_ids
    assert rec.pipelines and all("prune-ft" not in p.ids for p in rec.pipelines)
    frozen = recommend(Constraints(keep_original=True, max_quality_drop=20), ms, ROWS)
    assert all(m.impact.value == "dynamic" for p in frozen.pipelines for m in p.methods)


def test_memory_budget_is_met_by_the_stack_not_each_member():
    ms = stack_methods()
    rec = recommend(Constraints(training_budget="low", memory_gb=4.0, max_quality_drop=20), ms, ROWS)
    assert "tokens-x" in rec.excluded_ids  # 14 GB alone
    stacked = [p for p in rec.pipelines if "tokens-x" in p.ids]
    assert stacked and all(p.estimate.fits for p in rec.pipelines)
    assert any("alone would not pass" in n for n in stacked[0].notes)


def test_quality_budget_bounds_the_stack():
    ms = stack_methods()
    rec = recommend(Constraints(training_budget="low", max_quality_drop=3), ms, ROWS)
    assert all(p.estimate.quality_drop_pct <= 3 for p in rec.pipelines)
    assert all(len(p.methods) == 1 for p in rec.pipelines)  # every member alone is 2% (its evidence)


def test_unknown_quality_stacks_come_after_known_ones():
    ms = stack_methods()
    rec = recommend(Constraints(training_budget="low", max_quality_drop=20), ms, ROWS[:2], max_pipelines=10)
    known = [p.estimate.quality_drop_pct is not None for p in rec.pipelines]
    assert known == sorted(known, reverse=True) and any(not k for k in known)


def test_real_catalog_pipelines_are_distinct_and_valid(methods, evidence):
    c = Constraints(memory_gb=6, max_quality_drop=8, phases=("post-training", "inference"))
    from knowledge.catalog import load_catalog

    rec = recommend(c, methods, evidence, recipes=load_catalog(include_measured=False).recipes)
    assert len(rec.pipelines) == 3
    sets = [set(p.ids) for p in rec.pipelines]
    assert all(len(a & b) / len(a | b) < 0.5 for i, a in enumerate(sets) for b in sets[i + 1 :])
    for p in rec.pipelines:
        assert p.estimate.fits and (p.estimate.quality_drop_pct is None or p.estimate.quality_drop_pct <= 8)
        assert all(m.phase.value in ("post-training", "inference") for m in p.methods)
        assert p.engines  # one engine runs every member
        d = p.to_dict()
        assert set(d) == {
            "recipes",
            "methods",
            "phases",
            "engines",
            "score",
            "compatibility_bonus",
            "estimate",
            "notes",
        }


def test_a_pretraining_step_is_offered_when_you_train_the_model(catalog):
    """Issue 10: pipelines include pre-training steps when pre-training is available."""
    c = Constraints(model="llama-3.1-8b", training_budget="high")
    rec = recommend(c, catalog.methods, catalog.evidence, recipes=catalog.recipes)
    assert any(m.phase.value == "pre-training" for p in rec.pipelines for m in p.methods)
    frozen = recommend(
        Constraints(model="llama-3.1-8b", training_budget="none"),
        catalog.methods,
        catalog.evidence,
        recipes=catalog.recipes,
    )
    assert not any(m.phase.value == "pre-training" for p in frozen.pipelines for m in p.methods)
