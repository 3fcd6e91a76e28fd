"""Layer-by-layer streaming (compressors/streaming.py): same packed result as the whole-model path, a
peak memory that does not grow with depth, clear errors for broken checkpoints, and the run's choice of
path."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import tiny_config, tiny_model, tiny_tokenizer

from compressors.base import CompressionError, ModelShape, RunContext, get_compressor
from compressors.models import (
    ModelLoadError,
    check_memory,
    check_safetensors,
    inspect_checkpoint,
    load_model,
    model_shape,
    streamed_memory_bytes,
)
from compressors.packed import QuantizedLinear, packed_modules
from compressors.storage import SafetensorsStreamWriter, load_packed, read_manifest, save_packed
from compressors.streaming import (
    ShardReader,
    StreamingUnsupported,
    estimate_run,
    resolve_device,
    stream_compress,
    streaming_reason,
)

REPO = Path(__file__).resolve().parents[2]
CFG = {"bits": 4, "group_size": 32}


def _calib(n=4, seq=48, seed=0):
    return torch.randint(0, 320, (n, seq), generator=torch.Generator().manual_seed(seed))


def _checkpoint(folder: Path, arch: str = "llama", shard: str | None = "60KB", **overrides) -> Path:
    """A bf16 safetensors folder (sharded with an index when ``shard`` is set) and its tokenizer."""
    if overrides:
        from transformers import AutoModelForCausalLM

        cfg = tiny_config(arch)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    else:
        model = tiny_model(arch)
    model.to(torch.bfloat16).save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _whole(src: Path, cid: str, out: Path, calib: torch.Tensor, cfg_dict: dict | None = None) -> Path:
    comp = get_compressor(cid)
    cfg = comp.config_cls.from_dict(CFG if cfg_dict is None else cfg_dict)
    model, tok = load_model(src)
    comp.compress(model, tok, cfg, RunContext(calibration=calib))
    return save_packed(model, tok, out, method=cid, config=cfg.to_dict(), dense_dtype=torch.bfloat16)


def _streamed(
    src: Path, cid: str, out: Path, calib: torch.Tensor, device: str = "cpu", cfg_dict: dict | None = None
) -> Path:
    comp = get_compressor(cid)
    cfg = comp.config_cls.from_dict(CFG if cfg_dict is None else cfg_dict)
    ctx = RunContext(calibration=calib, device=device)
    report = stream_compress(src, comp, cfg, out, ctx, tokenizer=tiny_tokenizer(), dense_dtype=torch.bfloat16)
    assert report.n_blocks == 2 and report.largest_block_bytes > 0
    return report.checkpoint_dir


def _assert_same_codes(whole: Path, streamed: Path, max_changed: float) -> None:
    """Same tensors under the same names; dense ones equal, packed layers' codes equal up to a fraction
    ``max_changed`` of codes one step apart, with equal grids elsewhere."""
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(streamed / "model.safetensors"))
    assert set(a) == set(b)
    ma, mb = load_packed(whole), load_packed(streamed)
    pa, pb = packed_modules(ma), packed_modules(mb)
    assert set(pa) == set(pb) and pa
    packed_prefixes = tuple(p + "." for p in pa)
    for k in a:
        if not k.startswith(packed_prefixes):
            assert torch.equal(a[k], b[k]), k
    for name, la in pa.items():
        lb = pb[name]
        assert isinstance(la, QuantizedLinear) and isinstance(lb, QuantizedLinear)
        ca, cb = la.codes().long(), lb.codes().long()
        changed = (ca != cb).float().mean().item()
        assert changed <= max_changed, (name, changed)
        assert (ca - cb).abs().max().item() <= 1, name
        if max_changed == 0:
            assert torch.equal(la.scales, lb.scales) and torch.equal(la.qweight, lb.qweight), name
    x = _calib(1, 32, seed=3)
    with torch.no_grad():
        la_, lb_ = ma(x).logits, mb(x).logits
    assert float((la_ - lb_).abs().max()) <= 1e-3 * float(la_.abs().max()) + (0 if max_changed else 1e-6)


@pytest.mark.parametrize("arch", ["llama", "opt", "gemma3_text"])
def test_streamed_rtn_is_bit_for_bit_the_whole_model_result(tmp_path, arch):
    src = _checkpoint(tmp_path / "src", arch)
    assert (src / "model.safetensors.index.json").is_file()  # the sharded layout is what is exercised
    calib = _calib()
    _assert_same_codes(
        _whole(src, "rtn", tmp_path / "whole", calib),
        _streamed(src, "rtn", tmp_path / "stream", calib),
        max_changed=0.0,
    )


def _compare_gptq(arch: str, out: str) -> None:
    src = _checkpoint(Path(out) / "src", arch)
    calib = _calib()
    whole = _whole(src, "gptq", Path(out) / "whole", calib)
    streamed = _streamed(src, "gptq", Path(out) / "stream", calib)
    # same calibration, float32 in both; only float rounding can move a code by one step. Usually that is
    # all (<= 0.1% of codes), but torch's CPU float kernels are not bitwise reproducible from one call to
    # the next (allocation-dependent paths: two whole-model runs in one process differ too, even with
    # MKL_CBWR=STRICT and one thread), and GPTQ feeds each rounding difference into the Hessian's
    # factor and every later column, so a down_proj can end up with ~20% of its codes one step apart.
    # Then the two results must be equally good: the same error against the float model within 5%.
    try:
        _assert_same_codes(whole, streamed, max_changed=1e-3)
    except AssertionError:
        _assert_equally_good(src, whole, streamed)


def _assert_equally_good(src: Path, whole: Path, streamed: Path) -> None:
    ref, _ = load_model(src)
    ma, mb = load_packed(whole), load_packed(streamed)
    for name, la in packed_modules(ma).items():
        changed = (la.codes() != packed_modules(mb)[name].codes()).float().mean().item()
        assert changed <= 0.35, (name, changed)  # a wrong input or grid changes most codes
    x = _calib(2, 32, seed=3)
    with torch.no_grad():
        want = ref(x).logits.float()
        err_a = float((ma(x).logits.float() - want).norm())
        err_b = float((mb(x).logits.float() - want).norm())
    assert abs(err_a - err_b) <= 0.05 * err_a, (err_a, err_b)


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_streamed_gptq_matches_the_whole_model_result(tmp_path, arch):
    # in a child with MKL's reproducible mode: see test_calibrated_methods_stream_bit_for_bit (under load
    # the in-process comparison once moved more than 0.1% of the codes)
    _in_reproducible_child("_compare_gptq", arch, str(tmp_path))


# every other block-wise compressor and its settings. The data-free ones (no forward pass) are compared
# in this process; the calibrated ones in a child process with MKL's conditional numerical
# reproducibility on (see test_calibrated_methods_stream_bit_for_bit)
BLOCKWISE: dict[str, dict] = {
    "magnitude": {"sparsity": 0.5},
    "cpu-inference": {},
    "wanda": {"sparsity": 0.5},
    "sparsegpt": {"sparsity": 0.5, "pattern": "2:4"},
    "spqr": {"bits": 3, "beta1": 16, "beta2": 8},
}
DATA_FREE = ("magnitude", "cpu-inference")


#: Methods compared within a tolerance instead of bit for bit: the largest relative (Frobenius) change
#: of a layer's dequantized weight. SpQR differed now and then between two *whole-model* runs on this
#: loaded machine, and once in a full run of this file even with MKL's reproducible mode, so its
#: streamed result cannot be held to more than its own run-to-run variation.
TOLERANCE = {"spqr": 0.05}


def _assert_same_packed(whole: Path, streamed: Path, tol: float | None = None) -> None:
    """Same tensors under the same names and the same packed modules; with ``tol=None`` every byte and
    the logits equal, otherwise the dense tensors equal, each packed layer's dequantized weight within
    ``tol`` (relative Frobenius norm) and the logits within 2%."""
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(streamed / "model.safetensors"))
    assert set(a) == set(b)
    ma, mb = load_packed(whole), load_packed(streamed)
    pa, pb = packed_modules(ma), packed_modules(mb)
    assert set(pa) == set(pb) and len(pa) == 14
    assert all(type(pa[n]) is type(pb[n]) for n in pa)
    packed_prefixes = tuple(p + "." for p in pa)
    for k in a:
        if tol is None or not k.startswith(packed_prefixes):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = _calib(1, 32, seed=3)
    with torch.no_grad():
        la, lb = ma(x).logits, mb(x).logits
    if tol is None:
        assert read_manifest(whole)["modules"] == read_manifest(streamed)["modules"]
        assert torch.equal(la, lb)
        return
    for name, layer in pa.items():
        wa, wb = layer.dequantize(), pb[name].dequantize()
        assert float(torch.linalg.norm(wa - wb) / torch.linalg.norm(wa)) <= tol, name
    assert float((la - lb).abs().max()) <= 0.02 * float(la.abs().max())


def _compare(src: Path, cid: str, out: Path) -> None:
    calib = _calib()
    cfg = BLOCKWISE[cid]
    whole = _whole(src, cid, out / "whole", calib, cfg)
    streamed = _streamed(src, cid, out / "stream", calib, cfg_dict=cfg)
    assert read_manifest(streamed)["streamed"]["blocks"] == 2
    _assert_same_packed(whole, streamed, TOLERANCE.get(cid))


@pytest.mark.parametrize("cid", DATA_FREE)
def test_data_free_methods_stream_bit_for_bit(tmp_path, cid):
    _compare(_checkpoint(tmp_path / "src"), cid, tmp_path)


_COMPARE_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "tests/compressors")
    import test_streaming as t
    getattr(t, sys.argv[1])(*sys.argv[2:])
    print("same")
    """
)


