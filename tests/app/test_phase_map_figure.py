"""The map figure: one marker per method, inside its own cell, never on top of another."""

from __future__ import annotations

import itertools

import pytest

from app.figures.palette import PHASES
from app.figures.phase_map import GapCell, cell_positions, marker_ids, phase_impact_map, selected_ids
from tests.app.conftest import make_method


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 20, 40])
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("impact", ["static", "dynamic"])
@pytest.mark.parametrize("orientation", ["wide", "tall"])
def test_markers_stay_inside_their_cell_and_apart(n, phase, impact, orientation):
    pts = cell_positions(n, phase, impact, orientation=orientation)
    assert len(pts) == n
    if orientation == "wide":
        col, row = PHASES.index(phase), (1 if impact == "static" else 0)
    else:
        col, row = (0 if impact == "static" else 1), 3 - PHASES.index(phase)
    for x, y in pts:
        assert col < x < col + 1 and row < y < row + 1
    # No two markers overlap on screen: on a typical plot area (wide: 1100 x 560 px at 1280 px;
    # tall: 330 x 1400 px on a phone) any two centres are at least one marker (13 px) apart in x or y.
    # The largest cell of the knowledge base holds about 20 methods; beyond that only distinctness.
    px_x, px_y = (1100 / 4, 560 / 2) if orientation == "wide" else (330 / 2, 1400 / 4)
    for a, b in itertools.combinations(pts, 2):
        apart = max(abs(a[0] - b[0]) * px_x, abs(a[1] - b[1]) * px_y)
        assert apart >= (13 if n <= 20 else 1), (a, b, apart)


def test_static_is_drawn_above_dynamic():
    ((xs, ys),) = cell_positions(1, "inference", "static")
    ((xd, yd),) = cell_positions(1, "inference", "dynamic")
    assert ys > 1 > yd
    assert xs == xd


def test_tall_layout_runs_phases_top_to_bottom_static_left():
    ((xp, yp),) = cell_positions(1, "pre-training", "static", orientation="tall")
    ((xi, yi),) = cell_positions(1, "inference", "dynamic", orientation="tall")
    assert yp > 3 > 1 > yi
    assert xp < 1 < xi


@pytest.mark.parametrize("orientation", ["wide", "tall"])
def test_figure_holds_one_marker_per_method_coloured_by_family(orientation):
    methods = [make_method(f"q{i}") for i in range(14)] + [
        make_method("tok", phase="inference", impact="dynamic", family="token-pruning", in_paper=True),
        make_method("moe", phase="pre-training", impact="dynamic", family="dynamic-network"),
    ]
    fig = phase_impact_map(methods, orientation=orientation)
    ids = marker_ids(fig)
    assert sorted(ids) == sorted(m.id for m in methods)
    assert {t.name for t in fig.data if t.meta == "methods"} == {
        "quantization",
        "token-pruning",
        "dynamic-network",
    }
    xy = [(x, y) for t in fig.data if t.meta == "methods" for x, y in zip(t.x, t.y)]
    assert len(set(xy)) == len(methods), "two markers share a position"


def test_paper_methods_are_diamonds_and_excluded_are_faded():
    methods = [make_method("a", in_paper=True), make_method("b"), make_method("c")]
    fig = phase_impact_map(methods, highlighted=["b"], faded=["c"])
    (trace,) = [t for t in fig.data if t.meta == "methods"]
    by_id = {cd[0]: i for i, cd in enumerate(trace.customdata)}
    assert trace.marker.symbol[by_id["a"]] == "diamond"
    assert trace.marker.symbol[by_id["b"]] == "circle"
    assert trace.marker.opacity[by_id["c"]] < 0.5 < trace.marker.opacity[by_id["b"]]
    assert trace.marker.line.width[by_id["b"]] > trace.marker.line.width[by_id["a"]]


def test_gap_cells_are_marked_with_their_fillers():
    methods = [make_method("moe", phase="pre-training", impact="dynamic", family="dynamic-network")]
    fig = phase_impact_map(
        methods,
        gaps=[
            GapCell("pre-training", "dynamic", ("Mixture of experts",)),
            GapCell("post-training", "dynamic", ()),
        ],
    )
    notes = [a for a in fig.layout.annotations if "gap" in a.text]
    assert len(notes) == 2
    assert any("Mixture of experts" in a.hovertext for a in notes)
    assert any("No method fills it" in a.hovertext for a in notes)


