"""The Sweep page (issue 14): set up from a recommendation, start, follow, and compare; and the
"measured on your model" line the Recommend page shows for a swept recipe."""

from __future__ import annotations

import pytest

from app.figures.sweep import MEASURED_TRACE, PREDICTED_TRACE, SELECTED_TRACE
from jobs import queue, sweeps
from jobs.backend import LocalBackend
from tests.app.conftest import figures, open_page, text_of

SMOL = {"model": "smollm2-135m", "hardware": "cpu", "max_quality_drop": "5"}


def _finish(job_id: int, ppl: float, size: float, bits: float) -> None:
    before = {
        "perplexity": 20.0,
        "size_bytes": 540e6,
        "model_bits_per_weight": 32.0,
        "decode_tokens_per_s": 30.0,
    }
    after = {
        "perplexity": ppl,
        "size_bytes": size,
        "model_bits_per_weight": bits,
        "decode_tokens_per_s": 35.0,
    }
    queue.finish_run(job_id, before_metrics=before, after_metrics=after, record_evidence=False)


def _finished_sweep(catalog) -> tuple[object, list[str]]:
    from engine import Constraints, recommend

    c = Constraints.from_query(SMOL)
    rec = recommend(c, catalog.methods, catalog.evidence, recipes=catalog.recipes)
    items = sweeps.build_recipe_set(rec.ranked_ids, catalog.recipes, top=2, with_neighbours=False)
    predicted = sweeps.predictions(c, catalog, items, rec.ranked_ids)
    sweep = sweeps.create_sweep(
        model_ref="demo",
        model_name="SmolLM2-135M-Instruct",
        items=items,
        predicted=predicted,
        limits=sweeps.limits_of(c),
        owner="local",
        model_key="smollm2-135m",
        origin="recommendation",
        backend=LocalBackend(autostart=False),
    )
    for job, (ppl, size, bits) in zip(
        sweeps.children(sweep), [(20.4, 150e6, 8.9), (20.9, 120e6, 7.1)], strict=True
    ):
        queue.claim_next_run("host:1:t")
        _finish(job.id, ppl, size, bits)
    return sweep, [i.recipe for i in items]


def test_set_up_from_a_recommendation_preselects_its_bundled_recipes_and_neighbours(home, catalog):
    at = open_page("sweep", SMOL)
    chosen = at.multiselect(key="swp_recipes").value
    expected = [
        i.recipe
        for i in sweeps.build_recipe_set(
            __import__("engine")
            .recommend(
                __import__("engine").Constraints.from_query(SMOL),
                catalog.methods,
                catalog.evidence,
                recipes=catalog.recipes,
            )
            .ranked_ids,
            catalog.recipes,
        )
    ]
    assert chosen == expected and len(chosen) >= 4
    assert at.number_input(key="swp_max_drop").value == 5.0
    assert "From your recommendation" in text_of(at)


def test_start_queues_one_child_per_recipe_with_the_shared_text(home):
    at = open_page("sweep", {**SMOL, "recipes": "rtn-w4a16-g128", "eval_windows": "2", "seq_len": "64"})
    at.multiselect(key="swp_recipes").set_value(["rtn-w4a16-g128", "rtn-w8a16", "gptq-w4a16-g128"]).run()
    at.button(key="swp_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ref = at.query_params["sweep"]
    ref = ref[0] if isinstance(ref, list) else ref
    sweep = sweeps.get_sweep(ref)
    jobs = sweeps.children(sweep)
    assert [j.recipe for j in jobs] == ["rtn-w4a16-g128", "rtn-w8a16", "gptq-w4a16-g128"]
    assert {j.calibration["eval_windows"] for j in jobs} == {2} and {
        j.calibration["eval_seq_len"] for j in jobs
    } == {64}
    assert set(sweep.predicted) == {"rtn-w4a16-g128", "rtn-w8a16", "gptq-w4a16-g128"}
    assert sweep.limits["max_quality_drop"] == 5.0 and sweep.model_key == "smollm2-135m"
    assert "recipes finished" in text_of(at)


def test_a_finished_sweep_shows_the_front_the_predictions_the_choice_and_the_table(home, catalog):
    sweep, ids = _finished_sweep(catalog)
    at = open_page("sweep", {"sweep": sweep.public_id})
    text = text_of(at)
    assert "2 of 2 recipes finished" in text
    verdict = " ".join(str(e.value) for e in at.success)
    assert "Your limits" in verdict and "the smallest measured recipe within the limits" in verdict
    spec = figures(at)[0]
    metas = [t.get("meta") for t in spec["data"]]
    assert metas.count(MEASURED_TRACE) == 2 and metas.count(PREDICTED_TRACE) == 2
    assert SELECTED_TRACE in metas
    chosen = next(t for t in spec["data"] if t.get("meta") == SELECTED_TRACE)
    assert chosen["customdata"][0][0] == ids[1]  # +4.5% within 5%, and the smaller of the two
    predicted = [t for t in spec["data"] if t.get("meta") == PREDICTED_TRACE]
    assert all(t["error_y"]["array"] for t in predicted)  # the predicted range as error bars
    table = at.dataframe[0].value
    assert list(table["measured drop %"]) == ["+2.00", "+4.50"]
    assert "predicted range %" in table.columns


def test_someone_elses_sweep_is_not_shown(home, catalog, monkeypatch):
    sweep, _ = _finished_sweep(catalog)
    with __import__("knowledge.db", fromlist=["session"]).session() as s:
        row = s.get(type(sweep), sweep.id)
        row.owner = "other@example.org"
        s.add(row)
    from jobs.access import Viewer

    monkeypatch.setattr("app.auth.viewer", lambda: Viewer.signed_in("me@example.org"))
    at = open_page("sweep", {"sweep": sweep.public_id})
    assert "There is no such sweep that you can open" in text_of(at)
    assert not figures(at)


def test_the_recommendation_shows_what_was_measured_on_your_model(home, catalog):
    sweep, ids = _finished_sweep(catalog)
    at = open_page(None, SMOL)
    text = text_of(at)
    assert "measured on your model" in text
    assert "+2.00%" in text  # the first swept recipe's measured drop on its card
    assert "2 recipe(s) swept on this model" in text and "rank 1" in text  # the summary, every swept recipe
    links = [el for el in at.get("page_link") if "Sweep these on my model" in str(el.proto.label)]
    assert links, "the recommendation offers a sweep"


@pytest.mark.parametrize("source", ["demo"])
def test_the_compress_page_links_to_a_sweep_of_its_model(home, source):
    at = open_page("compress", {"source": source})
    labels = [str(el.proto.label) for el in at.get("page_link")]
    assert any("sweep several recipes" in label for label in labels)


def test_a_childs_run_result_links_back_to_its_sweep(home, catalog):
    sweep, _ = _finished_sweep(catalog)
    child = sweeps.children(sweep)[0]
    at = open_page("run_result", {"run": child.public_id})
    links = [el for el in at.get("page_link") if "Part of a sweep of 2 recipes" in str(el.proto.label)]
    assert links and sweep.public_id in str(links[0].proto.query_string)
