"""The bundled data files load, hold the paper's eight exactly as Table 1 grades them, and the
evidence rows are complete, attached to real methods and numerically sane."""

from __future__ import annotations

import math
import re

import pytest

from knowledge.loader import load_all, resolve_format
from knowledge.schema import Hardware, Metric, ServingEngine, SourceTag

TABLE_1 = {
    # id: (phase, impact, size_reduction, quality_drop, hardware_dependence, backward_compatibility)
    "sparse-pretraining": ("pre-training", "static", "high", "moderate", "low", "none"),
    "spqr": ("post-training", "static", "very-high", "minimal", "medium", "none"),
    "gptq": ("post-training", "static", "very-high", "minimal", "high", "none"),
    "llm-pruner": ("fine-tuning", "static", "medium", "moderate", "low", "none"),
    "selective-distillation": ("fine-tuning", "static", "medium", "moderate", "low", "none"),
    "cpu-inference": ("inference", "dynamic", "low-to-medium", "minimal", "high", "full"),
    "aim": ("inference", "dynamic", "variable", "minimal", "medium", "full"),
    "lazyllm": ("inference", "dynamic", "variable", "minimal", "medium", "full"),
}

#: Every method evidence.md has figures for, and so must have evidence rows.
EVIDENCE_METHODS = {
    "gptq",
    "rtn",
    "spqr",
    "sparsegpt",
    "wanda",
    "magnitude-pruning",
    "llm-pruner",
    "lazyllm",
    "aim",
    "sparse-pretraining",
    "cpu-inference",
    "switch-transformer",
    "mixtral-moe",
    "mixture-of-depths",
    "layerskip",
    "matformer",
    "flextron",
    "deja-vu",
    "teal",
    "cats",
}


@pytest.fixture(scope="module")
def data():
    return load_all()


def test_bundled_data_loads(data):
    assert len(data.methods) >= 58  # the paper's eight + at least 50 more (issue 3)
    assert len({m.id for m in data.methods}) == len(data.methods)


def test_paper_eight_present_with_table_1_values(data):
    by_id = {m.id: m for m in data.methods}
    assert {m.id for m in data.methods if m.in_paper} == set(TABLE_1)
    for mid, expected in TABLE_1.items():
        m = by_id[mid]
        got = (
            m.phase.value,
            m.impact.value,
            m.grades.size_reduction.value,
            m.grades.quality_drop.value,
            m.grades.hardware_dependence.value,
            m.grades.backward_compatibility.value,
        )
        assert got == expected, mid


def test_at_least_60_evidence_rows_all_for_known_methods(data):
    ids = {m.id for m in data.methods}
    assert len(data.evidence) >= 60
    assert {e.method for e in data.evidence} <= ids
    assert EVIDENCE_METHODS <= {e.method for e in data.evidence}


def test_evidence_values_are_sane(data):
    methods = {m.id: m for m in data.methods}
    for e in data.evidence:
        label = f"{e.method} / {e.model} / {e.setting} / {e.metric}"
        assert math.isfinite(e.value) and e.value > 0, label
        rc = e.relative_change
        if rc is None:
            continue
        assert math.isfinite(rc) and rc > -1, label
        if e.metric is Metric.PERPLEXITY:
            # within noise a compressed model can score a hair lower (LLM.int8() BLOOM-176B on LAMBADA:
            # 3.9191 vs 3.931); clearly lower perplexity after compression is a typo
            assert e.value >= e.baseline * 0.98, f"{label}: compression does not lower perplexity"
        if e.metric is Metric.ACCURACY:
            # compressed models sometimes score above their baseline on one benchmark (noise: Winogrande
            # 76.4 vs 75.93 on an FP8 model card; KIVI-2 TruthfulQA 33.95 vs 30.76 in KIVI's Table 3);
            # more than 15% above is a typo (value and baseline swapped, a wrong column). Not for a
            # pre-training choice: its row compares two separately trained models (Mixtral 8x7B against
            # the dense Llama 2 13B of the same active parameters scores 74.4 vs 34.3 on GSM8K)
            pretraining = str(methods[e.method].phase.value) == "pre-training"
            assert pretraining or e.value <= e.baseline * 1.15, label
        if e.metric is Metric.SPEEDUP:
            assert e.value > 1 and e.baseline == 1.0, label
        if e.metric in (Metric.FLOPS_FRACTION, Metric.TRAINING_TOKENS_FRACTION, Metric.SPARSITY):
            assert 0 < e.value <= 1, label
        if e.metric is Metric.BITS_PER_WEIGHT:
            assert e.value < e.baseline, label


