"""The public scenario suite: deployment scenarios written from public documentation, as data.

Each ``*.yaml`` file here holds one scenario: the constraints a user would give and what an expert
would expect, each expectation citing the public document or paper table it comes from. Keys of
``expect``:

- ``top1_in``: the first recipe is one of these ids;
- ``top3_any``: at least one of these ids is among the first three;
- ``ranked``: these recipes are ranked (feasible and within the limits);
- ``excluded``: recipe id -> the rule that must exclude it;
- ``top_tier``: the first recipe's quality rests on evidence ("meets") or not ("quality-unknown");
- ``pipeline_phase``: some pipeline has a step in this phase;
- ``nothing_fits``: the recommendation says what would make something fit.

Add a scenario by adding a file; the runner finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("*.yaml"))
KEYS = {"top1_in", "top3_any", "ranked", "excluded", "top_tier", "pipeline_phase", "nothing_fits"}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(data) == {"name", "constraints", "expect"}, f"{path.name}: keys {sorted(data)}"
    for key, exp in data["expect"].items():
        assert key in KEYS, f"{path.name}: unknown expectation {key!r}"
        assert isinstance(exp, dict) and exp.get("source"), f"{path.name}: {key} must cite its source"
    return data


def test_enough_scenarios() -> None:
    assert len(FILES) >= 24


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path, catalog: Any) -> None:
    from engine.recommend import recommend

    sc = _load(path)
    rec = recommend(sc["constraints"], catalog.methods, catalog.evidence, recipes=catalog.recipes)
    ids = rec.ranked_ids
    exp = sc["expect"]
    where = f"{path.name} ranked {ids[:5]}"
    if "top1_in" in exp:
        assert ids and ids[0] in exp["top1_in"]["ids"], where
    if "top3_any" in exp:
        assert set(ids[:3]) & set(exp["top3_any"]["ids"]), where
    if "ranked" in exp:
        missing = [i for i in exp["ranked"]["ids"] if i not in ids]
        assert not missing, f"{where}; not ranked: {missing}"
    if "excluded" in exp:
        for rid, rule in exp["excluded"]["ids"].items():
            item = rec.get(rid)
            rules = [r.rule_id for r in getattr(item, "reasons", ()) if r.effect == "exclude"]
            assert rid not in ids and rule in rules, (
                f"{path.name}: {rid} excluded by {rules}, expected {rule}"
            )
    if "top_tier" in exp:
        assert rec.ranked and rec.ranked[0].tier == exp["top_tier"]["tier"], where
    if "pipeline_phase" in exp:
        phases = {ph for p in rec.pipelines for ph in p.to_dict()["phases"]}
        assert exp["pipeline_phase"]["phase"] in phases, f"{path.name}: pipeline phases {phases}"
    if "nothing_fits" in exp:
        assert not rec.ranked and rec.nothing_fits and rec.nothing_fits["relaxations"], where
