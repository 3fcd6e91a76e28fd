"""The pre-training and post-training method files hold exactly the agreed methods, valid and consistent.

These tests read the YAML with ``yaml`` and ``knowledge.schema.Method`` directly (not through the
loader), so a broken entry is pinned to these two data files. The id list is the knowledge base's
fixed vocabulary: cross-references in ``composes_with``/``excludes`` may point into the fine-tuning
and inference files, so they are checked against the full list.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from knowledge.schema import Impact, Method, Phase

DATA = Path(__file__).resolve().parents[2] / "knowledge" / "data" / "methods"
FILES = ("pre-training.yaml", "post-training.yaml")

EXPECTED = {
    ("pre-training", "static"): {
        "sparse-pretraining",
        "bitnet-b158",
        "mobilellm",
        "grouped-query-attention",
        "multi-query-attention",
        "sheared-llama",
    },
    ("pre-training", "dynamic"): {
        "switch-transformer",
        "mixtral-moe",
        "mixture-of-depths",
        "layerskip",
        "matformer",
        "calm-early-exit",
    },
    ("post-training", "static"): {
        "rtn",
        "gptq",
        "spqr",
        "awq",
        "smoothquant",
        "hqq",
        "quip-sharp",
        "aqlm",
        "sparsegpt",
        "wanda",
        "magnitude-pruning",
        "slicegpt",
        "shortgpt",
        "squeezellm",
        "omniquant",
        "quarot",
        "gguf-k-quants",
        "svd-llm",
        "fp8-static",
    },
    ("post-training", "dynamic"): {"deja-vu", "teal", "cats", "flextron"},
}

OTHER_FILES_IDS = {
    # fine-tuning
    "llm-pruner",
    "selective-distillation",
    "qlora",
    "minillm",
    "llm-qat",
    "gkd",
    "distilling-step-by-step",
    "minitron",
    "medusa",
    "eagle",
    "moefication",
    "d-llm",
    # inference
    "llm-int8",
    "nf4-load",
    "fp8-online",
    "cpu-inference",
    "aim",
    "lazyllm",
    "h2o",
    "streamingllm",
    "kivi",
    "speculative-decoding",
    "dynamic-int8",
    "snapkv",
    "llmlingua",
}
MY_IDS = set().union(*EXPECTED.values())
ALL_IDS = MY_IDS | OTHER_FILES_IDS

# The paper's Table 1 (paper.md), verbatim.
PAPER = {
    "sparse-pretraining": ("pre-training", "static", "high", "moderate", "low", "none"),
    "spqr": ("post-training", "static", "very-high", "minimal", "medium", "none"),
    "gptq": ("post-training", "static", "very-high", "minimal", "high", "none"),
}


def _raw_entries() -> list[tuple[str, dict]]:
    out = []
    for name in FILES:
        doc = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))
        assert isinstance(doc, dict) and set(doc) == {"methods"}, f"{name}: top level must be only 'methods:'"
        out.extend((name, entry) for entry in doc["methods"])
    return out


@pytest.fixture(scope="module")
def methods() -> dict[str, Method]:
    return {e["id"]: Method(**e) for _, e in _raw_entries()}


@pytest.mark.parametrize(
    "where,entry", _raw_entries(), ids=lambda v: v.get("id", "?") if isinstance(v, dict) else v
)
def test_every_entry_validates_against_the_schema(where: str, entry: dict) -> None:
    Method(**entry)


def test_ids_are_unique_and_exactly_the_agreed_list() -> None:
    ids = [e["id"] for _, e in _raw_entries()]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"duplicate ids: {dupes}"
    assert set(ids) == MY_IDS, f"missing {sorted(MY_IDS - set(ids))}, unexpected {sorted(set(ids) - MY_IDS)}"


def test_each_method_sits_in_its_agreed_cell_and_each_cell_has_two(methods: dict[str, Method]) -> None:
    for (phase, impact), ids in EXPECTED.items():
        assert len(ids) >= 2
        for i in ids:
            assert methods[i].cell == (Phase(phase), Impact(impact)), f"{i} is in {methods[i].cell}"


def test_paper_methods_have_table_1_values_exactly(methods: dict[str, Method]) -> None:
    for i, (phase, impact, size, drop, hw, compat) in PAPER.items():
        m = methods[i]
        assert m.in_paper is True
        assert (m.phase.value, m.impact.value) == (phase, impact)
        g = m.grades
        assert (
            g.size_reduction.value,
            g.quality_drop.value,
            g.hardware_dependence.value,
            g.backward_compatibility.value,
        ) == (size, drop, hw, compat), i
    others = [i for i, m in methods.items() if m.in_paper and i not in PAPER]
    assert not others, f"only the paper's methods may set in_paper: {others}"


def test_dynamic_methods_here_fill_the_gap_and_static_ones_do_not(methods: dict[str, Method]) -> None:
    for i, m in methods.items():
        assert m.fills_gap is (m.impact is Impact.DYNAMIC), i
        if m.impact is Impact.STATIC:
            assert m.grades.backward_compatibility.value == "none", i


def test_cross_references_use_only_known_ids(methods: dict[str, Method]) -> None:
    for i, m in methods.items():
        unknown = (set(m.composes_with) | set(m.excludes)) - ALL_IDS
        assert not unknown, f"{i} references unknown ids {sorted(unknown)}"


def test_no_pair_is_composed_one_way_and_excluded_the_other(methods: dict[str, Method]) -> None:
    clashes = [
        (a, b)
        for a, m in methods.items()
        for b in m.composes_with
        if b in methods and a in methods[b].excludes
    ]
    assert not clashes, f"composes_with in one entry but excludes in the other: {clashes}"


def test_footprints_match_the_formats_they_describe(methods: dict[str, Method]) -> None:
    assert methods["gptq"].footprint.bits_per_weight == pytest.approx(4.25)
    assert methods["rtn"].footprint.bits_per_weight == pytest.approx(4.25)
    assert 3.9 <= methods["spqr"].footprint.bits_per_weight <= 4.63
    assert 2.0 <= methods["aqlm"].footprint.bits_per_weight <= 2.3
    assert methods["fp8-static"].footprint.bits_per_weight == 8
    for i in ("sparsegpt", "wanda", "magnitude-pruning"):
        fp = methods[i].footprint
        assert (fp.bits_per_weight, fp.sparsity, fp.sparsity_stored) == (16, 0.5, False), i
    for i, m in methods.items():
        if m.impact is Impact.DYNAMIC:
            assert (m.footprint.bits_per_weight, m.footprint.param_fraction) == (16, 1.0), i


def test_citations_point_at_their_arxiv_abstract(methods: dict[str, Method]) -> None:
    for i, m in methods.items():
        if m.citation.arxiv:
            assert m.citation.url == f"https://arxiv.org/abs/{m.citation.arxiv}", i
    assert methods["gptq"].citation.arxiv == "2210.17323"
    assert methods["spqr"].citation.arxiv == "2306.03078"
    assert methods["sparse-pretraining"].citation.arxiv == "2405.03594"
