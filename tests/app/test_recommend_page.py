"""The Recommend page: the questionnaire, the explained result, the URL that reopens it."""

from __future__ import annotations

import pytest

from engine.constraints import Constraints
from engine.recommend import recommend
from tests.app.conftest import figures, marker_ids_in, open_page, text_of


def _cards(at) -> list[str]:
    """Titles of the ranked recipe cards, in order ('1. GPTQ W4A16 g128', ...); the card of the best
    bundled recipe, shown again when the first is not bundled, is titled '#<rank>. ...' and left out."""
    return [
        m.value[5:] for m in at.markdown if m.value.startswith("#### ") and not m.value.startswith("#### #")
    ]


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


def test_paper_scenario_frozen_model_on_cpu_ranks_only_what_keeps_the_original(catalog):
    """Claim 5 (the model cannot be modified: prefer dynamic methods) on a CPU: every ranked recipe keeps
    the original checkpoint (dynamic, load-time or lossless); lossless speculative decoding is the only one
    whose quality is known, so it leads, and the paper's own CPU inference method follows in the top 3.
    The cards are the engine's ranking, in order, with the recipes' names."""
    at = open_page()
    at.session_state["rec_phases"] = ["inference"]
    at.session_state["rec_keep"] = True
    at.session_state["rec_hardware"] = "cpu"
    _submit(at)
    cards = _cards(at)
    expected = recommend(
        Constraints(phases=("inference",), keep_original=True, hardware="cpu"),
        catalog.methods,
        catalog.evidence,
        recipes=catalog.recipes,
    )
    assert cards == [f"{i}. {r.recipe.name}" for i, r in enumerate(expected.ranked[: len(cards)], 1)]
    assert "cpu-inference" in expected.ranked_ids[:3]
    assert all(r.method.impact.value == "dynamic" or r.recipe.keeps_checkpoint for r in expected.ranked)
    assert at.query_params["keep_original"] == "true" and at.query_params["phases"] == "inference"
    (excluded,) = [e for e in at.expander if e.label.startswith("Excluded recipes")]
    listed = excluded.markdown[0].value
    gptq = expected.get("gptq-w4a16-g128")
    assert f"**{gptq.recipe.name}** (`gptq-w4a16-g128`): {gptq.reasons[0].text}" in listed


def test_cards_show_configuration_format_engine_commands_and_run_it(catalog):
    """Issue 10, item 7: every card shows the configuration, format, engine and commands; a bundled
    recipe has a Run-it link that opens the Compress page with its settings."""
    at = open_page(query={"model": "llama-3.1-8b", "device": "h100-sxm", "serving_engine": "vllm"})
    assert not at.exception
    text = text_of(at)
    assert "configuration" in text and "format" in text and "engine" in text
    codes = [c.value for c in at.code]
    assert any("vllm serve" in c for c in codes)
    rec = at.session_state["sw_recommendation"]
    bundled = next(r for r in rec.ranked if r.bundled)
    assert any(f"--method {bundled.recipe.compressor.id}" in c for c in codes)
    links = [el for el in at.get("page_link") if "Run it" in str(el.proto)]
    assert links, "no Run-it link on the cards"


def test_nothing_fits_says_what_would(catalog):
    at = open_page(query={"model": "llama-3.1-70b", "hardware": "nvidia-gpu", "memory_gb": "4"})
    assert not at.exception
    text = text_of(at)
    assert (
        "No recipe passes these constraints" in text
        and "Smallest footprint of a recipe that runs here" in text
    )


def test_fine_tuning_resources_and_predictability_put_a_static_method_first(catalog):
    """Claim 5, second half: with training resources and predictability first, static methods lead."""
    at = open_page()
    at.session_state["rec_priority"] = "predictability"
    at.session_state["rec_training"] = "high"
    _submit(at)
    first = _cards(at)[0].split(". ", 1)[1]
    recipe = next(r for r in catalog.recipes.values() if r.name == first)
    assert catalog.methods[recipe.method].impact.value == "static"


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
    rec = at.session_state["sw_recommendation"]
    opener = [b for b in at.button if b.label == "Open method page"][button_index]
    opener.click().run()
    assert not at.exception
    assert at.title[0].value == rec.ranked[0].method.name  # a recipe's card opens its method's page


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
    assert sorted(marker_ids_in(spec)) == sorted(rec.ranked_method_ids)


def test_result_shows_pipelines_and_tradeoff_charts():
    at = open_page()
    _submit(at)
    specs = figures(at)
    metas = [{t.get("meta") for t in s["data"]} for s in specs]
    assert {"pipeline-step"} in metas or any("pipeline-step" in m for m in metas)
    assert sum("candidate" in m for m in metas) == 2
