"""Memory estimates against reality: published checkpoint sizes, the issue's KV-cache example, and the
parts of an estimate (weights by tensor class, KV cache, stated overhead, params-only fallback).

The reference rows (``data/published_checkpoints.yaml``) are real quantized checkpoints with the size
their source prints. Each row's TensorBits are not fitted to its size: they come from the storage rule
of the format (``engine.memory``: llama_cpp_bits, gptq_bits, awq_bits, fp8_bits, bnb_4bit_bits,
aqlm_bits), and the test checks both that the rule reproduces the row's bits and that
``checkpoint_bytes`` lands within 3% of the published size. A mutation test makes sure the check can
fail: 10% more or fewer linear bits, or the embeddings at the linear layers' bits, break it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from engine.memory import (
    OVERHEAD_FIXED_GB,
    OVERHEAD_FRACTION,
    TensorBits,
    aqlm_bits,
    awq_bits,
    bnb_4bit_bits,
    checkpoint_bytes,
    estimate_memory,
    fp8_bits,
    gptq_bits,
    llama_cpp_bits,
)
from knowledge.shapes import ModelShape, bundled_models

DATA = Path(__file__).parent / "data" / "published_checkpoints.yaml"
TOLERANCE = 0.03
GIB = 1 << 30

_UNITS = {"bytes": 1.0, "MB": 1e6, "GB": 1e9}


class _Bits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    linear: float
    embedding: float
    lm_head: float
    other: float


class Reference(BaseModel):
    """One published checkpoint: what it is, where its size is printed, and the bits the estimate uses."""

    model_config = ConfigDict(extra="forbid")
    id: str
    model: str
    checkpoint: str
    format: Literal["gguf", "gptq", "awq", "fp8", "bnb-4bit", "aqlm"]
    derive: dict[str, Any]
    bits: _Bits
    size: str = Field(pattern=r"^\d+(\.\d+)? (bytes|MB|GB)$")
    source: str = Field(pattern=r"^https://")
    note: str = Field(min_length=10)

    @property
    def size_bytes(self) -> float:
        number, unit = self.size.split()
        return float(number) * _UNITS[unit]

    @property
    def tensor_bits(self) -> TensorBits:
        return TensorBits(**self.bits.model_dump())


def _load() -> list[Reference]:
    data = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    return [Reference.model_validate(row) for row in data["checkpoints"]]


REFERENCES = _load()
SHAPES = bundled_models()


def _derive(ref: Reference, shape: ModelShape) -> TensorBits:
    d = ref.derive
    if ref.format == "gguf":
        return llama_cpp_bits(shape, d["ftype"])
    if ref.format == "gptq":
        return gptq_bits(shape, d["bits"], d["group_size"])
    if ref.format == "awq":
        return awq_bits(d["bits"], d["group_size"])
    if ref.format == "fp8":
        return fp8_bits(shape, d["scale"])
    if ref.format == "bnb-4bit":
        return bnb_4bit_bits(d["blocksize"], d["double_quant"])
    return aqlm_bits(shape, d["num_codebooks"], d["nbits_per_codebook"], d["in_group_size"])


def _error(ref: Reference, bits: TensorBits) -> float:
    return checkpoint_bytes(SHAPES[ref.model], bits) / ref.size_bytes - 1.0


def test_enough_real_checkpoints_across_formats_and_sizes() -> None:
    assert len(REFERENCES) >= 12
    assert len({r.id for r in REFERENCES}) == len(REFERENCES)
    assert {r.format for r in REFERENCES} == {"gguf", "gptq", "awq", "fp8", "bnb-4bit", "aqlm"}
    sizes = [SHAPES[r.model].params for r in REFERENCES]
    assert min(sizes) < 1.5e9 and max(sizes) > 60e9  # from ~1B to 70B


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda r: r.id)
def test_bits_come_from_the_format_rule(ref: Reference) -> None:
    """The row's bits are what the format stores for this shape, not a number fitted to the size."""
    derived = _derive(ref, SHAPES[ref.model])
    for name in ("linear", "embedding", "lm_head", "other"):
        assert getattr(ref.tensor_bits, name) == pytest.approx(getattr(derived, name), abs=1e-4), name


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda r: r.id)
def test_checkpoint_bytes_within_3_percent_of_the_published_size(ref: Reference) -> None:
    err = _error(ref, ref.tensor_bits)
    assert abs(err) <= TOLERANCE, f"{ref.id}: estimate off by {err:+.2%} ({ref.size} published)"


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda r: r.id)
def test_wrong_bits_break_the_check(ref: Reference) -> None:
    """The comparison is sharp enough to catch a wrong storage rule: +-10% linear bits fail it."""
    bits = ref.tensor_bits
    for factor in (0.9, 1.1):
        wrong = TensorBits(linear=bits.linear * factor, embedding=bits.embedding, lm_head=bits.lm_head)
        assert abs(_error(ref, wrong)) > TOLERANCE, f"{ref.id}: linear x{factor} still passes"


