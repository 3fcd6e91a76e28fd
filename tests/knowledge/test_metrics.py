"""RunMetrics: one typed model from the evaluation harness to the database and the evidence rows."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from knowledge.metrics import RunMetrics
from knowledge.schema import Metric


@dataclass
class FakeEval:
    """The EvalResult fields that are renamed on the way to the database, plus ones kept as they are."""

    perplexity: float = 12.5
    size_on_disk_bytes: int = 95_000_000
    bits_per_weight_compressed: float | None = 4.25
    bits_per_weight_model: float = 5.1
    peak_rss_bytes: int = 2_000_000_000
    n_params: int = 135_000_000
    decode_tokens_per_s: float = 31.0
    generation: str = "hello"
    model_memory_bytes: int = 80_000_000


def test_an_eval_result_is_stored_under_the_names_the_pages_read():
    stored = RunMetrics.from_eval(FakeEval(), compress_peak_rss_bytes=3).to_json()
    assert stored["size_bytes"] == 95_000_000 and stored["bits_per_weight"] == 4.25
    assert stored["model_bits_per_weight"] == 5.1 and stored["peak_memory_bytes"] == 2e9
    assert stored["params"] == 135_000_000 and stored["perplexity"] == 12.5
    assert stored["generation"] == "hello" and stored["model_memory_bytes"] == 80_000_000
    assert stored["compress_peak_rss_bytes"] == 3
    assert "size_on_disk_bytes" not in stored and "n_params" not in stored  # each figure once
    assert RunMetrics.from_json(stored) == RunMetrics.from_eval(FakeEval(), compress_peak_rss_bytes=3)


def test_older_rows_and_bad_numbers_are_read():
    m = RunMetrics.from_json(
        {"size_mb": 500.0, "peak_memory_gb": 1.5, "perplexity": float("inf"), "sparsity": "n/a", "other": 1}
    )
    assert m.in_unit("size_bytes") == 500.0 and m.in_unit("peak_memory_bytes") == pytest.approx(1.5)
    assert m.perplexity is None and m.sparsity is None and m.to_json()["other"] == 1


def test_figures_declare_the_evidence_metrics_in_order():
    figures = dict(RunMetrics.figures())
    assert list(figures)[:3] == ["perplexity", "size_bytes", "bits_per_weight"]
    assert figures["size_bytes"].metric is Metric.SIZE_MB and figures["size_bytes"].per_unit == 1e6
    assert (
        figures["params"].metric is Metric.PARAMETERS_B
        and figures["model_bits_per_weight"].what == "whole model"
    )
