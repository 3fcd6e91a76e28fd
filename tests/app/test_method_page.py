"""The method page: mechanism, grades, evidence with sources, citation, composition, how to run it."""

from __future__ import annotations

from tests.app.conftest import open_page, text_of


def test_gptq_page_shows_grades_evidence_and_citation(catalog):
    at = open_page("method", {"id": "gptq"})
    m = catalog.methods["gptq"]
    assert at.title[0].value == m.name
    assert [x.value for x in at.metric][:4] == ["very-high", "minimal", "high", "none"]  # the paper's Table 1
    prose = text_of(at)
    assert m.citation.url in prose and m.mechanism[:40] in prose
    evidence = [df.value for df in at.dataframe if "source" in df.value.columns]
    assert evidence and len(evidence[0]) == len(catalog.evidence_for("gptq"))
    if m.compressor:
        assert any(f"--method {m.compressor}" in c.value for c in at.code)


def test_unknown_id_warns_and_offers_a_choice():
    at = open_page("method", {"id": "no-such-method"})
    assert any("no-such-method" in w.value for w in at.warning)
    assert at.selectbox[0].value is None


def test_compose_button_opens_the_other_method(catalog):
    m = next(m for m in catalog.methods.values() if m.composes_with)
    at = open_page("method", {"id": m.id})
    other = m.composes_with[0]
    at.pills(key=f"method_composes_{m.id}").set_value(other).run()
    assert not at.exception
    assert at.title[0].value == catalog.methods[other].name


def test_without_an_id_the_page_asks_for_a_method():
    at = open_page("method")
    assert at.selectbox[0].value is None
    assert "Pick a method" in at.info[0].value
