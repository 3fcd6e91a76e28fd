"""The Map page: Figure 1 with one marker per method of the current filter, and the paper's gaps."""

from __future__ import annotations

from tests.app.conftest import figures, marker_ids_in, open_page, text_of


def _map_ids(at) -> list[str]:
    (spec,) = figures(at)
    return marker_ids_in(spec)


def test_whole_knowledge_base_shows_one_marker_per_method(catalog):
    at = open_page("map")
    ids = _map_ids(at)
    assert len(ids) == len(set(ids)) == len(catalog.methods)
    assert set(ids) == set(catalog.methods)


def test_paper_only_filter_shows_exactly_the_eight(catalog):
    at = open_page("map")
    at.segmented_control(key="map_scope").set_value("The paper's eight").run()
    ids = _map_ids(at)
    assert len(ids) == 8
    assert set(ids) == {
        "sparse-pretraining",
        "spqr",
        "gptq",
        "llm-pruner",
        "selective-distillation",
        "cpu-inference",
        "aim",
        "lazyllm",
    }


def test_family_and_hardware_filters_keep_only_matching_methods(catalog):
    at = open_page("map")
    at.multiselect(key="map_family").set_value(["quantization"]).run()
    ids = _map_ids(at)
    expected = {m.id for m in catalog.methods.values() if str(m.family) == "quantization"}
    assert set(ids) == expected and len(ids) == len(expected)
    at.multiselect(key="map_hardware").set_value(["cpu"]).run()
    ids = _map_ids(at)
    assert set(ids) == {
        m for m in expected if any(str(h.target) == "cpu" for h in catalog.methods[m].hardware)
    }


def test_paper_gaps_are_marked_and_name_their_fillers(catalog):
    at = open_page("map")
    (spec,) = figures(at)
    notes = [a for a in spec["layout"].get("annotations", []) if "gap" in a.get("text", "")]
    assert notes, "the paper's empty cells must be marked on the map"
    prose = text_of(at)
    # The paper's gap (claim 7): no dynamic method at pre-training; the knowledge base fills it.
    assert "Pre-training · dynamic" in prose
    filler = next(
        m for m in catalog.methods.values() if m.phase.value == "pre-training" and m.impact.value == "dynamic"
    )
    assert filler.name in prose


def test_fits_filter_is_disabled_without_a_recommendation():
    at = open_page("map")
    assert at.toggle(key="map_fits").disabled


def test_fallback_select_box_opens_the_method_page(catalog):
    at = open_page("map")
    at.selectbox(key="map_pick").set_value("lazyllm").run()
    assert not at.exception
    assert at.title[0].value == catalog.methods["lazyllm"].name


def test_tall_layout_keeps_one_marker_per_method(catalog):
    at = open_page("map")
    at.segmented_control(key="map_layout").set_value("Tall").run()
    (spec,) = figures(at)
    assert sorted(marker_ids_in(spec)) == sorted(catalog.methods)
    assert spec["layout"]["yaxis"]["range"] == [0, 4], "tall: phases are rows"