def test_parameters_times_bits_misses_the_issues_example() -> None:
    """The issue: Llama-3.1-8B AWQ estimated at 4.27 GB by params x bits; the checkpoint is 5.73 GB."""
    ref = next(r for r in REFERENCES if r.id == "llama-3.1-8b-instruct-awq-int4")
    shape = SHAPES[ref.model]
    naive = estimate_memory(None, TensorBits(linear=4.25), params=shape.params)
    assert naive.weights_gb == pytest.approx(4.27, abs=0.01)
    assert naive.weights_gb * 1e9 / ref.size_bytes - 1 < -0.2
    by_class = estimate_memory(shape, ref.tensor_bits)
    assert by_class.weights_gb == pytest.approx(5.73, rel=TOLERANCE)


def test_16_bit_embeddings_matter_most_for_small_models() -> None:
    """Quantizing the embeddings too (wrongly) is off by far more for a 1B model than for a 70B one."""
    small = next(r for r in REFERENCES if r.id == "tinyllama-1.1b-chat-gguf-q8-0")
    big = next(r for r in REFERENCES if r.id == "llama-2-70b-aqlm-2bit-1x16")
    for ref in (small, big):
        b = ref.tensor_bits
        flat = TensorBits(linear=b.linear, embedding=b.linear, lm_head=b.linear, other=b.linear)
        assert _error(ref, flat) < _error(ref, b)
    big_b = big.tensor_bits
    assert abs(_error(big, TensorBits(linear=big_b.linear, embedding=2, lm_head=2))) > TOLERANCE


# --- the estimate's other parts ------------------------------------------------------------------------


def test_kv_cache_llama_3_1_8b_at_128k_is_16_gib() -> None:
    shape = SHAPES["llama-3.1-8b"]
    est = estimate_memory(shape, TensorBits(linear=16), context=131072, batch=1)
    assert est.kv_cache_gb * 1e9 == 16 * GIB
    assert "KV cache 16.0 GiB at 131072 tokens x 1" in est.note
    fp8_kv = estimate_memory(shape, TensorBits(linear=16), context=131072, kv_bits=8)
    assert fp8_kv.kv_cache_gb == pytest.approx(est.kv_cache_gb / 2)


def test_estimate_adds_weights_kv_and_stated_overhead() -> None:
    shape = SHAPES["mistral-7b-v0.1"]
    bits = awq_bits()
    est = estimate_memory(shape, bits, context=8192, batch=4)
    weights = checkpoint_bytes(shape, bits) / 1e9
    assert est.basis == "shape"
    assert est.weights_gb == pytest.approx(weights)
    assert est.kv_cache_gb == pytest.approx(shape.kv_cache_bytes(8192, 4) / 1e9)
    assert est.overhead_gb == pytest.approx(weights * OVERHEAD_FRACTION + OVERHEAD_FIXED_GB)
    assert est.total_gb == pytest.approx(est.weights_gb + est.kv_cache_gb + est.overhead_gb)
    assert est.weights_and_kv_gb == pytest.approx(est.weights_gb + est.kv_cache_gb)
    parts = est.breakdown
    assert set(parts) == {"linear", "embedding", "lm_head", "other", "kv_cache", "overhead"}
    assert sum(parts[k] for k in ("linear", "embedding", "lm_head", "other")) == pytest.approx(weights)
    d = est.to_dict()
    assert d["basis"] == "shape" and d["total_gb"] == round(est.total_gb, 3)


def test_params_only_estimate_says_the_kv_cache_is_unknown() -> None:
    est = estimate_memory(None, TensorBits(linear=4.125), params=7e9)
    assert est.basis == "params" and est.kv_cache_gb == 0
    assert est.weights_gb == pytest.approx(7e9 * 4.125 / 8 / 1e9)
    assert "KV cache unknown" in est.note
    with pytest.raises(ValueError, match="needs a shape or a positive params count"):
        estimate_memory(None, TensorBits(linear=4))


def test_tensor_bits_are_validated() -> None:
    with pytest.raises(ValueError, match=r"TensorBits.linear = 0 must be in \(0, 32\]"):
        TensorBits(linear=0)


def test_unknown_llama_cpp_type_is_refused() -> None:
    with pytest.raises(ValueError, match="not modelled; known: Q4_K_M"):
        llama_cpp_bits(SHAPES["llama-3.1-8b"], "IQ2_XS")
