"""The fine-tuning and inference method data files: valid, complete, and true to the paper's Table 1.

These pin the data itself (not the loader): every entry must build a ``Method``, the ids must be the
agreed list (other files reference them in composes_with/excludes), and the paper's five methods in
these phases must carry exactly the paper's phase, impact and grades.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from knowledge.schema import Impact, Method, Phase

DATA = Path(__file__).resolve().parents[2] / "knowledge" / "data" / "methods"
FILES = {"fine-tuning": DATA / "fine-tuning.yaml", "inference": DATA / "inference.yaml"}

EXPECTED_CELLS: dict[tuple[str, str], set[str]] = {
    ("fine-tuning", "static"): {
        "llm-pruner",
        "selective-distillation",
        "qlora",
        "minillm",
        "llm-qat",
        "gkd",
        "distilling-step-by-step",
        "minitron",
    },
    ("fine-tuning", "dynamic"): {"medusa", "eagle", "moefication", "d-llm"},
    ("inference", "static"): {"llm-int8", "nf4-load", "fp8-online"},
    ("inference", "dynamic"): {
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
    },
}

#: The whole knowledge base's ids, fixed across the four method files so references can cross files.
ALL_IDS: set[str] = set().union(*EXPECTED_CELLS.values()) | {
    # pre-training
    "sparse-pretraining",
    "bitnet-b158",
    "mobilellm",
    "grouped-query-attention",
    "multi-query-attention",
    "sheared-llama",
    "switch-transformer",
    "mixtral-moe",
    "mixture-of-depths",
    "layerskip",
    "matformer",
    "calm-early-exit",
    # post-training
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
    "deja-vu",
    "teal",
    "cats",
    "flextron",
}

#: Table 1 of the paper: (phase, impact, size_reduction, quality_drop, hardware_dependence, backward).
PAPER_TABLE_1 = {
    "llm-pruner": ("fine-tuning", "static", "medium", "moderate", "low", "none"),
    "selective-distillation": ("fine-tuning", "static", "medium", "moderate", "low", "none"),
    "cpu-inference": ("inference", "dynamic", "low-to-medium", "minimal", "high", "full"),
    "aim": ("inference", "dynamic", "variable", "minimal", "medium", "full"),
    "lazyllm": ("inference", "dynamic", "variable", "minimal", "medium", "full"),
}


def _entries(name: str) -> list[dict]:
    doc = yaml.safe_load(FILES[name].read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and list(doc) == ["methods"], f"{FILES[name]} must hold only 'methods:'"
    assert isinstance(doc["methods"], list)
    return doc["methods"]


@pytest.fixture(scope="module")
def methods() -> dict[str, Method]:
    out: dict[str, Method] = {}
    for name in FILES:
        for entry in _entries(name):
            m = Method(**entry)
            assert m.phase.value == name, f"{m.id} is in {name}.yaml but has phase {m.phase}"
            assert m.id not in out, f"duplicate id {m.id}"
            out[m.id] = m
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_entry_validates_against_the_schema(name: str) -> None:
    for i, entry in enumerate(_entries(name)):
        try:
            Method(**entry)
        except Exception as exc:  # pragma: no cover - the message is the point when it fails
            pytest.fail(f"{FILES[name].name} entry {i} ({entry.get('id')!r}): {exc}")


def test_ids_are_unique_and_exactly_the_agreed_list(methods: dict[str, Method]) -> None:
    raw = [e["id"] for name in FILES for e in _entries(name)]
    assert len(raw) == len(set(raw)), "duplicate ids"
    assert set(methods) == set().union(*EXPECTED_CELLS.values())


def test_each_method_sits_in_its_agreed_cell(methods: dict[str, Method]) -> None:
    for (phase, impact), ids in EXPECTED_CELLS.items():
        for mid in ids:
            assert (methods[mid].phase, methods[mid].impact) == (Phase(phase), Impact(impact)), mid


def test_every_cell_of_these_phases_has_at_least_two_methods(methods: dict[str, Method]) -> None:
    for phase in (Phase.FINE_TUNING, Phase.INFERENCE):
        for impact in Impact:
            n = sum(1 for m in methods.values() if m.cell == (phase, impact))
            assert n >= 2, f"cell {phase}/{impact} has {n} methods"


@pytest.mark.parametrize("mid", sorted(PAPER_TABLE_1))
def test_paper_methods_carry_table_1_exactly(methods: dict[str, Method], mid: str) -> None:
    m = methods[mid]
    g = m.grades
    got = (
        m.phase.value,
        m.impact.value,
        g.size_reduction.value,
        g.quality_drop.value,
        g.hardware_dependence.value,
        g.backward_compatibility.value,
    )
    assert got == PAPER_TABLE_1[mid]
    assert m.in_paper is True


def test_only_the_paper_methods_are_marked_in_paper(methods: dict[str, Method]) -> None:
    assert {mid for mid, m in methods.items() if m.in_paper} == set(PAPER_TABLE_1)


def test_references_name_only_known_ids(methods: dict[str, Method]) -> None:
    for m in methods.values():
        unknown = (set(m.composes_with) | set(m.excludes)) - ALL_IDS
        assert not unknown, f"{m.id} references unknown ids {sorted(unknown)}"


def test_static_methods_do_not_claim_full_backward_compatibility(methods: dict[str, Method]) -> None:
    for m in methods.values():
        if m.impact is Impact.STATIC:
            assert m.grades.backward_compatibility.value != "full", m.id
        else:
            assert m.grades.backward_compatibility.value == "full", m.id


def test_footprints_are_the_cited_figures(methods: dict[str, Method]) -> None:
    # QLoRA NF4 with double quantisation: 4 + 8/64 + 32/(64*256).
    assert methods["qlora"].footprint.bits_per_weight == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)
    assert methods["nf4-load"].footprint.bits_per_weight == pytest.approx(4.127, abs=1e-3)
    # LLM-Pruner, LLaMA-7B: 6.74B -> 5.42B parameters (evidence.md).
    assert methods["llm-pruner"].footprint.param_fraction == pytest.approx(5.42 / 6.74, abs=0.01)
    # AIM, LLaVA-OneVision-7B on VideoMME: full accuracy at 14.8% of FLOPs.
    assert methods["aim"].footprint.compute_fraction == pytest.approx(0.148)
    assert methods["fp8-online"].footprint.bits_per_weight == 8.0
    assert 4.0 < methods["cpu-inference"].footprint.bits_per_weight < 4.5


def test_excludes_are_symmetric_within_these_files(methods: dict[str, Method]) -> None:
    """If A excludes B and both live here, B must not claim to compose with A."""
    for m in methods.values():
        for other in m.excludes:
            if other in methods:
                assert m.id not in methods[other].composes_with, (
                    f"{m.id} excludes {other} but {other} composes with it"
                )


def test_formats_and_engines_agree_with_formats_yaml(methods: dict[str, Method]) -> None:
    """Every output format is one formats.yaml knows, and every engine listed for it loads it."""
    path = DATA.parent / "formats.yaml"
    if not path.exists():
        pytest.skip("formats.yaml is not there yet")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    known = {f["id"] for f in doc["formats"]}
    loads = {e["id"]: set(e["loads"]) for e in doc["engines"]}
    for m in methods.values():
        for out in m.formats:
            assert out.format in known, f"{m.id}: unknown format {out.format!r}"
            for eng in out.engines:
                assert out.format in loads[eng.value], f"{m.id}: {eng.value} does not load {out.format}"


def test_citations_point_at_their_arxiv_page(methods: dict[str, Method]) -> None:
    for m in methods.values():
        if m.citation.arxiv:
            assert m.citation.url == f"https://arxiv.org/abs/{m.citation.arxiv}", m.id
