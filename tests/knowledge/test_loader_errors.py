"""A broken data file must fail with one precise line: file, entry (position and id), field, reason."""

from __future__ import annotations

import pytest

from knowledge.loader import DataFileError, load_all, parse_file, resolve_format, validate_file
from knowledge.schema import FormatInfo


def _problems(excinfo: pytest.ExceptionInfo[DataFileError]) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


def test_small_valid_data_loads_in_file_order(small_data):
    data = load_all(small_data.root)
    assert [m.id for m in data.methods] == ["alpha", "beta", "gamma"]
    assert len(data.evidence) == 2
    assert len(data.hardware) == 5 and len(data.engines) == 11


def test_wrong_enum_names_file_entry_field_and_allowed_values(data_dir, method_entry):
    bad = method_entry("gptq")
    bad["grades"]["quality_drop"] = "tiny"
    path = data_dir.methods("x.yaml", method_entry("one"), method_entry("two"), bad)
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    (msg,) = _problems(exc)
    assert msg.startswith(
        f"{path}: entry #3 (id 'gptq'): grades.quality_drop: "
        "'tiny' is not one of minimal, low, moderate, high"
    )
    p = exc.value.problems[0]
    assert (p.entry, p.entry_id, p.field) == (3, "gptq", "grades.quality_drop")
    # the line is the one of the key in the file
    line = path.read_text().splitlines()[p.line - 1]
    assert line.strip() == "quality_drop: tiny"


def test_unknown_key_suggests_the_right_one_and_lists_allowed(data_dir, method_entry):
    bad = method_entry("awq")
    bad["grades"]["qualty_drop"] = bad["grades"].pop("quality_drop")
    data_dir.methods("x.yaml", bad)
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    msgs = _problems(exc)
    assert any(
        "entry #1 (id 'awq'): grades.qualty_drop: unknown key 'qualty_drop' (did you mean 'quality_drop'?)"
        " allowed keys: size_reduction, quality_drop, hardware_dependence, backward_compatibility"
        in m.replace(";", "")
        for m in msgs
    ), msgs
    assert any("grades.quality_drop: missing required field 'quality_drop'" in m for m in msgs), msgs


def test_missing_field_is_named(data_dir, method_entry):
    bad = method_entry("hqq")
    del bad["citation"]
    data_dir.methods("x.yaml", bad)
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    assert _problems(exc) == [
        f"{data_dir.root / 'methods/x.yaml'}: entry #1 (id 'hqq'): citation: missing required field 'citation' (line 2)"
    ]


def test_every_bad_entry_is_reported_not_only_the_first(data_dir, method_entry):
    a, b = method_entry("a"), method_entry("b")
    a["phase"] = "training"
    b["impact"] = "sometimes"
    data_dir.methods("x.yaml", a, b)
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    msgs = _problems(exc)
    assert len(msgs) == 2
    assert (
        "entry #1 (id 'a'): phase: 'training' is not one of pre-training, post-training, fine-tuning, inference"
        in msgs[0]
    )
    assert "entry #2 (id 'b'): impact: 'sometimes' is not one of static, dynamic" in msgs[1]


def test_duplicate_id_across_files_names_both_places(data_dir, method_entry):
    data_dir.methods("a.yaml", method_entry("gptq"))
    data_dir.methods("b.yaml", method_entry("other"), method_entry("gptq"))
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    (msg,) = _problems(exc)
    assert "b.yaml: entry #2 (id 'gptq'): id: duplicate method id 'gptq': already defined in" in msg
    assert "a.yaml entry #1" in msg


def test_dangling_composes_with_and_excludes(data_dir, method_entry):
    data_dir.methods(
        "a.yaml", method_entry("gptq"), method_entry("awq", composes_with=["gtpq"], excludes=["nope"])
    )
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    msgs = _problems(exc)
    assert any(
        "entry #2 (id 'awq'): composes_with[0]: unknown method id 'gtpq' (did you mean 'gptq'?)" in m
        for m in msgs
    ), msgs
    assert any("entry #2 (id 'awq'): excludes[0]: unknown method id 'nope'" in m for m in msgs), msgs


