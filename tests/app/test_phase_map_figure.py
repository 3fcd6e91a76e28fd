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
    (xs, ys), = cell_positions(1, "inference", "static")
    (xd, yd), = cell_positions(1, "inference", "dynamic")
    assert ys > 1 > yd
    assert xs == xd


def test_tall_layout_runs_phases_top_to_bottom_static_left():
    (xp, yp), = cell_positions(1, "pre-training", "static", orientation="tall")
    (xi, yi), = cell_positions(1, "inference", "dynamic", orientation="tall")
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
    assert {t.name for t in fig.data if t.meta == "methods"} == {"quantization", "token-pruning", "dynamic-network"}
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
    fig = phase_impact_map(methods, gaps=[GapCell("pre-training", "dynamic", ("Mixture of experts",)),
                                          GapCell("post-training", "dynamic", ())])
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
