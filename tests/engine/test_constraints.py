"""Constraints: defaults, parsing of friendly values, precise errors, and the URL round trip."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from engine.constraints import FIELDS, Constraints, ConstraintsError

ISSUE_FIELDS = {
    # issue 10 adds the model shape, the device, the context length and the batch size
    "model",
    "device",
    "context_length",
    "batch_size",
    "phases",
    "keep_original",
    "priority",
    "hardware",
    "model_params",
    "memory_gb",
    "max_quality_drop",
    "calibration_data",
    "training_budget",
    "workload",
    "serving_engine",
}


def test_fields_are_exactly_the_issue_fields():
    assert set(FIELDS) == ISSUE_FIELDS


def test_defaults():
    c = Constraints()
    assert [p.value for p in c.phases] == ["pre-training", "post-training", "fine-tuning", "inference"]
    assert (c.keep_original, c.priority.value, c.hardware.value) == (False, "balanced", "nvidia-gpu")
    assert (c.model_params, c.memory_gb, c.max_quality_drop) == (7e9, None, 5.0)
    assert (c.calibration_data, c.training_budget.value, c.workload.value, c.serving_engine) == (
        True,
        "none",
        "chat",
        None,
    )


@pytest.mark.parametrize(
    "raw, expected",
    [("7e9", 7e9), ("7B", 7e9), ("135M", 135e6), ("1.5b", 1.5e9), (8000000000, 8e9), ("70 B", 70e9)],
)
def test_model_params_accepts_friendly_strings(raw, expected):
    assert Constraints.from_dict({"model_params": raw}).model_params == pytest.approx(expected)


def test_phases_from_comma_string_are_put_in_lifecycle_order_and_deduplicated():
    c = Constraints.from_dict({"phases": "inference, post-training,inference"})
    assert [p.value for p in c.phases] == ["post-training", "inference"]


@pytest.mark.parametrize(
    "data, field, bad, allowed",
    [
        ({"priority": "fast"}, "priority", "'fast'", "predictability, balanced, adaptivity"),
        ({"hardware": "tpu"}, "hardware", "'tpu'", "cpu, nvidia-gpu, amd-gpu, apple-silicon, mobile"),
        (
            {"phases": "post-training,infrence"},
            "phases",
            "'infrence'",
            "pre-training, post-training, fine-tuning, inference",
        ),
        ({"phases": ["training"]}, "phases", "'training'", "inference"),
        ({"model_params": "seven"}, "model_params", "'seven'", "7B"),
        ({"model_params": -3}, "model_params", "-3", "positive"),
        ({"memory_gb": 0}, "memory_gb", "0", "positive number of gigabytes"),
        ({"max_quality_drop": 250}, "max_quality_drop", "250", "between 0 and 100"),
        ({"training_budget": "medium"}, "training_budget", "'medium'", "none, low, high"),
        ({"workload": "rag"}, "workload", "'rag'", "chat, long-context, batch, multimodal"),
        (
            {"serving_engine": "sglang"},
            "serving_engine",
            "'sglang'",
            "vllm, llama.cpp, transformers, tensorrt-llm, onnxruntime, openvino",
        ),
        ({"keep_original": "maybe"}, "keep_original", "'maybe'", "true or false"),
    ],
)
def test_bad_value_message_names_field_value_and_allowed_values(data, field, bad, allowed):
    with pytest.raises(ConstraintsError) as info:
        Constraints.from_dict(data)
    msg = str(info.value)
    assert info.value.field == field
    assert msg.startswith(f"{field}: {bad} is not allowed")
    assert allowed in msg


def test_unknown_field_is_rejected_with_a_suggestion_and_the_field_list():
    with pytest.raises(ConstraintsError) as info:
        Constraints.from_dict({"hardwre": "cpu"})
    msg = str(info.value)
    assert "unknown field 'hardwre'" in msg and "did you mean 'hardware'" in msg
    assert "allowed fields: phases, keep_original" in msg


def test_constraints_are_frozen():
    with pytest.raises(ValidationError):
        Constraints().priority = "adaptivity"  # type: ignore[misc]


def test_query_round_trip_is_flat_strings_and_lossless():
    c = Constraints.from_dict(
        {
            "phases": ["post-training", "inference"],
            "keep_original": True,
            "model_params": "1.5B",
            "memory_gb": 3.25,
            "serving_engine": "llama.cpp",
            "max_quality_drop": 2.5,
        }
    )
    q = c.to_query()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in q.items())
    assert q["phases"] == "post-training,inference" and q["keep_original"] == "true"
    assert q["model_params"] == "1500000000" and q["memory_gb"] == "3.25"
    assert Constraints.from_query(q) == c
    assert "serving_engine" not in Constraints().to_query()  # unset optional fields stay out of the URL


def test_from_query_accepts_list_values_and_can_ignore_foreign_keys():
    c = Constraints.from_query(
        {"phases": ["fine-tuning", "inference"], "priority": ["balanced", "adaptivity"], "page": "recommend"},
        strict=False,
    )
    assert [p.value for p in c.phases] == ["fine-tuning", "inference"] and c.priority.value == "adaptivity"
    with pytest.raises(ConstraintsError, match="unknown field 'page'"):
        Constraints.from_query({"page": "recommend"})


def test_from_file_reads_yaml_and_json(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("phases: [inference]\nkeep_original: true\nmodel_params: 135M\n")
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"phases": ["inference"], "keep_original": True, "model_params": 1.35e8}))
    assert Constraints.from_file(y) == Constraints.from_file(j)
    assert Constraints.from_file(y).model_params == 135e6


def test_from_file_error_names_the_file(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("priority: speed\n")
    with pytest.raises(ConstraintsError, match=r"bad.yaml: priority: 'speed' is not allowed"):
        Constraints.from_file(y)
    with pytest.raises(ConstraintsError, match="cannot read constraints file"):
        Constraints.from_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("phases: [inference\n")
    with pytest.raises(ConstraintsError, match="not valid YAML/JSON"):
        Constraints.from_file(broken)


def test_overrides_are_validated():
    c = Constraints().with_overrides({"hardware": "cpu"})
    assert c.hardware.value == "cpu"
    with pytest.raises(ConstraintsError, match="hardware"):
        Constraints().with_overrides({"hardware": "gpu"})


def test_every_example_constraints_file_loads():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[2] / "examples" / "constraints").glob("*.*"))
    assert len(files) >= 5
    for f in files:
        Constraints.from_file(f)


def test_model_and_device_fill_the_size_and_the_hardware_kind():
    c = Constraints.from_dict({"model": "llama-3.1-8b", "device": "m3-max-64gb"})
    assert c.hardware.value == "apple-silicon" and c.device == "m3-max-64gb"
    assert 8.0e9 < c.model_params < 8.1e9  # from the shape, not the 7e9 default
    assert Constraints.from_query(c.to_query()) == c
    bare = Constraints.from_dict({"model_params": "13B"})  # a bare parameter count still works
    assert bare.model is None and bare.model_params == 13e9 and bare.context_length == 4096


def test_device_and_hardware_must_agree_and_bad_ids_name_close_matches():
    with pytest.raises(ConstraintsError, match="leave hardware out when you name a device"):
        Constraints.from_dict({"device": "h100-sxm", "hardware": "cpu"})
    with pytest.raises(ConstraintsError, match="did you mean 'h100-sxm'"):
        Constraints.from_dict({"device": "h100-sx"})
    with pytest.raises(ConstraintsError, match="context_length"):
        Constraints.from_dict({"context_length": 0})


def test_flags_naming_a_device_or_model_rederive_hardware_and_size():
    """`--device m3-max-64gb` over the defaults (nvidia-gpu, 7e9) must not contradict or keep them."""
    c = Constraints().with_overrides({"device": "m3-max-64gb", "model": "llama-3.1-8b"})
    assert c.hardware.value == "apple-silicon"
    assert 8.0e9 < c.model_params < 8.1e9
    # an explicit size or hardware given with them still wins (or is checked)
    assert Constraints().with_overrides({"model": "llama-3.1-8b", "model_params": "7B"}).model_params == 7e9
    with pytest.raises(ConstraintsError, match="leave hardware out"):
        Constraints().with_overrides({"device": "m3-max-64gb", "hardware": "nvidia-gpu"})
