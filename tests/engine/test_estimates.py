"""Estimates: weight memory after compression, fit, and the expected quality drop with its rows."""

from __future__ import annotations

import pytest

from engine.estimates import (
    bits_from_setting,
    estimate,
    expected_quality_drop,
    grade_tables,
    model_size_from_name,
    quality_drop_of,
    stored_bits,
    weight_memory_gb,
)

from .conftest import make_evidence, make_method


def test_4bit_group128_7b_is_about_3_7_gb():
    # 4 bits + an fp16 scale and an fp16 zero per group of 128 = 4.25 bits per weight
    assert weight_memory_gb(7e9, 4.25) == pytest.approx(3.71875)
    # 4 bits + one fp16 scale per group of 128 = 4.125
    assert weight_memory_gb(7e9, 4.125) == pytest.approx(3.609375)
    assert weight_memory_gb(7e9, 16) == pytest.approx(14.0)


def test_param_fraction_scales_memory():
    assert weight_memory_gb(7e9, 16, 0.5) == pytest.approx(7.0)


def test_stored_sparsity_saves_values_and_costs_a_bitmask():
    sparse = make_method(
        "sp",
        "pre-training",
        "static",
        footprint={"bits_per_weight": 16, "sparsity": 0.7, "sparsity_stored": True},
    )
    dense_zeros = make_method(
        "dz", "post-training", "static", footprint={"bits_per_weight": 16, "sparsity": 0.5}
    )
    assert stored_bits(sparse) == pytest.approx(16 * 0.3 + 1)
    assert stored_bits(dense_zeros) == 16  # zeros stored as zeros save nothing


def test_estimate_fits_against_budget():
    m = make_method("q4", "post-training", "static")
    assert estimate(m, [], 7e9, memory_budget_gb=4).fits is True
    assert estimate(m, [], 7e9, memory_budget_gb=3.5).fits is False
    assert estimate(m, [], 7e9, None).fits is None


@pytest.mark.parametrize(
    "name, params",
    [
        ("LLaMA-7B", 7e9),
        ("Llama-2-7B", 7e9),
        ("OPT-125M", 125e6),
        ("BLOOM-176B", 176e9),
        ("Mixtral 8x7B", 56e9),
        ("SmolLM2-135M-Instruct", 135e6),
        ("Llama-3.1-8B-Instruct", 8e9),
        ("6B-20B LLMs", (6e9 * 20e9) ** 0.5),
        ("LLMs evaluated in the TEAL paper", None),
    ],
)
def test_model_size_from_name(name, params):
    got = model_size_from_name(name)
    assert got == (pytest.approx(params) if params else None)


def test_quality_drop_of_perplexity_and_accuracy_rows():
    assert quality_drop_of(make_evidence("m", "X-7B", 6.0, 5.0)) == pytest.approx(20.0)
    assert quality_drop_of(make_evidence("m", "X-7B", 60.0, 64.0, metric="accuracy")) == pytest.approx(6.25)
    assert quality_drop_of(make_evidence("m", "X-7B", 2.0, 1.0, metric="speedup")) is None


def test_quality_prefers_rows_of_models_closest_in_size():
    m = make_method("q4", "post-training", "static")
    rows = [
        make_evidence("q4", "OPT-125M", 31.0, 27.65),  # +12%: a small model, far from 7B
        make_evidence("q4", "LLaMA-7B", 6.09, 5.68),  # +7.2%
        make_evidence("q4", "Llama-2-7B", 5.63, 5.47),  # +2.9%
        make_evidence("q4", "OPT-6.7B", 11.0, 10.86),  # +1.3%
        make_evidence("other", "LLaMA-7B", 99.0, 5.68),  # another method's row
    ]
    q = expected_quality_drop(m, rows, 7e9)
    assert q.from_evidence and q.basis == "evidence"
    assert {r.model for r in q.rows} == {"LLaMA-7B", "Llama-2-7B", "OPT-6.7B"}
    assert q.pct == pytest.approx((5.63 - 5.47) / 5.47 * 100)  # the median of the three
    small = expected_quality_drop(m, rows, 125e6)
    assert [r.model for r in small.rows] == ["OPT-125M"]


def test_quality_falls_back_to_the_grade_and_says_so():
    m = make_method("q4", "post-training", "static", grades={"quality_drop": "moderate"})
    q = expected_quality_drop(m, [], 7e9)
    assert q.basis == "grade" and not q.rows
    assert q.pct == grade_tables()["quality_drop_pct"]["moderate"]
    assert "grade-based fallback" in q.note


def test_grade_table_covers_every_grade():
    from knowledge.schema import QualityDrop, SizeReduction

    t = grade_tables()
    assert set(t["quality_drop_pct"]) == set(QualityDrop.values())
    assert set(t["quality_grade_score"]) == set(QualityDrop.values())
    assert set(t["size_reduction_score"]) == set(SizeReduction.values())
    pcts = [t["quality_drop_pct"][g] for g in ("minimal", "low", "moderate", "high")]
    assert pcts == sorted(pcts)


