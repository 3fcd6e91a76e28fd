"""Fixtures for the app tests: small hand-built methods for the pure figure builders.

The page tests use the real knowledge base; the figure tests build methods here so that a test can
put, say, fourteen methods into one cell and check that none overlaps another.
"""

from __future__ import annotations

import pytest

from knowledge.schema import Method


def make_method(
    id: str,
    phase: str = "post-training",
    impact: str = "static",
    family: str = "quantization",
    in_paper: bool = False,
    **extra,
) -> Method:
    """A valid Method with only the fields a figure reads set to the caller's values."""
    data = dict(
        id=id,
        name=id.replace("-", " ").title(),
        family=family,
        phase=phase,
        impact=impact,
        grades=dict(
            size_reduction="high",
            quality_drop="minimal",
            hardware_dependence="medium",
            backward_compatibility="none" if impact == "static" else "full",
        ),
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


# --- AppTest helpers --------------------------------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "app" / "main.py"


def open_page(page: str | None = None, query: dict | None = None):
    """Run the app on ``page`` (a file name in app/pages without .py; None = the default page) with
    ``query`` as the URL's query parameters; fails the test if the script raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    if page:
        at.switch_page(f"views/{page}.py")
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at) -> list[dict]:
    """The plotly figures on the page, as the JSON the browser receives."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def marker_ids_in(spec: dict) -> list[str]:
    """Method ids drawn as markers in a map figure (traces tagged meta='methods')."""
    return [row[0] for t in spec["data"] if t.get("meta") == "methods" for row in t.get("customdata", [])]


def text_of(at) -> str:
    """All markdown, captions, titles and headers of the page, joined: what a reader sees as prose."""
    parts = [
        e.value
        for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="session")
def catalog():
    from knowledge.catalog import load_catalog

    return load_catalog()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh Shrinkwise home (and database) for tests that store runs or jobs.

    The job worker is not started by the pages here (SHRINKWISE_JOBS_AUTOSTART=0): tests that need one
    run it themselves, so no stray process outlives a test.
    """
    from knowledge import db

    monkeypatch.setenv("SHRINKWISE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHRINKWISE_DATABASE_URL", raising=False)
    monkeypatch.setenv("SHRINKWISE_JOBS_AUTOSTART", "0")
    db.dispose_engines()
    yield tmp_path / "home"
    db.dispose_engines()
