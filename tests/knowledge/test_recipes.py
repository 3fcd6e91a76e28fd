"""Recipes as data: every recipe of the issue-10 contract exists, is sourced and fits the knowledge base."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.catalog import CELLS, load_catalog
from knowledge.loader import DataFileError, validate_file
from knowledge.recipes import compress_command, default_recipe, fill, recipes_for, run_it_query

#: The recipe ids fixed by the contract between the parts of issue 10 (plan/issue10-contract.md), with
#: the method each belongs to (evidence rows are tagged with these ids).
CONTRACT = {
    "rtn-w4a16-g128": "rtn",
    "rtn-w8a16": "rtn",
    "gptq-w4a16-g128": "gptq",
    "gptq-w4a16-g128-actorder": "gptq",
    "gptq-w3a16-g128": "gptq",
    "gptq-w8a16": "gptq",
    "awq-w4a16-g128": "awq",
    "fp8-w8a8-dynamic": "fp8-online",
    "fp8-w8a16": "fp8-online",
    "int8-w8a8-smoothquant": "smoothquant",
    "llm-int8-load": "llm-int8",
    "nf4-load": "nf4-load",
    "hqq-4bit-g64": "hqq",
    "gguf-q4-0": "gguf-k-quants",
    "gguf-q4-k-m": "gguf-k-quants",
    "gguf-q5-k-m": "gguf-k-quants",
    "gguf-q6-k": "gguf-k-quants",
    "gguf-q8-0": "gguf-k-quants",
    "gguf-iq2-xs": "gguf-k-quants",
    "aqlm-2bit-1x16": "aqlm",
    "quip-sharp-2bit": "quip-sharp",
    "spqr-3bit": "spqr",
    "squeezellm-4bit": "squeezellm",
    "omniquant-w4a16-g128": "omniquant",
    "quarot-w4a4": "quarot",
    "sparsegpt-50": "sparsegpt",
    "sparsegpt-2of4": "sparsegpt",
    "sparsegpt-2of4-w4": "sparsegpt",
    "wanda-50": "wanda",
    "wanda-2of4": "wanda",
    "slicegpt-25": "slicegpt",
    "shortgpt-25": "shortgpt",
    "fp8-kv-cache": "fp8-online",
    "kivi-2bit-kv": "kivi",
    "speculative-eagle": "eagle",
    "speculative-draft": "speculative-decoding",
    "medusa": "medusa",
    "gqa-pretrain": "grouped-query-attention",
    "moe-pretrain": "mixtral-moe",
    "qlora-nf4": "qlora",
    "llm-qat-w4": "llm-qat",
    "distillation-minitron": "minitron",
    "bitnet-b158": "bitnet-b158",
    "h2o-kv": "h2o",
    "snapkv": "snapkv",
    "streamingllm": "streamingllm",
    "lazyllm": "lazyllm",
    "teal-40": "teal",
    "deja-vu": "deja-vu",
    "dynamic-int8-cpu": "dynamic-int8",
    "cpu-inference": "cpu-inference",
}


@pytest.fixture(scope="module")
def cat():
    return load_catalog(include_measured=False)


def test_every_contract_recipe_exists_with_its_method(cat):
    missing = sorted(set(CONTRACT) - set(cat.recipes))
    assert missing == []
    assert {rid: cat.recipes[rid].method for rid in CONTRACT} == CONTRACT


def test_every_recipe_names_its_sources_and_a_cell_of_the_map(cat):
    for r in cat.recipes.values():
        assert r.sources and all(s.url.startswith("https://") for s in r.sources), r.id
        m = cat.methods[r.method]  # every recipe belongs to a method, so to a phase x impact cell
        assert m.cell in CELLS


def test_engines_of_a_recipe_load_its_format(cat):
    for r in cat.recipes.values():
        assert r.format in cat.formats, r.id
        for use in r.engines:
            assert r.format in cat.engines[use.engine].loads, (r.id, use.engine.value)


def test_load_time_and_lossless_recipes_write_nothing(cat):
    for r in cat.recipes.values():
        if r.load_time:  # applied when the engine loads the model: no checkpoint to produce
            assert r.format == "runtime-only" and r.produce is None, r.id
        if r.lossless:
            assert r.storage.linear == 16.0 and r.kv_bits is None, r.id


def test_every_method_has_a_recipe_to_rank(cat):
    """Methods without recipe data are ranked as their default recipe (the method's own defaults)."""
    allr = recipes_for(cat.methods, cat.recipes)
    assert {r.method for r in allr.values()} == set(cat.methods)
    for mid, m in cat.methods.items():
        if not cat.recipes_of(mid):
            d = default_recipe(m)
            assert d.id == mid and allr[mid] == d


def test_commands_are_exact_and_filled(cat):
    gptq = cat.recipes["gptq-w4a16-g128"]
    cmd = compress_command(gptq, "meta-llama/Llama-3.1-8B")
    assert cmd == (
        "shrinkwise compress meta-llama/Llama-3.1-8B --method gptq --bits 4 --group-size 128 "
        "--set act_order=false --out out/gptq-w4a16-g128"
    )
    assert run_it_query(gptq) == {
        "method": "gptq",
        "compressor": "gptq",
        "bits": "4",
        "group_size": "128",
        "act_order": "false",
    }
    awq = cat.recipes["awq-w4a16-g128"]  # no bundled compressor: the standard tool's command only
    assert compress_command(awq) is None and run_it_query(awq) is None
    q4 = cat.recipes["gguf-q4-k-m"]  # bundled (llama.cpp's quantizer) and the standard tool's command
    assert compress_command(q4, "demo") == (
        "shrinkwise compress demo --method gguf-kquant --set type=Q4_K_M --out out/gguf-q4-k-m"
    )
    produce = fill(q4.produce, "meta-llama/Llama-3.1-8B", "out/q4")
    assert produce and "llama-quantize out/q4/model-f16.gguf out/q4/model-Q4_K_M.gguf Q4_K_M" in produce
    fp8 = cat.recipes["fp8-w8a8-dynamic"]
    use = fp8.engine("vllm")
    assert use is not None and fill(use.serve, "m") == "vllm serve m --quantization fp8"
    kv = cat.recipes["fp8-kv-cache"].engine("vllm")
    assert kv is not None and fill(kv.serve, "m") == "vllm serve m --kv-cache-dtype fp8"


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "recipes.yaml"
    p.write_text(body)
    return p


GOOD = """recipes:
  - id: my-recipe
    method: gptq
    name: My GPTQ
    summary: A test recipe.
    config: {bits: 4, group_size: 64}
    storage: {linear: 4.3}
    format: compressed-tensors
    engines: [{engine: vllm, serve: "vllm serve {out}"}]
    requires: {hardware: [nvidia-gpu], min_compute_capability: 7.0}
    calibration: true
    compressor: {id: gptq, flags: {bits: 4, group_size: 64}}
    sources: [{what: "a source", url: "https://example.org/x"}]
"""


def test_a_user_recipe_file_validates(tmp_path):
    report = validate_file(_write(tmp_path, GOOD))
    assert report.counts == {"recipes": 1}


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("method: gptq", "method: gptqq", "unknown method id 'gptqq'"),
        ("format: compressed-tensors", "format: ggufx", "unknown format 'ggufx'"),
        (
            "engines: [{engine: vllm",
            "engines: [{engine: llama.cpp",
            "engine 'llama.cpp' does not load format",
        ),
        ("compressor: {id: gptq", "compressor: {id: rtn", "compressor 'rtn' does not run method 'gptq'"),
        ("calibration: true", "calibration: true\n    colour: red", "unknown key 'colour'"),
        ("min_compute_capability: 7.0", "supports: [fp9]", "unknown support flag"),
        ("engines: [{engine: vllm", "engines: [{engine: vlm", "engine"),
    ],
)
def test_recipe_mistakes_are_reported(tmp_path, old, new, message):
    with pytest.raises(DataFileError) as exc:
        validate_file(_write(tmp_path, GOOD.replace(old, new)))
    assert message in str(exc.value)
