"""A recipe's Run-it link opens the Compress page with the recipe's compressor and exact settings."""

from __future__ import annotations

import pytest

from knowledge.catalog import load_catalog
from knowledge.recipes import run_it_query
from tests.app.conftest import open_page
from tests.jobs.checkpoints import tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


@pytest.mark.parametrize("recipe_id", ["gptq-w4a16-g128-actorder", "sparsegpt-2of4", "rtn-w8a16"])
def test_run_it_opens_compress_with_the_recipe_settings(home, tiny, recipe_id):
    recipe = load_catalog(include_measured=False).recipes[recipe_id]
    query = run_it_query(recipe)
    assert query is not None and recipe.compressor is not None
    at = open_page("compress", {"source": "path", "path": str(tiny), **query})
    cid = recipe.compressor.id
    assert at.selectbox(key="cmp_method").value == cid
    widgets = {w.key: w.value for kind in ("selectbox", "number_input", "checkbox") for w in at.get(kind)}
    for name, value in recipe.compressor.flags.items():
        assert widgets[f"cmp_{cid}_{name}"] == value, (name, widgets.get(f"cmp_{cid}_{name}"))