def test_evidence_for_unknown_method(data_dir, method_entry, evidence_entry):
    data_dir.methods("a.yaml", method_entry("wanda"))
    data_dir.evidence("e.yaml", evidence_entry("wanda"), evidence_entry("wandaa", setting="other"))
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    (msg,) = _problems(exc)
    assert (
        "e.yaml: entry #2 (method 'wandaa'): method: evidence for unknown method 'wandaa' (did you mean 'wanda'?)"
        in msg
    )


def test_evidence_wrong_metric_and_tag(data_dir, method_entry, evidence_entry):
    data_dir.methods("a.yaml", method_entry("gptq"))
    bad = evidence_entry("gptq", metric="ppl")
    bad["source"]["tag"] = "tertiary"
    data_dir.evidence("e.yaml", bad)
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    msgs = _problems(exc)
    assert any(
        "entry #1 (method 'gptq'): metric: 'ppl' is not one of perplexity, accuracy" in m for m in msgs
    ), msgs
    assert any(
        "entry #1 (method 'gptq'): source.tag: 'tertiary' is not one of primary, secondary, measured" in m
        for m in msgs
    ), msgs


def test_duplicate_evidence_row_is_rejected(data_dir, method_entry, evidence_entry):
    data_dir.methods("a.yaml", method_entry("gptq"))
    data_dir.evidence("e.yaml", evidence_entry("gptq"), evidence_entry("gptq", value=12.0))
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    assert (
        "entry #2 (method 'gptq'): setting: same method, model, setting, metric and dataset as"
        in _problems(exc)[0]
    )


def test_yaml_duplicate_key_is_an_error_with_its_line(data_dir):
    path = data_dir.write("methods/a.yaml", "methods:\n  - id: a\n    name: A\n    name: B\n")
    with pytest.raises(DataFileError) as exc:
        parse_file(path)
    (p,) = exc.value.problems
    assert "key 'name' appears twice in one mapping (first on line 3)" in p.message
    assert p.line == 4


def test_yaml_syntax_error_names_the_line(data_dir):
    path = data_dir.write("methods/a.yaml", "methods:\n  - id: a\n   name: [unclosed\n")
    with pytest.raises(DataFileError) as exc:
        parse_file(path)
    assert "not valid YAML" in str(exc.value)
    assert exc.value.problems[0].line is not None


def test_top_level_shape_errors(data_dir):
    p1 = data_dir.write("methods/a.yaml", "method:\n  - id: a\n")
    with pytest.raises(DataFileError, match=r"unknown top-level key 'method' \(did you mean 'methods'\?\)"):
        parse_file(p1, ("methods",))
    p2 = data_dir.write("methods/b.yaml", "methods:\n  id: a\n")
    with pytest.raises(DataFileError, match=r"'methods' must be a list of entries"):
        parse_file(p2)
    p3 = data_dir.write("methods/c.yaml", "- id: a\n")
    with pytest.raises(DataFileError, match="the file must be a mapping with a top-level key"):
        parse_file(p3)
    p4 = data_dir.write("methods/d.yaml", {"methods": [], "evidence": []})
    with pytest.raises(DataFileError, match="cannot share one file"):
        parse_file(p4)


def test_an_evidence_file_in_the_methods_folder_is_rejected(data_dir, evidence_entry):
    data_dir.write("methods/a.yaml", {"evidence": [evidence_entry("x")]})
    with pytest.raises(DataFileError, match=r"unknown top-level key 'evidence'.*allowed: methods"):
        load_all(data_dir.root)


