"""Gap analysis of the phase x impact grid."""

from __future__ import annotations

from engine import gap_report

from .conftest import make_method

PAPER_GAPS = {
    ("pre-training", "dynamic"),
    ("post-training", "dynamic"),
    ("fine-tuning", "dynamic"),
    ("inference", "static"),
}


def test_paper_set_gaps_are_exactly_the_cells_without_a_paper_method(catalog):
    report = gap_report(catalog)
    assert len(report.cells) == 8
    assert set(report.paper_gaps) == PAPER_GAPS
    for cell in report.cells:
        key = (cell.phase.value, cell.impact.value)
        assert cell.is_paper_gap == (key in PAPER_GAPS)
        assert set(cell.paper_methods) <= set(cell.all_methods)
        if cell.is_paper_gap:
            assert cell.fillers == cell.all_methods and len(cell.fillers) >= 2
        else:
            assert cell.fillers == ()
    assert report.still_empty == []  # the knowledge base fills every cell


def test_paper_methods_sit_in_the_papers_cells(catalog):
    report = gap_report(catalog)
    assert report.cell("post-training", "static").paper_methods == ("gptq", "spqr")
    assert report.cell("inference", "dynamic").paper_methods == ("aim", "cpu-inference", "lazyllm")
    assert report.cell("fine-tuning", "static").paper_methods == ("llm-pruner", "selective-distillation")
    assert report.cell("pre-training", "static").paper_methods == ("sparse-pretraining",)


def test_gap_report_accepts_a_catalog_a_mapping_or_a_list(catalog):
    a = gap_report(catalog).to_dict()
    assert gap_report(dict(catalog.methods)).to_dict() == a
    assert gap_report(list(catalog.methods.values())).to_dict() == a
    assert set(a) == {"cells", "paper_gaps", "still_empty"}
    assert set(a["cells"][0]) == {
        "phase",
        "impact",
        "paper_methods",
        "all_methods",
        "is_paper_gap",
        "fillers",
    }


def test_small_fixture_report():
    ms = [make_method("p", "inference", "dynamic", in_paper=True), make_method("x", "inference", "static")]
    report = gap_report(ms)
    assert report.cell("inference", "static").fillers == ("x",)
    assert len(report.paper_gaps) == 7 and len(report.still_empty) == 6
