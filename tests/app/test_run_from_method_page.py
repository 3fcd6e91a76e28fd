"""A run started from a method page is filed under that method: its measured figures come back there.

For every method of the knowledge base that names a bundled compressor (read from the data, so a new
compressor is covered without touching this file): open the method page, follow its "Run it" link to
the Compress page exactly as the link sets the URL, choose a tiny model, press Run, execute the queued
job in this process (the fake executor of the runner tests: no torch, fixed figures), and open the
method page again. Its "Measured here" table must show the run. This is the path that once stored
magnitude-pruning runs as method "magnitude" (no method's page showed them) and dynamic-int8 runs as
"cpu-inference" (the wrong page showed them).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from jobs import queue
from jobs.worker import run_one
from knowledge.loader import load_methods
from tests.app.conftest import open_page
from tests.jobs.checkpoints import tiny_checkpoint

FAKE = "tests.jobs.fake_executors"
WITH_COMPRESSOR = sorted((m.id, m.compressor) for m in load_methods() if m.compressor)
TINY_NAME = "tiny-llama (113,256)"  # the name the Compress page gives the tiny checkpoint's runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def _run_it_query(at) -> dict[str, str]:
    links = [el for el in at.get("page_link") if el.proto.page == "compress"]
    assert len(links) == 1, "the method page should link once to the Compress page"
    return dict(parse_qsl(links[0].proto.query_string))


def _measured_rows(at) -> list[dict]:
    table = next((df.value for df in at.dataframe if "run" in df.value.columns), None)
    return [] if table is None else table.to_dict("records")


def test_every_method_with_a_compressor_is_covered():
    assert len(WITH_COMPRESSOR) >= 2 and {"magnitude-pruning", "dynamic-int8"} <= {
        m for m, _ in WITH_COMPRESSOR
    }


@pytest.mark.parametrize(("method", "compressor"), WITH_COMPRESSOR, ids=[m for m, _ in WITH_COMPRESSOR])
def test_a_run_started_from_the_method_page_shows_on_that_page(home, tiny, method, compressor):
    query = _run_it_query(open_page("method", {"id": method}))

    form = open_page("compress", {**query, "source": "path", "path": str(tiny)})
    # the only warnings allowed are the export check's: the recipe's g=128 does not divide the tiny
    # model's widths (72, 136), which the page says before the run (jobs/export_check.py)
    others = [w.value for w in form.warning if "compressed-tensors" not in w.value]
    assert not others, others
    assert form.selectbox(key="cmp_method").value == compressor
    form.button(key="cmp_run").click().run()
    assert not form.exception and not form.error, [e.value for e in form.error]
    (queued,) = queue.list_runs()
    assert (queued.method, queued.compressor) == (method, compressor)

    claimed = queue.claim_next_run("test-host:1:sync")
    assert claimed is not None and claimed.id == queued.id
    assert run_one(int(queued.id), executor=f"{FAKE}:quick") == 0  # in this process, synchronously
    assert queue.get_run(int(queued.id)).status == "succeeded"

    rows = _measured_rows(open_page("method", {"id": method}))
    mine = [r for r in rows if r["run"] == f"#{queued.id}"]
    assert mine, f"run #{queued.id} ({compressor}) is not on {method}'s page; stored as {queued.method!r}"
    assert {r["model"] for r in mine} == {TINY_NAME}
    ppl = next(r for r in mine if r["metric"] == "perplexity")
    assert (ppl["value"], ppl["baseline"]) == (10.5, 10.0)  # the fake executor's figures
    assert compressor in ppl["setting"]