def test_hardware_file_must_cover_every_target(data_dir, method_entry):
    data_dir.methods("a.yaml", method_entry("a"))
    data_dir.write(
        "hardware.yaml",
        "hardware:\n  - id: cpu\n    name: CPU\n    description: A processor with RAM.\n"
        "    typical_memory_gb: [8, 64]\n",
    )
    with pytest.raises(
        DataFileError, match="hardware targets without an entry: nvidia-gpu, amd-gpu, apple-silicon, mobile"
    ):
        load_all(data_dir.root)


def test_engine_loading_an_unknown_format(data_dir, method_entry):
    import yaml

    data_dir.methods("a.yaml", method_entry("a"))
    doc = yaml.safe_load((data_dir.root / "formats.yaml").read_text())
    doc["engines"][0]["loads"].append("safetensor")
    data_dir.write("formats.yaml", doc)
    with pytest.raises(DataFileError) as exc:
        load_all(data_dir.root)
    assert any(
        "entry #1 (id 'vllm'): loads[" in m and "unknown format 'safetensor' (did you mean 'safetensors'" in m
        for m in _problems(exc)
    )


def test_unknown_output_format_is_a_warning_not_an_error(data_dir, method_entry):
    data_dir.methods(
        "a.yaml",
        method_entry(
            "a",
            formats=[
                {"format": "zip-of-floats", "engines": ["vllm"]},
                {"format": "gguf", "engines": ["vllm", "deepsparse"]},
            ],
        ),
    )
    data = load_all(data_dir.root)
    warnings = [str(w) for w in data.warnings]
    assert any(
        "formats[0].format: output format 'zip-of-floats' matches no format in formats.yaml" in w
        for w in warnings
    ), warnings
    assert any(
        "formats[1].engines[1]: engine 'deepsparse' does not load format 'gguf'" in w for w in warnings
    )


def test_resolve_format_takes_the_longest_prefix_at_a_word_boundary():
    fmts = [
        FormatInfo(id="safetensors", name="s", description="dense checkpoint", matches=["safetensors-fp16"]),
        FormatInfo(id="bitsandbytes", name="b", description="bnb weights here", matches=["safetensors-bnb"]),
    ]
    assert resolve_format("safetensors-fp16 + medusa-heads", fmts).id == "safetensors"
    assert resolve_format("safetensors-bnb-nf4", fmts).id == "bitsandbytes"
    assert resolve_format("Safetensors", fmts).id == "safetensors"
    assert resolve_format("safetensorsx", fmts) is None


def test_validate_file_detects_kind_and_checks_references_against_the_bundle(
    small_data, tmp_path, method_entry, evidence_entry
):
    mine = small_data.write(
        "../user-methods.yaml", {"methods": [method_entry("delta", composes_with=["alpha"])]}
    )
    report = validate_file(mine, small_data.root)
    assert report.counts == {"methods": 1}
    ev = small_data.write("../user-evidence.yaml", {"evidence": [evidence_entry("delta")]})
    with pytest.raises(DataFileError, match="evidence for unknown method 'delta'"):
        validate_file(ev, small_data.root)
    ok = small_data.write("../user-evidence2.yaml", {"evidence": [evidence_entry("beta", setting="3-bit")]})
    assert validate_file(ok, small_data.root).counts == {"evidence": 1}
    dup = small_data.write("../user-dup.yaml", {"methods": [method_entry("alpha")]})
    with pytest.raises(DataFileError, match="duplicate method id 'alpha'"):
        validate_file(dup, small_data.root)


def test_validate_file_on_a_bundled_file_does_not_clash_with_itself(small_data):
    report = validate_file(small_data.root / "methods" / "a.yaml", small_data.root)
    assert report.counts == {"methods": 2}


def test_validate_file_reports_only_its_own_problems(small_data, method_entry):
    bad = method_entry("zeta", composes_with=["nothing-like-it"])
    path = small_data.write("../mine.yaml", {"methods": [bad]})
    with pytest.raises(DataFileError) as exc:
        validate_file(path, small_data.root)
    assert [p.field for p in exc.value.problems] == ["composes_with[0]"]
    assert exc.value.files == [exc.value.problems[0].file]
