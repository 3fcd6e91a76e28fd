"""The dynamic methods through the platform: compress_and_measure and `shrinkwise compress` save the
untouched weights plus the record, and loading the checkpoint re-installs the method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressors.dynamic import manifest
from compressors.dynamic.teal import installed_states
from compressors.dynamic.tokens import installed_plan
from tests.compressors.dynamic.models import deep_tiny
from tests.compressors.tiny import tiny_tokenizer

FAST = dict(
    n_calib_samples=4,
    calib_seq_len=64,
    eval_windows=2,
    eval_seq_len=64,
    measure_speed=False,
    export=False,
    archive=None,
)


def _checkpoint(folder: Path, arch: str = "llama") -> Path:
    model = deep_tiny(arch, layers=4)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,config",
    [
        ("lazyllm", {"ratio": 0.5, "start": 0.25, "stages": 2}),
        ("aim", {"merge_ratio": 0.1, "prune_ratio": 0.3}),
        ("teal", {"sparsity": 0.4, "kernel": "torch", "calib_samples": 4}),
    ],
)
def test_compress_and_measure_saves_original_weights_and_reloads_the_method(tmp_path, method, config):
    from safetensors.torch import load_file

    from compressors.models import load_model
    from compressors.run import compress_and_measure

    src = _checkpoint(tmp_path / "src")
    res = compress_and_measure(src, method, config, out_dir=tmp_path / "out", **FAST)
    ckpt = Path(res.artifacts.checkpoint_dir)
    original = load_file(str(src / "model.safetensors"))
    saved = load_file(str(ckpt / "model.safetensors"))
    for k, v in original.items():  # weights untouched: byte-identical tensors
        assert torch.equal(saved[k], v), k
    model, _ = load_model(ckpt, with_tokenizer=False)
    section = manifest.dynamic_section(model)
    assert section["method"] == method and section["weights"] == "original (untouched)"
    if method == "teal":
        assert len(installed_states(model)) == 4 * 7
        assert res.after.perplexity != pytest.approx(res.before.perplexity, rel=1e-6)
    else:
        assert installed_plan(model) is not None
        # the harness's window perplexity is a no-cache scoring pass: unchanged by token pruning
        assert res.after.perplexity == pytest.approx(res.before.perplexity, rel=1e-5)


@pytest.mark.slow
def test_cli_compress_runs_lazyllm(tmp_path):
    from typer.testing import CliRunner

    from app.cli.main import _register, app

    if not app.registered_commands:
        _register()
    src = _checkpoint(tmp_path / "src", "qwen2")
    result = CliRunner().invoke(
        app,
        [
            "compress",
            str(src),
            "--method",
            "lazyllm",
            "--set",
            "ratio=0.4",
            "--set",
            "revive=false",
            "--out",
            str(tmp_path / "out"),
            "--eval-windows",
            "2",
            "--eval-seq-len",
            "64",
            "--no-export",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = (tmp_path / "out" / "model" / "config.json").read_text()
    assert '"shrinkwise_dynamic"' in cfg and '"revive": false' in cfg
