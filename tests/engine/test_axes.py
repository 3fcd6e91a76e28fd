"""Trade-off positions (claim 3): the numbers the rules and the app's chart share."""

from __future__ import annotations

import pytest

from engine.axes import phase_position, position_of, positions

from .conftest import make_method


@pytest.mark.parametrize(
    "phase, impact, predictability",
    [
        ("pre-training", "static", 1.0),
        ("post-training", "static", 5 / 6),
        ("fine-tuning", "static", 4 / 6),
        ("inference", "static", 0.5),
        ("pre-training", "dynamic", 0.5),
        ("inference", "dynamic", 0.0),
    ],
)
def test_positions(phase, impact, predictability):
    p = position_of(phase, impact)
    assert p.predictability == pytest.approx(predictability)
    assert p.adaptivity == pytest.approx(1 - predictability)


def test_phase_position_runs_from_pretraining_to_inference():
    assert [phase_position(p) for p in ("pre-training", "post-training", "fine-tuning", "inference")] == [
        0.0,
        pytest.approx(1 / 3),
        pytest.approx(2 / 3),
        1.0,
    ]


def test_positions_of_many_methods_keyed_by_id(methods):
    pos = positions(methods)
    assert set(pos) == set(methods)
    assert pos["sparse-pretraining"].predictability > pos["gptq"].predictability > pos["aim"].predictability
    assert positions([make_method("x", "inference", "dynamic")])["x"].to_dict() == {
        "phase_position": 1.0,
        "adaptivity": 1.0,
        "predictability": 0.0,
    }
