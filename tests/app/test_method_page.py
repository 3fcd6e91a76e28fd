"""The method page: mechanism, grades, evidence with sources, citation, composition, how to run it."""

from __future__ import annotations

from tests.app.conftest import open_page, text_of


def _papers_table(at):
    return next(df.value for df in at.dataframe if "link" in df.value.columns)


def _measured_table(at):
    return next((df.value for df in at.dataframe if "run" in df.value.columns), None)


def test_gptq_page_shows_grades_evidence_and_citation(catalog):
    at = open_page("method", {"id": "gptq"})
    m = catalog.methods["gptq"]
    assert at.title[0].value == m.name
    assert [x.value for x in at.metric][:4] == ["very-high", "minimal", "high", "none"]  # the paper's Table 1
    prose = text_of(at)
    assert m.citation.url in prose and m.mechanism[:40] in prose
    heads = [h.value for h in at.subheader]
    assert heads.index("From the papers") + 1 == heads.index("Measured here")
    papers = _papers_table(at)
    assert len(papers) == len(catalog.evidence_for("gptq", measured=False)) > 0
    assert (papers["kind"] != "measured").all()
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


def test_a_run_measured_here_shows_in_its_own_section_with_model_value_and_run_link(home):
    from jobs import queue

    run = queue.create_run(
        model_ref="demo",
        model_name="TinyTestLM-1M",
        method="gptq",
        compressor="gptq",
        config={"bits": 4, "group_size": 128},
    )
    queue.claim_next_run("host:1:t")
    queue.finish_run(
        int(run.id),
        before_metrics={"perplexity": 10.05, "size_bytes": 540e6},
        after_metrics={"perplexity": 11.93, "size_bytes": 160e6},
    )
    at = open_page("method", {"id": "gptq"})
    table = _measured_table(at)
    assert table is not None, "no 'Measured here' table"
    ppl = table[table["metric"] == "perplexity"].iloc[0]
    assert ppl["model"] == "TinyTestLM-1M"
    assert ppl["value"] == 11.93 and ppl["baseline"] == 10.05 and ppl["change"] == "+18.7%"
    assert ppl["run"] == f"#{run.id}" and "bits=4" in ppl["setting"]
    assert "TinyTestLM-1M" in text_of(at)
    # the papers' table stays the papers' only
    assert "TinyTestLM-1M" not in set(_papers_table(at)["model"])
    links = [el for el in at.get("page_link") if f"run #{run.id}" in el.proto.label]
    assert (
        links
        and links[0].proto.page == "run_result"
        and links[0].proto.query_string == f"run={run.public_id}"
    )


def test_without_measured_rows_the_page_says_how_to_measure_one(home):
    at = open_page("method", {"id": "gptq"})
    assert _measured_table(at) is None
    prose = text_of(at)
    assert "Nothing measured here yet" in prose and "shrinkwise compress demo --method gptq" in prose