def _in_reproducible_child(func: str, *args: str) -> None:
    """Run ``func(*args)`` of this module in a child process on one thread with MKL_CBWR=AUTO,STRICT
    (MKL's conditional numerical reproducibility, which must be set before MKL loads); fail with its
    error output."""
    import os

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MKL_CBWR": "AUTO,STRICT",
        "OMP_NUM_THREADS": "1",  # one thread: no split of a sum that depends on the machine's load
        "MKL_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _COMPARE_CHILD, func, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("same"), proc.stderr[-3000:]


def _compare_in_child(cid: str, out: str) -> None:
    _compare(_checkpoint(Path(out) / "src"), cid, Path(out))


@pytest.mark.parametrize("cid", sorted(set(BLOCKWISE) - set(DATA_FREE)))
def test_calibrated_methods_stream_bit_for_bit(tmp_path, cid):
    """Wanda and SparseGPT, streamed and whole, give the same packed bytes and logits, bit for bit, when
    the float sums run in one order in both walks (SpQR: within :data:`TOLERANCE`). MKL (torch's CPU BLAS) picks its kernels by the
    buffers' alignment and the thread count, so a block's forward can round its last bit otherwise in
    the two walks, and a mask or code choice amplifies that (measured: SparseGPT 2:4 on this model, 2
    threads, 8 of 8 streamed runs differed from the whole-model one in block 1's MLP masks, with up to
    14% relative change of a layer's weight; with MKL_CBWR=AUTO,STRICT 0 of 4). So the comparison runs
    in a child process with MKL's conditional numerical reproducibility on (it must be set before MKL
    loads)."""
    _in_reproducible_child("_compare_in_child", cid, str(tmp_path))


