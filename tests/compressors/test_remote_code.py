"""No remote code anywhere: a checkpoint that ships Python code (``auto_map``) is refused before
transformers reads it, the CLI never prompts, and no code file travels into an output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compressors.models import ModelLoadError, inspect_checkpoint, load_tokenizer
from tests.jobs import checkpoints as ck

ROOT = Path(__file__).resolve().parents[2]
EVIL = "import pathlib, os\npathlib.Path(os.environ['EVIL_MARKER']).write_text('ran')\n"


def _with_remote_code(folder: Path, marker: Path, where: str = "config.json") -> Path:
    ck.tiny_checkpoint(folder)
    cfg = json.loads((folder / where).read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    if where == "tokenizer_config.json":
        cfg["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / where).write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(EVIL)
    return folder


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused_before_transformers_reads_it(tmp_path, monkeypatch, where):
    marker = tmp_path / "ran.txt"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    folder = _with_remote_code(tmp_path / "m", marker, where)
    with pytest.raises(ModelLoadError, match=f"{where}.*auto_map.*never runs remote code"):
        if where == "config.json":
            inspect_checkpoint(folder)
        else:
            load_tokenizer(folder)
    assert not marker.exists()


def test_cli_refuses_remote_code_without_prompting(tmp_path):
    marker = tmp_path / "ran.txt"
    folder = _with_remote_code(tmp_path / "m", marker)
    env = {
        **os.environ,
        "EVIL_MARKER": str(marker),
        "SHRINKWISE_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli.main",
            "compress",
            str(folder),
            "-m",
            "rtn",
            "-o",
            str(tmp_path / "out"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "auto_map" in out and "never runs remote code" in out, out
    assert "trust_remote_code" not in out and "[y/N]" not in out, out  # transformers never asked
    assert not marker.exists()
    assert not list((tmp_path / "out").rglob("*.py")) if (tmp_path / "out").exists() else True


def test_code_files_never_reach_a_saved_checkpoint(tmp_path):
    from compressors.storage import save_packed
    from tests.compressors.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    real_save = type(tok).save_pretrained

    def save_with_code(self, out, *a, **kw):  # what transformers does for a tokenizer with auto_map
        files = real_save(self, out, *a, **kw)
        Path(out, "tokenization_evil.py").write_text(EVIL)
        return files

    type(tok).save_pretrained = save_with_code
    try:
        out = save_packed(tiny_model("llama"), tok, tmp_path / "out", method="rtn", config={})
    finally:
        type(tok).save_pretrained = real_save
    assert (out / "tokenizer.json").is_file()
    assert not list(out.rglob("*.py"))