def test_selection_resolves_to_method_ids():
    methods = [make_method("a"), make_method("b", family="pruning")]
    fig = phase_impact_map(methods)
    assert selected_ids(fig, {"points": [{"customdata": ["b", "x"]}]}) == ["b"]
    curve = next(i for i, t in enumerate(fig.data) if t.meta == "methods")
    assert selected_ids(fig, {"selection": {"points": [{"curve_number": curve, "point_index": 0}]}}) == [
        fig.data[curve].customdata[0][0]
    ]
    assert selected_ids(fig, None) == []


def test_short_labels_prefer_the_familiar_short_form():
    from app.figures.phase_map import short_label

    assert short_label("GPTQ") == "GPTQ"
    assert short_label("Round-to-nearest weight quantization (RTN)") == "RTN"
    assert short_label("Sparse pre-training (Sparse Llama)") == "Sparse Llama"
    assert short_label("FP8 online quantisation", ["e4m3"]) == "FP8 online q…"
    assert all(len(short_label(n)) <= 13 for n in ["Selective-intervention knowledge distillation", "x" * 40])


def _row(
    method: str,
    value: float,
    baseline: float,
    *,
    measured: bool,
    run: int | None = None,
    metric: str = "perplexity",
    setting: str = "gptq (bits=4, group_size=128)",
):
    from knowledge.schema import Evidence

    paper = (
        f"Shrinkwise run #{run}"
        if run is not None
        else ("Shrinkwise measurement" if measured else "Paper 2024")
    )
    return Evidence.model_validate(
        {
            "method": method,
            "model": "SmolLM2-135M-Instruct" if measured else "LLaMA-7B",
            "setting": setting,
            "metric": metric,
            "value": value,
            "baseline": baseline,
            "source": {
                "paper": paper,
                "locator": "measured here" if measured else "Table 1",
                "tag": "measured" if measured else "primary",
            },
        }
    )


def _hovers(fig) -> dict[str, str]:
    return {cd[0]: cd[1] for t in fig.data if t.meta == "methods" for cd in t.customdata}


def test_hover_of_a_measured_method_shows_the_measured_figure_and_its_model():
    methods = [make_method("gptq"), make_method("awq")]
    rows = [
        _row("gptq", 11.93, 10.05, measured=True, run=12),  # +18.7%
        _row(
            "gptq", 1e9, 2e9, measured=True, run=12, metric="size-mb", setting="gptq (bits=4); size on disk"
        ),
        _row("gptq", 5.90, 5.68, measured=False),  # a paper's row: not a measured line
        _row("awq", 6.0, 5.68, measured=False),
    ]
    fig = phase_impact_map(methods, evidence=rows)
    hovers = _hovers(fig)
    assert (
        "Measured here</b>: perplexity +18.7% (SmolLM2-135M-Instruct, gptq (bits=4, group_size=128), run #12)"
        in hovers["gptq"].replace("<br>", " ")
    )
    assert "2 measured rows" in hovers["gptq"]
    assert "Measured here" not in hovers["awq"]
    rings = [t for t in fig.data if t.name == "measured here"]
    assert len(rings) == 1 and len(rings[0].x) == 1 and rings[0].showlegend is not False
    # the ring sits on the gptq marker and is not counted as a method marker
    gptq_xy = next(
        (x, y)
        for t in fig.data
        if t.meta == "methods"
        for x, y, cd in zip(t.x, t.y, t.customdata)
        if cd[0] == "gptq"
    )
    assert (rings[0].x[0], rings[0].y[0]) == gptq_xy
    assert sorted(marker_ids(fig)) == ["awq", "gptq"]


def test_hover_shows_the_most_recent_run():
    from app.figures.phase_map import measured_line

    rows = [
        _row("gptq", 11.0, 10.0, measured=True, run=3),
        _row("gptq", 13.0, 10.0, measured=True, run=9),
        _row("gptq", 10.5, 10.0, measured=True),
    ]  # a bundled row without a run: oldest
    line = measured_line(rows)
    assert "+30.0%" in line and "run #9" in line and "3 measured rows" in line


def test_without_measured_evidence_there_is_no_ring_and_no_line():
    methods = [make_method("gptq")]
    fig = phase_impact_map(methods, evidence=[_row("gptq", 5.9, 5.68, measured=False)])
    assert not [t for t in fig.data if t.name == "measured here"]
    assert "Measured here" not in _hovers(fig)["gptq"]
