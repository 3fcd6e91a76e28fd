"""The evaluation harness and compress_and_measure on tiny models; the CLI's exit codes and output."""

import json
import math
import threading

import pytest
import torch
from typer.testing import CliRunner

from compressors.base import Cancelled, ConfigError
from compressors.evaluate import evaluate, storage_bits
from compressors.run import compress_and_measure
from compressors.text import TextTooShort, default_split
from tests.compressors.tiny import rtn_quantize_model, tiny_model, tiny_tokenizer

FAST = dict(n_windows=2, seq_len=32, prefill_len=16, decode_tokens=4, max_new_tokens=4)
RUN_FAST = dict(n_calib_samples=4, calib_seq_len=32, eval_windows=2, eval_seq_len=32, archive=None)


@pytest.fixture(scope="module")
def eval_text():
    return default_split().evaluation[:20000]


@pytest.fixture
def tiny_folder(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_evaluate_dense_tiny_model(eval_text):
    model = tiny_model("llama")
    r = evaluate(model, tiny_tokenizer(), eval_text, **FAST)
    assert math.isfinite(r.perplexity) and 1 < r.perplexity < 2 * 320  # random model: near uniform over 320
    assert r.eval_tokens == 64 and r.bits_per_weight_model == 32.0 and r.bits_per_weight_compressed is None
    assert r.n_params == sum(p.numel() for p in model.parameters())
    assert r.decode_tokens_per_s > 0 and r.prefill_tokens_per_s > 0 and r.peak_rss_bytes > 0
    assert isinstance(r.generation, str) and json.dumps(r.to_dict())


def test_evaluate_reports_bits_of_packed_layers(eval_text):
    model = rtn_quantize_model(tiny_model("mistral"), bits=4, group_size=32)
    r = evaluate(model, tiny_tokenizer(), eval_text, measure_speed=False, **FAST)
    # 64-wide layers, g=32: 4 bits + 16/32 (fp16 scale) + 4/32 (packed zero) = 4.625 bits
    assert r.bits_per_weight_compressed == pytest.approx(4.625, abs=0.01)
    total, params, _, _ = storage_bits(model)
    assert r.bits_per_weight_model == pytest.approx(total / params)
    assert r.packed_layer_types == {"quantized_linear": 14}


def test_sparsity_counts_pruned_weights_not_rounding_zeros():
    """A 2-bit grid rounds many weights to exactly zero; those are stored codes, not pruned weights, so a
    quantized model's sparsity is 0 (4-bit runs used to report "4.5% -> 13.7%"). Pruned layers count."""
    from compressors.evaluate import linear_sparsity
    from compressors.packed import packed_modules
    from jobs.ui import comparison_rows

    model = rtn_quantize_model(tiny_model("llama"), bits=2, group_size=32)
    assert any(bool((m.weight == 0).any()) for m in packed_modules(model).values()), "the test needs zeros"
    assert linear_sparsity(model) == 0.0
    pruned = tiny_model("llama")
    from compressors.base import CompressorId, RunContext, get_compressor

    comp = get_compressor(CompressorId("magnitude"))
    comp.compress(pruned, None, comp.config_cls.from_dict({"sparsity": 0.5}), RunContext())
    assert linear_sparsity(pruned) == pytest.approx(0.5, abs=0.01)
    rows = {r["figure"]: r for r in comparison_rows({"sparsity": 0.0}, {"sparsity": 0.148})}
    assert rows["Sparsity of linear layers"]["change"] == "+14.8 pts"  # a share: points, not +inf %


def test_evaluate_needs_enough_text():
    with pytest.raises(TextTooShort, match="need 64 tokens"):
        evaluate(tiny_model("llama"), tiny_tokenizer(), "too short", **FAST)


def test_compress_and_measure_end_to_end(tiny_folder, tmp_path):
    seen = []
    r = compress_and_measure(
        tiny_folder,
        "rtn",
        {"bits": 4, "group_size": 32},
        out_dir=tmp_path / "run",
        progress=lambda s, f, m: seen.append((s, f)),
        **RUN_FAST,
    )
    fracs = [f for _, f in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    stages = {s for s, _ in seen}
    assert {"load", "measure before", "save", "measure after", "done"} <= stages
    assert r.after.bits_per_weight_compressed < 5.5 and r.before.bits_per_weight_model == 32.0
    assert r.after.size_on_disk_bytes < r.before.size_on_disk_bytes
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["after"]["perplexity"] == pytest.approx(r.after.perplexity)
    # every line once: the compressor's own (RTN reports each layer) and the run's
    layer_lines = [line.split(" ", 1)[1] for line in report["log"] if "[block " in line]
    assert layer_lines and len(layer_lines) == len(set(layer_lines))
    assert len(report["log"]) == len({line.split(" ", 1)[1] for line in report["log"]})
    manifest = json.loads((tmp_path / "run" / "model" / "shrinkwise.json").read_text())
    assert manifest["results"]["after"]["perplexity"] == pytest.approx(r.after.perplexity)


def test_bad_setting_is_refused_before_loading(tiny_folder, tmp_path):
    with pytest.raises(ConfigError, match="bits"):
        compress_and_measure(tiny_folder, "rtn", {"bits": 5}, out_dir=tmp_path / "r", **RUN_FAST)
    with pytest.raises(ConfigError, match="unknown setting"):
        compress_and_measure(tiny_folder, "rtn", {"nope": 1}, out_dir=tmp_path / "r", **RUN_FAST)


def test_cancel_stops_the_run(tiny_folder, tmp_path):
    cancel = threading.Event()

    def progress(stage, frac, msg):
        if stage == "measure before" and frac > 0.06:
            cancel.set()

    with pytest.raises(Cancelled):
        compress_and_measure(
            tiny_folder, "rtn", {}, out_dir=tmp_path / "r", progress=progress, cancel_event=cancel, **RUN_FAST
        )
    assert not (tmp_path / "r" / "model").exists()


def test_cli_compress_methods_and_errors(tiny_folder, tmp_path):
    from app.cli.main import _register, app

    _register()
    runner = CliRunner()
    res = runner.invoke(app, ["methods", "--json"])
    assert res.exit_code == 0 and "cpu-inference" in res.output
    res = runner.invoke(
        app,
        [
            "compress",
            str(tiny_folder),
            "--method",
            "rtn",
            "--bits",
            "3",
            "--group-size",
            "32",
            "--out",
            str(tmp_path / "o"),
            "--eval-windows",
            "2",
            "--eval-seq-len",
            "32",
            "--no-export",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{") :])
    assert data["config"]["bits"] == 3 and data["after"]["bits_per_weight_compressed"] < 4.5
    res = runner.invoke(app, ["generate", str(tmp_path / "o" / "model"), "--prompt", "def", "-n", "3"])
    assert res.exit_code == 0 and res.stdout.startswith("def")
    res = runner.invoke(
        app, ["compress", str(tiny_folder), "--method", "rtn", "--bits", "7", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "bits" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app, ["compress", str(tmp_path / "missing"), "--method", "rtn", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(
        app, ["compress", str(tiny_folder), "--method", "nosuch", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "known" in res.output


def test_cpu_inference_int8_saves_packed_and_matches_float(tmp_path):
    from compressors.base import RunContext, get_compressor
    from compressors.methods.cpu_inference import Int8DynamicLinear
    from compressors.packed import packed_modules
    from compressors.storage import load_packed, save_packed

    model = tiny_model("qwen2")
    tokens = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(tokens).logits
    comp = get_compressor("cpu-inference")
    comp.compress(model, None, comp.config_cls(), RunContext())
    assert all(isinstance(m, Int8DynamicLinear) for m in packed_modules(model).values())
    with torch.no_grad():
        out = model(tokens).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    save_packed(model, None, tmp_path, method="cpu-inference", config={})
    with torch.no_grad():
        assert torch.allclose(load_packed(tmp_path)(tokens).logits, out, atol=1e-5)
    m = next(iter(packed_modules(model).values()))
    assert (
        m.stored_bits() == m.n_weights * 8 + m.out_features * 32 + m.out_features * 32
    )  # int8 + fp32 scale + bias


def test_int8_lm_head_of_a_tied_model_saves_and_loads(tmp_path):
    from compressors.base import RunContext, get_compressor
    from compressors.methods.cpu_inference import Int8DynamicLinear
    from compressors.storage import load_packed, save_packed

    model = tiny_model("llama")  # tied embeddings
    comp = get_compressor("cpu-inference")
    comp.compress(model, None, comp.config_cls(include_lm_head=True), RunContext())
    tokens = torch.randint(0, 300, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(tokens).logits
    save_packed(model, None, tmp_path, method="cpu-inference", config={"include_lm_head": True})
    loaded = load_packed(tmp_path)
    assert isinstance(loaded.lm_head, Int8DynamicLinear)
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, ref)


def test_cli_evaluate_json(tiny_folder):
    from app.cli.main import _register, app

    _register()
    res = CliRunner().invoke(
        app, ["evaluate", str(tiny_folder), "--eval-windows", "2", "--eval-seq-len", "32", "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{") :])
    assert data["model"]["architecture"] == "LlamaForCausalLM" and data["result"]["eval_tokens"] == 64
    res = CliRunner().invoke(app, ["evaluate", str(tiny_folder / "config.json") + ".missing"])
    assert res.exit_code == 2


def test_a_run_refuses_an_unsupported_architecture_before_loading(tmp_path, monkeypatch):
    """compress_and_measure (the CLI's path) checks the architecture from the config before loading."""
    import compressors.run as run_mod
    from compressors.base import CompressionError
    from tests.jobs.checkpoints import tiny_checkpoint

    gpt2 = tiny_checkpoint(tmp_path / "tiny-gpt2", arch="gpt2")

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the architecture was checked")

    monkeypatch.setattr(run_mod, "load_model", no_load)
    with pytest.raises(CompressionError, match="not 'gpt2'"):
        run_mod.compress_and_measure(str(gpt2), "lazyllm", {}, out_dir=tmp_path / "out")


def test_cli_progress_goes_to_a_log_file_as_plain_lines(tiny_folder, tmp_path):
    """With stderr redirected to a file (no terminal), the CLI still reports every stage as it happens;
    it used to print nothing there until the end (a GPTQ log stayed empty for almost two hours)."""
    import subprocess
    import sys

    log_file = tmp_path / "compress.log"
    cmd = [sys.executable, "-c", "from app.cli.main import main; main()", "compress", str(tiny_folder)]
    cmd += ["--method", "rtn", "--bits", "4", "--group-size", "32", "--out", str(tmp_path / "o")]
    cmd += ["--eval-windows", "2", "--eval-seq-len", "32", "--no-export"]
    with log_file.open("w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    assert proc.returncode == 0, log_file.read_text()
    lines = log_file.read_text().splitlines()
    stages = [line.split("[", 1)[1].split("]", 1)[0] for line in lines if "% [" in line]
    assert stages[0] == "load" and "measure before" in stages and "measure after" in stages
    # the compressor's own layer progress is shown, counted over the whole compression
    assert any(s.startswith("compress · block 1/2 — ") and "/14 layers" in s for s in stages), stages
    assert all("\x1b[" not in line for line in lines), "no terminal escape codes in a log file"


def test_dense_tensors_keep_the_source_16_bit_dtype_and_gguf_sources_get_bfloat16(tmp_path):
    """The tensors a compressor leaves alone (here the 320x64 embedding and the norms) were saved in
    float32 whatever the source held; a GGUF source made the output three times its input."""
    from safetensors import safe_open

    from compressors.storage import WEIGHTS, resolve_dense_dtype

    assert resolve_dense_dtype("auto", "gguf", "float32") == torch.bfloat16
    assert resolve_dense_dtype("auto", "demo", "float32") == torch.bfloat16  # a float32 copy of a GGUF
    assert resolve_dense_dtype("auto", "folder", "float16") == torch.float16
    assert resolve_dense_dtype("auto", "folder", "float32") == torch.float32
    assert resolve_dense_dtype("float16", "gguf", "float32") == torch.float16
    with pytest.raises(ValueError, match="choose one of auto"):
        resolve_dense_dtype("int3", "folder", "float32")

    src = tmp_path / "bf16"
    tiny_model("llama").to(torch.bfloat16).save_pretrained(src)
    tiny_tokenizer().save_pretrained(src)
    res = compress_and_measure(
        str(src), "rtn", {"bits": 4, "group_size": 32}, out_dir=tmp_path / "o", **RUN_FAST
    )
    with safe_open(str(tmp_path / "o" / "model" / WEIGHTS), "pt") as f:
        dense = {
            k: f.get_slice(k).get_dtype() for k in f.keys() if not k.endswith(("qweight", "scales", "qzeros"))
        }
    assert dense["model.embed_tokens.weight"] == "BF16"
    assert res.after.bits_per_weight_model < res.before.bits_per_weight_model  # counted as stored: 16-bit
    assert math.isfinite(res.after.perplexity)
    with pytest.raises(ConfigError, match="dense dtype"):
        compress_and_measure(str(src), "rtn", {}, out_dir=tmp_path / "x", dense_dtype="int3", **RUN_FAST)


def test_a_gguf_source_states_its_real_bits_per_weight(eval_text, tmp_path):
    """A GGUF is quantized throughout; the "before" column shows its bytes over its parameters (the demo's
    Q4_1 file: about 5-6 bits), not the 32 of its float32 dequantization in memory."""
    from compressors.demo import demo_gguf_path
    from compressors.models import inspect_checkpoint
    from compressors.run import describe_gguf_source

    before = evaluate(tiny_model("llama"), tiny_tokenizer(), eval_text, measure_speed=False, **FAST)
    assert before.bits_per_weight_model == 32.0
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"\0" * (before.n_params * 5 // 8))  # a 5-bit file of this many parameters
    describe_gguf_source(before, fake)
    assert before.bits_per_weight_model == pytest.approx(5.0, abs=0.01)
    assert before.size_on_disk_bytes == fake.stat().st_size
    info = inspect_checkpoint(demo_gguf_path())  # and the real demo file is about 5-6 bits per weight
    assert 4.5 < 8 * info.size_on_disk_bytes / info.n_params < 7


def test_a_checkpoint_that_grew_is_explained_on_the_result_page():
    from jobs.ui import size_growth_warning

    assert size_growth_warning({"size_bytes": 253e6}, {"size_bytes": 759e6}).startswith(
        "The compressed checkpoint (759"
    )
    assert size_growth_warning({"size_bytes": 541e6}, {"size_bytes": 172e6}) is None
    assert size_growth_warning({}, {"size_bytes": 172e6}) is None


def test_a_gemma3_model_with_a_bos_tokenizer_runs_end_to_end(tmp_path):
    """The layout issue reports came from (Gemma-3: tied embeddings, a tokenizer that requires BOS), next
    to the Llama-shaped runs: GPTQ calibrates and the harness measures on windows that start with BOS,
    the checkpoint names its class and is refused by plain transformers, and it loads back in Shrinkwise."""
    from transformers import AutoModelForCausalLM

    from compressors.models import load_model
    from compressors.text import default_split, eval_windows
    from tests.compressors.tiny import tiny_bos_tokenizer, tiny_config

    src = tmp_path / "gemma3"
    tok = tiny_bos_tokenizer()
    cfg = tiny_config("gemma3_text")
    cfg.vocab_size = len(tok)  # the <bos> the tokenizer adds is one more id
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(src)
    tok.save_pretrained(src)
    res = compress_and_measure(
        str(src), "gptq", {"bits": 4, "group_size": 32}, out_dir=tmp_path / "o", **RUN_FAST
    )
    assert math.isfinite(res.before.perplexity) and math.isfinite(res.after.perplexity)
    assert res.calibration_shape == [4, 32]
    windows = eval_windows(tok, default_split().evaluation, 2, 32)
    assert windows[:, 0].tolist() == [tok.bos_token_id] * 2
    with pytest.raises((ValueError, KeyError), match="shrinkwise-packed"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "o" / "model")
    model, _ = load_model(str(tmp_path / "o" / "model"), with_tokenizer=False)
    assert model.config.architectures == ["Gemma3ForCausalLM"] and model.config.tie_word_embeddings


def test_the_original_is_measured_once_per_model_files_and_text(tiny_folder, tmp_path, monkeypatch):
    """A second method on the same model reuses the original's measurement (on a 7B model it can take
    longer than the compression); changed files, other windows or --remeasure measure again."""
    import os

    import compressors.run as run_mod

    calls = []
    real = run_mod.evaluate

    def counting(*a, **k):
        calls.append(k.get("checkpoint_dir"))
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "evaluate", counting)
    fast = {**RUN_FAST, "measure_speed": False}
    first = compress_and_measure(str(tiny_folder), "rtn", {"bits": 4}, out_dir=tmp_path / "a", **fast)
    assert len(calls) == 2  # before and after
    second = compress_and_measure(str(tiny_folder), "magnitude", {}, out_dir=tmp_path / "b", **fast)
    assert len(calls) == 3, "the original was measured again"
    assert second.before.perplexity == first.before.perplexity
    assert any("reused" in line for line in second.log)
    compress_and_measure(str(tiny_folder), "rtn", {}, out_dir=tmp_path / "c", reuse_before=False, **fast)
    assert len(calls) == 5
    other = {**fast, "eval_windows": 1}
    compress_and_measure(str(tiny_folder), "rtn", {}, out_dir=tmp_path / "d", **other)
    assert len(calls) == 7, "other windows are another measurement"
    weights = next(tiny_folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    compress_and_measure(str(tiny_folder), "rtn", {}, out_dir=tmp_path / "e", **fast)
    assert len(calls) == 9, "changed files are measured again"


def test_evaluate_reports_every_window_speed_pass_and_generated_token(eval_text):
    """A slow model still reports every few seconds: after each window, each forward pass of the speed
    test and each generated token (measure after once sat at 91-94% for nine minutes without a word)."""
    seen: list[tuple[str, float, object]] = []
    evaluate(
        tiny_model("llama"),
        tiny_tokenizer(),
        eval_text,
        **FAST,
        progress=lambda s, f, c: seen.append((s, f, c)),
    )
    counts = {}
    for stage, _, count in seen:
        if count is not None:
            counts.setdefault((stage, count.unit, count.total), []).append(count.done)
    assert counts[("perplexity", "windows", 2)] == [0, 1, 2]
    assert counts[("speed", "speed-test passes", 10)] == list(range(1, 11))  # 2 repeats x (prefill + 4)
    generated = counts[("generate", "generated tokens", 4)]
    assert generated == sorted(generated) and generated[-1] == 4 and len(generated) >= 3
    fractions = [f for _, f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_the_run_estimates_every_stage_it_times(tiny_folder, tmp_path):
    """The stages a run times are the stages its pre-run estimate covers (a stage added to one and not
    the other fails here), and the estimate is recorded with the result for the result page."""
    from compressors.run import RUN_STAGES

    shown: list[str] = []
    res = compress_and_measure(
        tiny_folder,
        "rtn",
        {"bits": 4, "group_size": 32},
        out_dir=tmp_path / "r",
        progress=lambda s, f, m: shown.append(s),
        **RUN_FAST,
    )
    assert [k for k in res.timings if k != "total"] == list(RUN_STAGES)
    # every stage after loading reports what it has done: "<stage> — k/n <unit>"
    for stage, unit in [
        ("measure before", "windows"),
        ("compress · block 2/2", "layers"),
        ("save", "files"),
        ("measure after", "windows"),
        ("measure after", "generated tokens"),
        ("export", "formats"),
    ]:
        assert any(s.startswith(f"{stage} — ") and f" {unit}" in s for s in shown), (
            stage,
            unit,
            [x for x in shown if "file" in x or "save" in x],
        )
    stages = res.estimate["stages"]
    assert list(stages) == [*RUN_STAGES, "total"] and all(v >= 0 for v in stages.values())
    assert any(line.split(" ", 1)[1].startswith("estimate: load") for line in res.log)
