"""The Recommend page: the questionnaire, the explained result, the URL that reopens it."""

from __future__ import annotations

import pytest

from engine.constraints import Constraints
from engine.recommend import recommend
from tests.app.conftest import figures, marker_ids_in, open_page, text_of


def _cards(at) -> list[str]:
    """Titles of the ranked method cards, in order ('1. GPTQ', ...)."""
    return [m.value[5:] for m in at.markdown if m.value.startswith("#### ")]


def _submit(at):
    at.button[0].click().run()  # the form's only button: "Recommend"
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_defaults_render_the_form_without_a_result():
    at = open_page()
    assert at.title[0].value == "How should I compress my model?"
    assert at.button[0].label == "Recommend"
    assert at.session_state["rec_phases"] == ["pre-training", "post-training", "fine-tuning", "inference"]
    assert at.session_state["rec_size"] == "7B"
    assert "press **Recommend**" in text_of(at)
    assert not _cards(at)


def test_every_field_has_a_help_text():
    at = open_page()
    widgets = [*at.selectbox, *at.number_input, *at.toggle, *at.segmented_control, *at.get("button_group")]
    assert len(widgets) >= 10
    for w in widgets:
        help_text = getattr(w, "help", None) or getattr(w.proto, "help", "")
        assert help_text, f"{getattr(w, 'label', w)} has no help text"


def test_paper_scenario_frozen_model_on_cpu_ranks_the_papers_cpu_inference_first(catalog):
    """Claim 5 (the model cannot be modified: prefer dynamic methods) on a CPU: the paper's own CPU
    inference method (Shen et al.) comes first, and every ranked method is dynamic."""
    at = open_page()
    at.session_state["rec_phases"] = ["inference"]
    at.session_state["rec_keep"] = True
    at.session_state["rec_hardware"] = "cpu"
    _submit(at)
    cards = _cards(at)
    assert cards[0] == f"1. {catalog.methods['cpu-inference'].name}"
    expected = recommend(
        Constraints(phases=("inference",), keep_original=True, hardware="cpu"),
        catalog.methods,
        catalog.evidence,
    )
    assert cards == [f"{i}. {r.method.name}" for i, r in enumerate(expected.ranked[: len(cards)], 1)]
    assert all(r.method.impact.value == "dynamic" for r in expected.ranked)
    assert at.query_params["keep_original"] == "true" and at.query_params["phases"] == "inference"
    (excluded,) = [e for e in at.expander if e.label.startswith("Excluded methods")]
    listed = excluded.markdown[0].value
    gptq = expected.get("gptq")
    assert f"**{catalog.methods['gptq'].name}**: {gptq.reasons[0].text}" in listed


def test_fine_tuning_resources_and_predictability_put_a_static_method_first(catalog):
    """Claim 5, second half: with training resources and predictability first, static methods lead."""
    at = open_page()
    at.session_state["rec_priority"] = "predictability"
    at.session_state["rec_training"] = "high"
    _submit(at)
    first = _cards(at)[0].split(". ", 1)[1]
    method = next(m for m in catalog.methods.values() if m.name == first)
    assert method.impact.value == "static"


def test_shared_url_restores_the_form_and_shows_the_result():
    query = {
        "phases": "post-training,inference",
        "keep_original": "false",
        "priority": "adaptivity",
        "hardware": "apple-silicon",
        "model_params": "13000000000",
        "memory_gb": "8",
        "max_quality_drop": "3",
        "calibration_data": "false",
        "training_budget": "low",
        "workload": "long-context",
        "serving_engine": "llama.cpp",
    }
    at = open_page(query=query)
    s = at.session_state
    assert s["rec_phases"] == ["post-training", "inference"]
    assert s["rec_priority"] == "adaptivity" and s["rec_hardware"] == "apple-silicon"
    assert s["rec_size"] == "13B" and s["rec_memory"] == 8 and s["rec_drop"] == 3
    assert s["rec_calib"] is False and s["rec_training"] == "low"
    assert s["rec_workload"] == "long-context" and s["rec_engine"] == "llama.cpp"
    assert at.header[0].value == "Recommendation" and _cards(at)
    # Submitting the restored form unchanged writes the same constraints back to the URL.
    _submit(at)
    assert Constraints.from_query(dict(at.query_params)) == Constraints.from_query(query)


def test_bad_url_value_is_reported_not_raised():
    at = open_page(query={"hardware": "tpu"})
    (err,) = at.error
    assert "hardware" in err.value and "nvidia-gpu" in err.value


def test_free_model_size_is_accepted():
    """A size outside the presets (typed in the browser, here from a link) round-trips through the form."""
    at = open_page(query={"model_params": "1.5e9"})
    assert at.session_state["rec_size"] == "1.5B"
    assert "1.5B" in at.selectbox(key="rec_size").options
    _submit(at)
    assert at.query_params["model_params"] == "1500000000"
    assert "1.5B" in text_of(at)


@pytest.mark.parametrize("button_index", [0])
def test_open_method_page_from_a_card(catalog, button_index):
    at = open_page()
    _submit(at)
    first = _cards(at)[0].split(". ", 1)[1]
    opener = [b for b in at.button if b.label == "Open method page"][button_index]
    opener.click().run()
    assert not at.exception
    assert at.title[0].value == first


def test_map_highlights_the_recommendation_and_filters_to_what_fits():
    at = open_page()
    at.session_state["rec_phases"] = ["inference"]
    at.session_state["rec_keep"] = True
    _submit(at)
    rec = at.session_state["sw_recommendation"]
    at.switch_page("views/map.py")
    at.run()
    assert not at.toggle(key="map_fits").disabled
    at.toggle(key="map_fits").set_value(True).run()
    (spec,) = figures(at)
    assert sorted(marker_ids_in(spec)) == sorted(r.id for r in rec.ranked)


def test_result_shows_pipelines_and_tradeoff_charts():
    at = open_page()
    _submit(at)
    specs = figures(at)
    metas = [{t.get("meta") for t in s["data"]} for s in specs]
    assert {"pipeline-step"} in metas or any("pipeline-step" in m for m in metas)
    assert sum("candidate" in m for m in metas) == 2
