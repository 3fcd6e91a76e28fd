"""The app listens on this machine only unless configured otherwise (issue 15, finding 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def test_config_binds_to_localhost():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"


def test_run_script_does_not_override_the_address():
    script = (ROOT / "scripts" / "run-app.sh").read_text(encoding="utf-8")
    assert "server.address" not in script and "STREAMLIT_SERVER_ADDRESS" not in script
    assert "0.0.0.0" not in script


def test_deploy_doc_says_how_to_change_it():
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "127.0.0.1" in doc and "--server.address" in doc