def test_real_gptq_estimate_uses_its_7b_evidence(methods, evidence):
    est = estimate(methods["gptq"], [r for r in evidence if r.method == "gptq"], 7e9, 6)
    assert est.quality_basis == "evidence" and est.evidence
    assert all(
        model_size_from_name(r.model) and 3.5e9 <= model_size_from_name(r.model) <= 14e9 for r in est.evidence
    )
    assert est.fits is True and est.memory_gb == pytest.approx(
        7e9 * methods["gptq"].footprint.bits_per_weight / 8e9
    )
    d = est.to_dict()
    assert set(d) == {
        "bits_per_weight",
        "param_fraction",
        "memory_gb",
        "fits",
        "quality_drop_pct",
        "quality_basis",
        "quality_note",
        "quality_measured_on",
        "evidence",
    }
    assert {"model", "metric", "value", "baseline", "source"} <= set(d["evidence"][0])


@pytest.mark.parametrize(
    "setting, bits",
    [
        ("4-bit, no grouping", 4.0),
        ("SpQR, 3.94 average bits per weight", 3.94),
        ("3 bit, g128", 3.0),
        ("50% unstructured", None),
        ("gptq (bits=4, group_size=128)", 4.0),
        ("spqr (qq_bits=2)", None),
    ],
)
def test_bits_from_setting(setting, bits):
    assert bits_from_setting(setting) == bits


def test_quantizer_quality_uses_rows_at_its_own_bit_width():
    m = make_method("q4", "post-training", "static")  # 4.25 bits per weight
    rows = [make_evidence("q4", "LLaMA-7B", 6.09, 5.68), make_evidence("q4", "LLaMA-7B", 8.07, 5.68)]
    rows[0] = rows[0].model_copy(update={"setting": "4-bit, no grouping"})
    rows[1] = rows[1].model_copy(update={"setting": "3-bit, no grouping"})
    q = expected_quality_drop(m, rows, 7e9)
    assert [r.setting for r in q.rows] == ["4-bit, no grouping"]
    assert q.pct == pytest.approx((6.09 - 5.68) / 5.68 * 100)
    # without any row at its width, every row counts
    m2 = make_method("q4", "post-training", "static", footprint={"bits_per_weight": 2.0})
    assert len(expected_quality_drop(m2, rows, 7e9).rows) == 2


def _measured(method: str, model: str, value: float, baseline: float, run_id: int = 7):
    """A perplexity row as ``knowledge.runs.evidence_from_run`` writes it for a run of Shrinkwise."""
    from knowledge.schema import Evidence

    return Evidence.model_validate(
        {
            "method": method,
            "model": model,
            "setting": "gptq (bits=4, group_size=128)",
            "metric": "perplexity",
            "value": value,
            "baseline": baseline,
            "baseline_label": "same model before compression",
            "source": {
                "paper": f"Shrinkwise run #{run_id}",
                "locator": "measured here on a test CPU",
                "tag": "measured",
            },
        }
    )


def _paper(method: str, model: str, value: float, baseline: float):
    return make_evidence(method, model, value, baseline).model_copy(
        update={"setting": "4-bit, group size 128"}
    )


def test_estimate_from_measured_rows_names_the_model_it_was_measured_on():
    m = make_method("q4", "post-training", "static")
    rows = [_paper("q4", "LLaMA-7B", 5.9, 5.68), _measured("q4", "SmolLM2-135M-Instruct", 11.93, 10.05)]
    est = estimate(m, rows, 135e6)  # a small model: the 135M measurement is the closest evidence
    assert est.quality_basis == "evidence"
    assert est.quality_measured_on == ("SmolLM2-135M-Instruct",)
    assert "measured here on SmolLM2-135M-Instruct" in est.quality_note
    assert est.quality_drop_pct == pytest.approx((11.93 - 10.05) / 10.05 * 100)
    d = est.to_dict()
    assert d["quality_measured_on"] == ["SmolLM2-135M-Instruct"]
    assert d["evidence"][0]["measured_here"] is True


def test_estimate_from_papers_only_says_nothing_about_measurements():
    m = make_method("q4", "post-training", "static")
    rows = [_paper("q4", "LLaMA-7B", 5.9, 5.68), _measured("q4", "SmolLM2-135M-Instruct", 11.93, 10.05)]
    est = estimate(m, rows, 7e9)  # a 7B model: the paper's 7B row wins, the 135M run is too far in size
    assert est.quality_measured_on == ()
    assert "measured" not in est.quality_note and "LLaMA-7B" in est.quality_note


def test_mixed_pool_counts_the_measured_rows():
    m = make_method("q4", "post-training", "static")
    rows = [_paper("q4", "OPT-125M", 30.0, 27.65), _measured("q4", "SmolLM2-135M-Instruct", 11.93, 10.05)]
    est = estimate(m, rows, 135e6)
    assert est.quality_measured_on == ("SmolLM2-135M-Instruct",)
    assert "1 of them measured here on SmolLM2-135M-Instruct" in est.quality_note
    assert "OPT-125M" in est.quality_note