def test_known_figures_are_exactly_as_in_evidence_md(data):
    def row(method, model, metric, setting_part, dataset=None):
        rows = [
            e
            for e in data.evidence
            if e.method == method
            and e.model == model
            and e.metric.value == metric
            and setting_part in e.setting
            and (dataset is None or e.dataset == dataset)
        ]
        assert len(rows) == 1, (method, model, setting_part, rows)
        return rows[0]

    g = row("gptq", "OPT-125M", "perplexity", "4-bit")
    assert (g.value, g.baseline) == (31.12, 27.65)
    assert row("rtn", "OPT-1.3B", "perplexity", "3-bit").value == 1.3e4
    assert row("gptq", "LLaMA-7B", "perplexity", "group size 128").value == 6.61
    assert row("spqr", "LLaMA-7B", "perplexity", "near-lossless", "C4").value == 7.13
    w = row("wanda", "Llama-2-7B", "perplexity", "2:4")
    assert (w.value, w.baseline) == (11.02, 5.12)
    assert row("magnitude-pruning", "BLOOM-560M", "perplexity", "50%").value == 2e10
    assert row("llm-pruner", "LLaMA-7B", "accuracy", "LoRA-tuned, Element2").value == 60.07
    assert row("teal", "LLMs evaluated in the TEAL paper (abstract)", "speedup", "50%").value == 1.8
    assert row("lazyllm", "Llama-2-7B", "speedup", "token pruning").value == 2.34


def test_primary_secondary_tags_follow_evidence_md(data):
    gptq_opt = [
        e
        for e in data.evidence
        if e.source.paper.startswith("Frantar et al. 2022")
        and e.model.startswith("OPT-")
        and e.metric is Metric.PERPLEXITY
    ]
    assert len(gptq_opt) == 12 and all(e.source.tag is SourceTag.SECONDARY for e in gptq_opt)
    spqr_t1 = [e for e in data.evidence if "SpQR" in e.source.paper]
    assert spqr_t1 and all(e.source.tag is SourceTag.SECONDARY for e in spqr_t1)
    readme = [e for e in data.evidence if "README" in e.source.locator]
    assert readme and all(e.source.tag is SourceTag.PRIMARY for e in readme)


def test_measured_smollm2_rows_are_10_05_times_the_measured_change(data):
    all_measured = [e for e in data.evidence if e.source.tag is SourceTag.MEASURED]
    # the six rows from shared/docs/evidence.md share its 10.05 baseline; later measurements carry their own
    measured = [e for e in all_measured if "2026-11-30" not in e.source.locator]
    assert len(measured) == 6
    (later,) = [e for e in all_measured if e not in measured]
    assert (later.recipe, later.baseline, later.value) == ("dynamic-int8-cpu", 15.84, 16.30)
    for e in measured:
        assert e.model == "SmolLM2-135M-Instruct" and e.baseline == 10.05
        change = int(re.search(r"relative change \+(\d+)%", e.note).group(1)) / 100
        assert e.value == round(10.05 * (1 + change), 2)
    by_setting = {(e.method, e.setting): round(e.relative_change, 2) for e in measured}
    assert by_setting[("rtn", "4-bit asymmetric, group size 32")] == 0.22
    assert by_setting[("magnitude-pruning", "50% unstructured, per layer")] == 27.34


def test_every_literature_row_cites_where_in_the_paper(data):
    for e in data.evidence:
        if e.source.tag is SourceTag.MEASURED:
            continue
        assert e.source.locator and e.source.url and e.source.url.startswith("https://"), e


def test_hardware_and_engines_cover_the_enums(data):
    assert {h.id for h in data.hardware} == set(Hardware)
    assert {e.id for e in data.engines} == set(ServingEngine)
    fmt_ids = {f.id for f in data.formats}
    for eng in data.engines:
        assert set(eng.loads) <= fmt_ids


def test_most_method_formats_resolve(data):
    names = [f.format for m in data.methods for f in m.formats]
    unresolved = [n for n in names if resolve_format(n, data.formats) is None]
    assert names and not unresolved, unresolved


def test_bundled_data_has_no_warnings(data):
    """Every method's output format resolves and every listed engine loads it (formats.yaml)."""
    assert [str(w) for w in data.warnings] == []
