"""Fixtures for the engine tests: small hand-built methods, and the real knowledge base.

Fixture methods pin the engine's mechanics (a rule fires, a stack forms) independently of the data
files; the paper-claim scenarios run against the real catalog, because that is what users get.
"""

from __future__ import annotations

from typing import Any

import pytest

from knowledge.schema import Evidence, Method

_CITATION = {
    "authors": "Test Author",
    "title": "A test method",
    "venue": "Tests",
    "year": 2024,
    "url": "https://example.org/test",
}


def make_method(mid: str, phase: str, impact: str, **over: Any) -> Method:
    """A valid Method with neutral defaults; keyword arguments override any top-level field."""
    data: dict[str, Any] = {
        "id": mid,
        "name": mid.upper(),
        "family": "quantization" if impact == "static" else "token-pruning",
        "phase": phase,
        "impact": impact,
        "grades": {
            "size_reduction": "high" if impact == "static" else "variable",
            "quality_drop": "minimal",
            "hardware_dependence": "medium",
            "backward_compatibility": "none" if impact == "static" else "full",
        },
        "changes": ["weights"] if impact == "static" else ["tokens"],
        "footprint": {"bits_per_weight": 4.25} if impact == "static" else {},
        "requirements": {"calibration_data": False, "gradients": False, "training_compute": "none"},
        "hardware": [{"target": "nvidia-gpu"}],
        "formats": [],
        "summary": f"{mid}: a test method.",
        "mechanism": "A method built by the test suite to pin one behaviour of the engine.",
        "tradeoff": "None; it exists for tests only.",
        "citation": _CITATION,
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Method.model_validate(data)


def make_evidence(
    method: str, model: str, value: float, baseline: float, metric: str = "perplexity"
) -> Evidence:
    return Evidence.model_validate(
        {
            "method": method,
            "model": model,
            "setting": "test setting",
            "metric": metric,
            "value": value,
            "baseline": baseline,
            "source": {"paper": "Test 2024", "locator": "Table 1", "tag": "primary"},
        }
    )


@pytest.fixture(scope="session")
def catalog():
    """The real knowledge base (data files only, no measured rows, so results do not depend on a database)."""
    from knowledge.catalog import load_catalog

    return load_catalog(include_measured=False)


@pytest.fixture(scope="session")
def methods(catalog):
    return catalog.methods


@pytest.fixture(scope="session")
def evidence(catalog):
    return catalog.evidence
