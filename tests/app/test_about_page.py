"""The About page: the classification and claims, the rules from the rules file, the data format."""

from __future__ import annotations

import yaml

from app.state import rules_path
from knowledge.recipes import Recipe
from knowledge.schema import Method
from tests.app.conftest import open_page, text_of


def test_about_lists_claims_rules_and_method_fields():
    at = open_page("about")
    prose = text_of(at)
    for i in range(1, 9):
        assert f"**{i}." in prose
    data = yaml.safe_load(rules_path().read_text())
    rules = data["rules"] if isinstance(data, dict) else data
    shown = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**") and "  \n`" in m.value]
    assert sorted(shown) == sorted(r["id"] for r in rules)
    assert any(r["condition"].split()[0] in prose for r in rules)
    tables = [df.value for df in at.dataframe]
    field_table = next(t for t in tables if "field" in t.columns)
    assert list(field_table["field"]) == list(Method.model_fields)
    assert any("methods:" in c.value for c in at.code)
    # issue 10: what a recipe is, how the estimate is made, how to add a recipe, evidence or a device
    assert "A **recipe** is what an" in prose and "KV cache" in prose and "unknown" in prose
    assert "Add a recipe" in prose and "Add a row of evidence" in prose and "Add a device" in prose
    recipe_table = next(t for t in tables if "recipe field" in t.columns)
    assert list(recipe_table["recipe field"]) == list(Recipe.model_fields)
