"""`shrinkwise kb`: JSON shapes, tables, exit codes and messages for bad input."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from app.cli import kb
from knowledge import db


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """shrinkwise"""

    kb.register(app)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def test_list_json_shape(cli):
    r = cli("kb", "list", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["count"] == len(doc["methods"]) >= 58
    first = doc["methods"][0]
    assert set(first) == {
        "id",
        "name",
        "family",
        "phase",
        "impact",
        "in_paper",
        "fills_gap",
        "grades",
        "compressor",
        "summary",
        "evidence_rows",
    }
    assert set(first["grades"]) == {
        "size_reduction",
        "quality_drop",
        "hardware_dependence",
        "backward_compatibility",
    }


def test_list_filters(cli):
    doc = json.loads(cli("kb", "list", "--paper-only", "--json").stdout)
    assert doc["count"] == 8 and all(m["in_paper"] for m in doc["methods"])
    doc = json.loads(cli("kb", "list", "--phase", "inference", "--impact", "dynamic", "--json").stdout)
    assert doc["count"] >= 2 and {(m["phase"], m["impact"]) for m in doc["methods"]} == {
        ("inference", "dynamic")
    }
    doc = json.loads(cli("kb", "list", "--family", "quantization", "--json").stdout)
    assert {m["family"] for m in doc["methods"]} == {"quantization"}


@pytest.mark.parametrize(
    "option,value,allowed",
    [
        ("--phase", "training", "pre-training, post-training, fine-tuning, inference"),
        ("--impact", "sometimes", "static, dynamic"),
        ("--family", "quantisation", "quantization, pruning"),
    ],
)
def test_bad_filter_values_list_the_allowed_ones(cli, option, value, allowed):
    r = cli("kb", "list", option, value)
    assert r.exit_code == 2
    text = " ".join(r.output.replace("│", " ").split())  # unwrap typer's error box
    assert f"Invalid value for {option}: '{value}' is not one of: {allowed}" in text


def test_list_table_marks_the_paper_set(cli):
    r = cli("kb", "list", "--paper-only")
    assert r.exit_code == 0
    assert "gptq *" in r.stdout and "8 of" in r.stdout


def test_show_json_has_method_and_evidence(cli):
    r = cli("kb", "show", "gptq", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["method"]["id"] == "gptq" and doc["method"]["grades"]["quality_drop"] == "minimal"
    assert len(doc["evidence"]) >= 10
    row = next(e for e in doc["evidence"] if e["model"] == "OPT-125M" and e["setting"].startswith("4-bit"))
    assert row["value"] == 31.12 and row["relative_change"] == pytest.approx(31.12 / 27.65 - 1)
    assert row["source"]["tag"] == "secondary" and row["measured_here"] is False


def test_show_table(cli):
    r = cli("kb", "show", "spqr")
    assert r.exit_code == 0
    assert "SpQR" in r.stdout and "Evidence" in r.stdout and "composes with" in r.stdout


def test_show_unknown_id_exits_2_with_close_ids(cli):
    r = cli("kb", "show", "gtpq")
    assert r.exit_code == 2
    assert "Unknown method id 'gtpq'" in r.stderr and "gptq" in r.stderr


def test_gaps_json(cli):
    r = cli("kb", "gaps", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    cells = {(c["phase"], c["impact"]): c for c in doc["cells"]}
    assert len(cells) == 8
    assert cells[("post-training", "dynamic")]["is_paper_gap"] is True
    assert "teal" in cells[("post-training", "dynamic")]["fillers"]
    assert cells[("post-training", "static")]["paper_methods"] == ["gptq", "spqr"] or set(
        cells[("post-training", "static")]["paper_methods"]
    ) == {"gptq", "spqr"}


def test_validate_all_bundled_files(cli):
    r = cli("kb", "validate")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("OK: ") and "evidence rows" in r.stdout


def test_validate_a_broken_user_file_exits_1_with_precise_messages(cli, tmp_path, method_entry):
    import yaml

    bad = method_entry("my-method", composes_with=["gptq", "gptqq"])
    bad["grades"]["quality_drop"] = "tiny"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"methods": [bad]}))
    r = cli("kb", "validate", str(path))
    assert r.exit_code == 1
    err = " ".join(r.stderr.split())
    assert (
        "entry #1 (id 'my-method'): grades.quality_drop: 'tiny' is not one of minimal, low, moderate, high"
        in err
    )
    # schema errors come first; once fixed, references are checked against the bundled methods
    bad["grades"]["quality_drop"] = "low"
    path.write_text(yaml.safe_dump({"methods": [bad]}))
    r = cli("kb", "validate", str(path))
    assert r.exit_code == 1
    assert "composes_with[1]: unknown method id 'gptqq' (did you mean 'gptq'" in " ".join(r.stderr.split())


def test_validate_a_good_user_evidence_file(cli, tmp_path, evidence_entry):
    import yaml

    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump({"evidence": [evidence_entry("gptq", model="MyModel-1B")]}))
    r = cli("kb", "validate", str(path))
    assert r.exit_code == 0, r.output
    assert "OK (1 evidence)" in r.stdout


def test_validate_missing_file(cli, tmp_path):
    r = cli("kb", "validate", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 1 and "file not found" in r.stderr


def test_load_prints_counts_and_is_idempotent(cli, isolated_home):
    r1 = cli("kb", "load")
    assert r1.exit_code == 0, r1.output
    assert str(isolated_home / "shrinkwise.db") in r1.stdout.replace("\n", "")
    r2 = cli("kb", "load")
    assert "0 added, 0 updated, 0 removed" in " ".join(r2.stdout.split())
    assert db.counts()["methods"] >= 58


def test_load_reports_an_unreachable_database(cli, monkeypatch, tmp_path):
    monkeypatch.setenv(db.ENV_URL, "postgresql+psycopg://nobody:pw@127.0.0.1:1/none?connect_timeout=2")
    r = cli("kb", "load")
    assert r.exit_code == 1
    assert "Could not load the knowledge base" in r.stderr and "pw@" not in r.stderr


def test_the_real_entry_point_registers_kb():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "kb", "show", "lazyllm", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["method"]["phase"] == "inference"
