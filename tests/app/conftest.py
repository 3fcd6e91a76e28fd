"""Fixtures for the app tests: small hand-built methods for the pure figure builders.

The page tests use the real knowledge base; the figure tests build methods here so that a test can
put, say, fourteen methods into one cell and check that none overlaps another.
"""

from __future__ import annotations

import pytest

from knowledge.schema import Method


def make_method(id: str, phase: str = "post-training", impact: str = "static", family: str = "quantization",
                in_paper: bool = False, **extra) -> Method:
    """A valid Method with only the fields a figure reads set to the caller's values."""
    data = dict(
        id=id,
        name=id.replace("-", " ").title(),
        family=family,
        phase=phase,
        impact=impact,
        grades=dict(size_reduction="high", quality_drop="minimal", hardware_dependence="medium",
                    backward_compatibility="none" if impact == "static" else "full"),
        changes=["weights"] if impact == "static" else ["tokens"],
        requirements=dict(calibration_data=False, gradients=False, training_compute="none"),
        hardware=[dict(target="nvidia-gpu")],
        summary=f"{id} summary for a test.",
        mechanism="A mechanism long enough to pass the schema's minimum length check.",
        tradeoff="A trade-off long enough.",
        citation=dict(authors="A. Author", title="T", venue="V", year=2024, url="https://example.org"),
        in_paper=in_paper,
    )
    data.update(extra)
    return Method.model_validate(data)


@pytest.fixture
def make():
    return make_method
