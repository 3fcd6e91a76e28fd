"""A recipe that names a bundled compressor gives it settings its config accepts (the Run-it link and
the `shrinkwise compress` command are built from them)."""

from __future__ import annotations

from compressors.base import all_compressors
from knowledge.catalog import load_catalog


def test_recipe_flags_are_valid_compressor_settings():
    cat = load_catalog(include_measured=False)
    comps = all_compressors()
    bundled = [r for r in cat.recipes.values() if r.compressor is not None]
    assert len(bundled) >= 10
    for r in bundled:
        assert r.compressor is not None
        cls = comps[r.compressor.id]  # the compressor exists
        assert r.method in cls.implements, (r.id, r.compressor.id)
        cls.config_cls.from_dict(dict(r.compressor.flags))  # raises ConfigError on a bad setting
