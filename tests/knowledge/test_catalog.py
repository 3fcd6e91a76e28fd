"""The in-memory catalog: cell grouping, the paper's set, evidence lookup, caching, measured rows."""

from __future__ import annotations

import dataclasses
import sys
import time

import pytest

from jobs import queue
from knowledge import db
from knowledge.catalog import CELLS, Catalog, UnknownMethodError, clear_cache, load_catalog
from knowledge.loader import load_all
from knowledge.schema import Impact, Phase


def test_small_catalog_queries(small_data):
    cat = Catalog.from_data(load_all(small_data.root))
    assert list(cat.methods) == ["alpha", "beta", "gamma"]
    cells = cat.by_cell()
    assert list(cells) == list(CELLS) and len(cells) == 8
    assert [m.id for m in cells[(Phase.POST_TRAINING, Impact.STATIC)]] == ["alpha", "beta"]
    assert [m.id for m in cat.in_cell("inference", "dynamic")] == ["gamma"]
    assert cells[(Phase.PRE_TRAINING, Impact.DYNAMIC)] == ()
    assert [m.id for m in cat.paper_methods()] == ["gamma"]
    assert [e.metric.value for e in cat.evidence_for("gamma")] == ["speedup"]
    assert cat.evidence_for("beta") == ()
    assert [m.id for m in cat.filter(family="token-pruning")] == ["gamma"]
    assert [m.id for m in cat.filter(phase="post-training", impact="static")] == ["alpha", "beta"]


def test_catalog_is_immutable(small_data):
    cat = Catalog.from_data(load_all(small_data.root))
    with pytest.raises(TypeError):
        cat.methods["x"] = cat.methods["alpha"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cat.evidence = ()  # type: ignore[misc]


def test_unknown_method_lists_close_ids(small_data):
    cat = Catalog.from_data(load_all(small_data.root))
    with pytest.raises(UnknownMethodError) as exc:
        cat.method("alpah")
    assert "unknown method id 'alpah'; did you mean alpha" in str(exc.value)
    assert isinstance(exc.value, KeyError)


def test_real_catalog_paper_methods_and_cells():
    cat = load_catalog(include_measured=False)
    assert len(cat.paper_methods()) == 8
    cells = cat.by_cell()
    assert all(len(ms) >= 2 for ms in cells.values()), {k: len(v) for k, v in cells.items()}
    assert len(cat.evidence_for("gptq")) >= 10


def test_load_catalog_is_cached_and_does_not_create_a_database(isolated_home):
    first = load_catalog()
    assert load_catalog() is first
    assert not (isolated_home / db.DB_FILENAME).exists()
    clear_cache()
    assert load_catalog() is not first


def test_cached_catalog_is_fast():
    load_catalog()
    start = time.perf_counter()
    for _ in range(100):
        load_catalog()
    assert (time.perf_counter() - start) / 100 < 0.001


def test_catalog_pulls_neither_torch_nor_sqlalchemy_without_a_database(isolated_home):
    import os
    import subprocess

    code = (
        "import sys, knowledge.catalog as c; c.load_catalog(); "
        "print('torch' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    env = {**os.environ, "SHRINKWISE_HOME": str(isolated_home)}
    env.pop("SHRINKWISE_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "False"]


def test_measured_runs_join_the_catalog():
    db.sync_catalog()
    before = len(load_catalog().evidence)
    run = queue.create_run(
        model_ref="demo",
        model_name="SmolLM2-135M-Instruct",
        method="gptq",
        compressor="gptq",
        config={"bits": 4, "group_size": 64},
    )
    queue.claim_next_run("w1")
    queue.finish_run(
        run.id,
        before_metrics={"perplexity": 10.05},
        after_metrics={"perplexity": 10.9},
        machine="test machine",
    )
    cat = load_catalog()
    assert len(cat.evidence) == before + 1
    measured = cat.evidence_for("gptq", measured=True)
    assert any(e.source.paper == f"Shrinkwise run #{run.id}" for e in measured)
    assert load_catalog(include_measured=False).evidence_for("gptq", measured=True) == tuple(
        e for e in load_catalog(include_measured=False).evidence_for("gptq") if e.measured_here
    )
