"""The lifecycle and trade-off figures and the Markdown report, fed by a real recommendation."""

from __future__ import annotations

import json

import pytest

from app.figures.lifecycle import STEP_TRACE, PipelineView, Step, pipeline_figure
from app.figures.tradeoff import POINT_TRACE, Candidate, adaptivity_figure, memory_quality_figure
from app.report import pipeline_ids, to_markdown
from engine.constraints import Constraints
from engine.recommend import recommend


@pytest.fixture(scope="module")
def rec(catalog):
    return recommend(
        Constraints(phases=("post-training", "inference"), memory_gb=6, model_params=7e9),
        catalog.methods,
        catalog.evidence,
        recipes=catalog.recipes,
    )


def test_pipeline_figure_puts_each_step_in_its_phase_column():
    steps = (
        Step("llm-pruner", "LLM-Pruner", "fine-tuning", "pruning", "static"),
        Step("gptq", "GPTQ", "post-training", "quantization", "static"),
        Step("lazyllm", "LazyLLM", "inference", "token-pruning", "dynamic"),
        Step("h2o", "H2O", "inference", "kv-cache", "dynamic"),
    )
    fig = pipeline_figure([PipelineView("#1", steps), PipelineView("#2", steps[1:2])])
    traces = [t for t in fig.data if t.meta == STEP_TRACE]
    assert [list(t.customdata) for t in traces] == [[s.method_id for s in steps], ["gptq"]]
    xs = dict(zip(traces[0].customdata, traces[0].x))
    assert 2 < xs["llm-pruner"] < 3 and 1 < xs["gptq"] < 2 and 3 < xs["lazyllm"] < 4
    ys = dict(zip(traces[0].customdata, traces[0].y))
    assert ys["lazyllm"] != ys["h2o"], "two steps in one phase are stacked, not drawn on top of each other"
    assert all(y > max(traces[1].y) for y in traces[0].y), "the best pipeline is the top row"


def test_tradeoff_figures_draw_every_candidate_once():
    cands = [
        Candidate("a", "A", "quantization", "static", 5.0, 3.5, 1.0, 0.25, 1),
        Candidate("b", "B", "quantization", "static", 4.0, 3.5, 1.0, 0.25, 2),
        Candidate("c", "C", "token-pruning", "dynamic", 3.0, 14.0, 2.5, 1.0, 3),
    ]
    fig = memory_quality_figure(cands, memory_budget=6, max_drop=2, original_gb=14)
    points = [t for t in fig.data if t.meta == POINT_TRACE]
    drawn = [mid for t in points for group in t.customdata for mid in group]
    assert sorted(drawn) == ["a", "b", "c"]
    static = next(t for t in points if t.name == "static")
    assert list(static.text) == ["1-2"], (
        "candidates at the same spot share one marker labelled with both ranks"
    )
    assert {s.x0 for s in fig.layout.shapes if s.x0 == s.x1} >= {6, 14}
    fig2 = adaptivity_figure(cands)
    assert sorted(mid for t in fig2.data if t.meta == POINT_TRACE for g in t.customdata for mid in g) == [
        "a",
        "b",
        "c",
    ]


def test_markdown_report_lists_ranked_excluded_and_pipelines(rec, catalog):
    doc = rec.to_dict()
    md = to_markdown(doc, lambda i: catalog.methods[i].name, link="http://x/?hardware=cpu")
    first = rec.ranked[0]
    assert f"### 1. {first.recipe.name} (`{first.id}`)" in md
    assert f"- format: {first.recipe.format}; engine: {first.engine}" in md
    assert first.reasons[0].text in md
    assert f"## Excluded recipes ({len(rec.excluded)})" in md
    for e in rec.excluded[:3]:
        assert f"(`{e.id}`): {e.reasons[0].text}" in md
    if doc["pipelines"]:
        names = " → ".join(catalog.methods[i].name for i in pipeline_ids(doc["pipelines"][0]))
        assert names in md
    assert "http://x/?hardware=cpu" in md
    json.dumps(doc)  # the JSON download is this document