def test_streamed_teal_records_the_whole_model_thresholds(tmp_path):
    """TEAL changes no weight: the streamed output holds the original weights and the same per-layer
    thresholds as the whole-model calibration (each layer samples with its own generator, so the order
    the layers are visited in does not matter), on the first ``calib_samples`` windows only."""
    src = _checkpoint(tmp_path / "src")
    calib = _calib(n=5)
    cfg = {"sparsity": 0.4, "kernel": "torch", "calib_samples": 3, "max_samples_per_layer": 1024}
    whole = _whole(src, "teal", tmp_path / "whole", calib, cfg)
    streamed = _streamed(src, "teal", tmp_path / "stream", calib, cfg_dict=cfg)
    ra = json.loads((whole / "config.json").read_text())["shrinkwise_dynamic"]
    rb = json.loads((streamed / "config.json").read_text())["shrinkwise_dynamic"]
    ta, tb = ra.pop("payload")["thresholds"], rb.pop("payload")["thresholds"]
    assert ra == rb and set(ta) == set(tb) and len(tb) == 14 and all(t > 0 for t in tb.values())
    # the same draws of the same magnitudes: equal up to the last bit MKL may round otherwise in the
    # block's forward (see test_calibrated_methods_stream_bit_for_bit); other draws differ by ~1e-2
    assert all(abs(ta[k] - tb[k]) <= 1e-5 * ta[k] for k in ta), {k: (ta[k], tb[k]) for k in ta}
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(streamed / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the thresholds depend on the windows used: a run on all five differs, so the limit was applied
    five = _streamed(src, "teal", tmp_path / "five", calib, cfg_dict={**cfg, "calib_samples": 5})
    tc = json.loads((five / "config.json").read_text())["shrinkwise_dynamic"]["payload"]["thresholds"]
    assert max(abs(tc[k] - tb[k]) / tb[k] for k in tb) > 1e-3
    model, _ = load_model(streamed, with_tokenizer=False)  # re-installed from the record on load
    from compressors.dynamic.teal import installed_states

    assert len(installed_states(model)) == 14


def test_streamed_output_is_the_packed_format(tmp_path):
    src = _checkpoint(tmp_path / "src", shard=None)
    out = _streamed(src, "rtn", tmp_path / "stream", _calib())
    manifest = read_manifest(out)
    assert manifest["method"] == "rtn" and manifest["dense_dtype"] == "bfloat16"
    assert manifest["streamed"] == {"device": "cpu", "blocks": 2}
    assert len(manifest["modules"]) == 14
    check_safetensors(out / "model.safetensors")  # header and size agree
    model, _ = load_model(out, with_tokenizer=False)  # the ordinary loader reads it
    assert len(packed_modules(model)) == 14
    assert json.loads((out / "config.json").read_text())["model_type"] == "shrinkwise-packed"


def test_stream_writer_round_trips_and_aligns_every_tensor(tmp_path):
    tensors = {
        "a": torch.arange(7, dtype=torch.uint8),
        "b": torch.randn(3, 5),
        "c": torch.randn(4, 2).to(torch.bfloat16),
        "d": torch.arange(9, dtype=torch.int32).reshape(3, 3),
        "e": torch.tensor(2.5, dtype=torch.float16),
        "f": torch.zeros(0, 4),
        "g": torch.arange(3, dtype=torch.int64),
    }
    w = SafetensorsStreamWriter(tmp_path / "x.safetensors")
    for k, t in tensors.items():
        w.add(k, t)
    with pytest.raises(ValueError, match="twice"):
        w.add("a", tensors["a"])
    path = w.finish({"format": "pt"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]  # temporary parts removed
    header = check_safetensors(path)
    for k, t in tensors.items():
        assert header[k]["data_offsets"][0] % t.element_size() == 0, k
    back = load_file(str(path))
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t), k


def test_a_missing_shard_is_named(tmp_path):
    src = _checkpoint(tmp_path / "src")
    shard = sorted(src.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(
        ModelLoadError, match=f"shards its model.safetensors.index.json lists are missing, e.g. {shard.name}"
    ):
        ShardReader(src)
    with pytest.raises(ModelLoadError, match="missing"):
        _streamed(src, "rtn", tmp_path / "out", _calib())
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_config_that_does_not_match_the_shards_is_refused(tmp_path):
    src = _checkpoint(tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = 3  # the shards hold two blocks
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"do not match its config.json.*model\.layers\.2\."):
        _streamed(src, "rtn", tmp_path / "out", _calib())
    (src / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        _streamed(src, "rtn", tmp_path / "out", _calib())


STREAMING = ("rtn", "gptq", "magnitude", "wanda", "sparsegpt", "spqr", "cpu-inference", "teal")


def test_which_runs_stream(tmp_path):
    from compressors.base import all_compressors

    src = _checkpoint(tmp_path / "src")
    info = inspect_checkpoint(src)
    streams = {
        cid
        for cid in all_compressors()
        if streaming_reason(info, (c := get_compressor(cid)), c.config_cls()) is None
    }
    assert streams == set(STREAMING)
    # every other method says why it needs the whole model, in its own words
    for cid in set(all_compressors()) - streams:
        comp = get_compressor(cid)
        reason = streaming_reason(info, comp, comp.config_cls()) or ""
        assert reason.startswith(f"{cid} needs the whole model: ") and "no block-by-block form" not in reason
    int8 = get_compressor("cpu-inference")
    with_head = int8.config_cls(include_lm_head=True)
    assert "output head" in (streaming_reason(info, int8, with_head) or "")
    with pytest.raises(StreamingUnsupported, match="output head"):
        stream_compress(src, int8, with_head, tmp_path / "out", RunContext())
    rtn = get_compressor("rtn")
    info.source = "gguf"
    assert "GGUF" in (streaming_reason(info, rtn, rtn.config_cls()) or "")


def test_device_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CompressionError, match="cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CompressionError, match="no CUDA device"):
            resolve_device("cuda:0")


def _llama_shape(layers: int) -> ModelShape:
    from transformers import LlamaConfig

    return model_shape(
        LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=layers,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32000,
            tie_word_embeddings=False,
        )
    )


def test_memory_check_accepts_a_model_that_fits_only_block_by_block(monkeypatch):
    shape = _llama_shape(32)  # 7B: ~27 GB in float32
    streamed = streamed_memory_bytes(shape, 16, 512)
    assert streamed < 6 * 2**30  # the target for a 7B model on a 24 GB machine
    monkeypatch.setattr("compressors.models.available_memory_bytes", lambda: 8 * 2**30)
    with pytest.raises(ModelLoadError, match="too large for this machine"):
        check_memory(shape, "llama-7b")
    check_memory(shape, "llama-7b", streamed_peak_bytes=streamed)  # accepted
    monkeypatch.setattr("compressors.models.available_memory_bytes", lambda: 2**30)
    with pytest.raises(ModelLoadError, match="even block by block"):
        check_memory(shape, "llama-7b", streamed_peak_bytes=streamed)
    # depth does not enter the streamed peak
    assert streamed_memory_bytes(_llama_shape(80), 16, 512) == streamed


def test_the_estimate_follows_the_path_the_run_takes(tmp_path):
    from compressors.base import Calibration

    src = _checkpoint(tmp_path / "src")
    info = inspect_checkpoint(src)
    gptq = get_compressor("gptq")
    est = estimate_run(gptq, info, gptq.config_cls(), Calibration(4, 48))
    assert est is not None and "streamed block by block" in est.note
    int8 = get_compressor("cpu-inference")
    whole = estimate_run(int8, info, int8.config_cls(include_lm_head=True), Calibration(4, 48))
    assert whole is not None and "streamed" not in whole.note
    streamed = estimate_run(int8, info, int8.config_cls(), Calibration(4, 48))
    assert streamed is not None and "streamed block by block" in streamed.note
    assert streamed.peak_memory_bytes < whole.peak_memory_bytes


def test_the_streamed_peak_follows_each_methods_block_step():
    """Data-free steps hold no activations; Wanda's norms are far smaller than the Hessian methods'
    Hessians; TEAL holds only its own calib_samples windows and its samples; depth never enters."""
    from compressors.base import Calibration
    from compressors.streaming import streamed_peak_bytes

    shape, calib = _llama_shape(32), Calibration(64, 512)
    peak = {}
    for cid in STREAMING:
        comp = get_compressor(cid)
        peak[cid] = streamed_peak_bytes(comp, comp.config_cls(), shape, calib)
        assert streamed_peak_bytes(comp, comp.config_cls(), _llama_shape(80), calib) == peak[cid], cid
    assert peak["rtn"] == peak["magnitude"] == peak["cpu-inference"] == streamed_memory_bytes(shape)
    assert peak["gptq"] == peak["sparsegpt"] == peak["spqr"] == streamed_memory_bytes(shape, 64, 512)
    hessians = 4 * 11008**2 * 4
    assert peak["gptq"] - peak["wanda"] > 0.9 * hessians
    teal = get_compressor("teal")
    cfg = teal.config_cls(calib_samples=16)
    assert streamed_peak_bytes(teal, cfg, shape, calib) == streamed_peak_bytes(
        teal, cfg, shape, Calibration(16, 512)
    )  # windows beyond calib_samples are not used, so they cost nothing
    assert peak["rtn"] < peak["teal"] < peak["gptq"]
    with pytest.raises(StreamingUnsupported, match="gradients"):
        llm_pruner = get_compressor("llm-pruner")
        streamed_peak_bytes(llm_pruner, llm_pruner.config_cls(), shape, calib)


def test_the_job_estimate_takes_the_streamed_path_for_every_blockwise_method(tmp_path):
    from compressors.base import Calibration
    from jobs.preflight import estimate_cost

    info = inspect_checkpoint(_checkpoint(tmp_path / "src"))
    for cid in STREAMING:
        check = estimate_cost(cid, info, {}, Calibration(4, 48))
        assert "streamed block by block" in check.estimate.note, cid
    check = estimate_cost("cpu-inference", info, {"include_lm_head": True}, Calibration(4, 48))
    assert "streamed" not in check.estimate.note


def test_compress_and_measure_says_which_path_ran(tmp_path):
    from compressors.run import compress_and_measure

    src = _checkpoint(tmp_path / "src")
    common = dict(
        n_calib_samples=4,
        calib_seq_len=48,
        eval_windows=1,
        eval_seq_len=48,
        measure_speed=False,
        export=False,
        archive=None,
        measure_before=False,
        device="cpu",
    )
    r = compress_and_measure(src, "rtn", CFG, out_dir=tmp_path / "rtn", **common)
    assert any("streaming block by block" in line for line in r.log)
    assert read_manifest(r.artifacts.checkpoint_dir)["streamed"]["blocks"] == 2
    r = compress_and_measure(src, "magnitude", {"sparsity": 0.5}, out_dir=tmp_path / "mag", **common)
    assert any("streaming block by block" in line for line in r.log)
    assert read_manifest(r.artifacts.checkpoint_dir)["streamed"]["blocks"] == 2
    r = compress_and_measure(
        src, "cpu-inference", {"include_lm_head": True}, out_dir=tmp_path / "int8", **common
    )
    assert any("whole model in memory (cpu-inference needs the whole model: " in line for line in r.log)
    assert "streamed" not in read_manifest(r.artifacts.checkpoint_dir)


def test_a_model_that_streams_but_cannot_be_measured_whole_is_refused_before_compressing(
    tmp_path, monkeypatch
):
    from compressors.run import compress_and_measure

    src = _checkpoint(tmp_path / "src")
    monkeypatch.setattr("compressors.run.streamed_peak", lambda *a: 1)
    monkeypatch.setattr("compressors.models.available_memory_bytes", lambda: 1000)
    with pytest.raises(ModelLoadError, match="--no-measure"):
        compress_and_measure(src, "rtn", CFG, out_dir=tmp_path / "out", measure_speed=False, archive=None)
    assert not (tmp_path / "out" / "model").exists()


def test_cli_compresses_without_measuring_and_checks_the_device(tmp_path):
    from typer.testing import CliRunner

    from app.cli.main import _register, app

    src = _checkpoint(tmp_path / "src")
    _register()
    runner = CliRunner()
    args = ["compress", str(src), "--method", "gptq", "--bits", "4", "--group-size", "32"]
    args += ["--calib-samples", "2", "--calib-seq-len", "32", "--no-measure", "--out", str(tmp_path / "o")]
    res = runner.invoke(app, [*args, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "streamed block by block on cpu" in res.output
    assert len(packed_modules(load_packed(tmp_path / "o"))) == 14
    res = runner.invoke(app, [*args, "--device", "tpu"])
    assert res.exit_code == 2 and "cpu, cuda or cuda:N" in res.output and "Traceback" not in res.output


_CHILD = textwrap.dedent(
    """
    import json, sys, psutil, torch
    from compressors.base import RunContext, get_compressor
    from compressors.streaming import stream_compress
    comp = get_compressor("rtn")
    cfg = comp.config_cls.from_dict({"bits": 4, "group_size": 128})
    torch.zeros(1)
    base = psutil.Process().memory_info().rss
    report = stream_compress(sys.argv[1], comp, cfg, sys.argv[2], RunContext(), dense_dtype=torch.bfloat16)
    # VmHWM: this address space's peak RSS (ru_maxrss would include the parent's size at fork time)
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    peak = int(hwm.split()[1]) * 1024
    print(json.dumps({"base": base, "peak": peak, "block": report.largest_block_bytes}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from Linux's /proc")
def test_peak_memory_does_not_grow_with_depth(tmp_path):
    """RTN streamed over 2 and 8 blocks of ~17 MB (float32) each, each in a fresh process: the peak above
    the process's size before streaming grows by less than 1.5 blocks (measured: 0.7, allocator noise),
    where holding the model would add six blocks (plus their bf16 copies: ~150 MB)."""
    growth = {}
    block = 0
    for layers in (2, 8):
        src = _checkpoint(
            tmp_path / f"src{layers}",
            shard="20MB",
            hidden_size=512,
            intermediate_size=2048,
            num_attention_heads=8,
            num_key_value_heads=8,
            head_dim=64,
            num_hidden_layers=layers,
        )
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(src), str(tmp_path / f"out{layers}")],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        growth[layers] = r["peak"] - r["base"]
        block = r["block"]
    assert block > 16 * 2**20
    assert growth[8] - growth[2] < 1.5 * block, (growth, block)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gptq_streamed_on_cuda_matches_the_cpu(tmp_path):
    src = _checkpoint(tmp_path / "src")
    calib = _calib()
    cpu = _streamed(src, "gptq", tmp_path / "cpu", calib, device="cpu")
    gpu = _streamed(src, "gptq", tmp_path / "cuda", calib, device="cuda")
    assert read_manifest(gpu)["streamed"]["device"].startswith("cuda")
    # different kernels (TF32 off by default for float32 matmuls, other summation orders): a few codes
    # may move by one step
    _assert_same_codes(cpu, gpu, max_changed=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cid", ["wanda", "sparsegpt", "spqr", "cpu-inference"])
def test_blockwise_methods_streamed_on_cuda_match_the_cpu(tmp_path, cid):
    """The other block-wise methods on CUDA: the same packed layers as on the CPU, and close logits
    (other kernels round otherwise, and a mask or code choice can flip, so not bit for bit)."""
    src = _checkpoint(tmp_path / "src")
    calib = _calib()
    cfg = BLOCKWISE[cid]
    cpu = _streamed(src, cid, tmp_path / "cpu", calib, device="cpu", cfg_dict=cfg)
    gpu = _streamed(src, cid, tmp_path / "cuda", calib, device="cuda", cfg_dict=cfg)
    assert read_manifest(gpu)["streamed"]["device"].startswith("cuda")
    ma, mb = load_packed(cpu), load_packed(gpu)
    pa, pb = packed_modules(ma), packed_modules(mb)
    assert set(pa) == set(pb) and len(pa) == 14 and all(type(pa[n]) is type(pb[n]) for n in pa)
    x = _calib(1, 32, seed=3)
    with torch.no_grad():
        la, lb = ma(x).logits, mb(x).logits
    assert float((la - lb).abs().max()) <= 0.05 * float(la.abs().max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_teal_streamed_on_cuda_matches_the_cpu(tmp_path):
    src = _checkpoint(tmp_path / "src")
    calib = _calib()
    cfg = {"sparsity": 0.4, "kernel": "torch", "calib_samples": 3, "max_samples_per_layer": 1024}
    cpu = _streamed(src, "teal", tmp_path / "cpu", calib, device="cpu", cfg_dict=cfg)
    gpu = _streamed(src, "teal", tmp_path / "cuda", calib, device="cuda", cfg_dict=cfg)
    ta = json.loads((cpu / "config.json").read_text())["shrinkwise_dynamic"]["payload"]["thresholds"]
    tb = json.loads((gpu / "config.json").read_text())["shrinkwise_dynamic"]["payload"]["thresholds"]
    # the same draws (generators on the CPU) of magnitudes the GPU's kernels round otherwise
    assert set(ta) == set(tb) and all(abs(ta[k] - tb[k]) <= 1e-3 * ta[k] for k in ta)
