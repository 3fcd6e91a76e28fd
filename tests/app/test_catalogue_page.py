"""The Catalogue page: every method in one table, searchable and filterable."""

from __future__ import annotations

from tests.app.conftest import open_page


def _table(at):
    (df,) = at.dataframe
    return df.value


def test_table_lists_every_method(catalog):
    at = open_page("catalogue")
    table = _table(at)
    assert len(table) == len(catalog.methods)
    assert set(table["id"]) == set(catalog.methods)
    assert {"phase", "impact", "size reduction", "quality drop"} <= set(table.columns)


def test_search_matches_name_id_family_summary_and_aliases(catalog):
    at = open_page("catalogue")
    at.text_input(key="cat_query").input("GPTQ").run()
    table = _table(at)
    expected = {
        m.id
        for m in catalog.methods.values()
        if "gptq" in " ".join([m.name, m.id, str(m.family), m.summary, *m.aliases]).lower()
    }
    assert "gptq" in expected
    assert set(table["id"]) == expected


def test_paper_toggle_and_cell_filters(catalog):
    at = open_page("catalogue")
    at.toggle(key="cat_paper").set_value(True).run()
    assert len(_table(at)) == 8
    at.toggle(key="cat_paper").set_value(False).run()
    at.multiselect(key="cat_phase").set_value(["inference"]).run()
    at.multiselect(key="cat_impact").set_value(["dynamic"]).run()
    table = _table(at)
    expected = {
        m.id for m in catalog.methods.values() if m.phase.value == "inference" and m.impact.value == "dynamic"
    }
    assert set(table["id"]) == expected


def test_select_box_opens_the_method_page(catalog):
    at = open_page("catalogue")
    at.selectbox(key="cat_pick").set_value("gptq").run()
    assert not at.exception
    assert at.title[0].value == catalog.methods["gptq"].name
