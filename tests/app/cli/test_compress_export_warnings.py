"""``shrinkwise compress`` says which exports its settings block before it starts (jobs.export_check)."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.compressors.tiny import tiny_model, tiny_tokenizer


def test_compress_prints_the_export_blockers_before_the_run(tmp_path, monkeypatch):
    from app.cli import compress as cli
    from app.cli.main import _register, app

    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)  # input widths 72 and 136
    tiny_tokenizer().save_pretrained(folder)
    started: list[str] = []

    def fake_run(*args, **kwargs):  # the warnings must come before the run starts
        started.append("run")
        raise cli.typer.Exit(0)

    monkeypatch.setattr("compressors.run.compress_and_measure", fake_run)
    _register()
    args = ["compress", str(folder), "--method", "gptq", "--group-size", "16", "--out", str(tmp_path / "o")]
    args += ["--set", "static_groups=false"]  # act-order with permuted groups (the default is static)
    res = CliRunner().invoke(app, args)
    assert started == ["run"], res.output
    err = " ".join(res.stderr.split())
    assert "warning: Group size 16 does not divide the input widths 72, 136" in err
    assert "Use g=8" in err and "Act-order" in err and "note: GGUF" in err
    assert "estimate: about" in err and "measure before" in err and "export" in err  # every stage
    res = CliRunner().invoke(app, [*args[:5], "8", "--out", str(tmp_path / "p")])  # static groups: exports
    assert "warning:" not in res.stderr
    res = CliRunner().invoke(app, [*args, "--no-export"])
    assert "warning:" not in res.stderr
    monkeypatch.setattr("compressors.run.compress_only", fake_run)
    res = CliRunner().invoke(app, [*args, "--no-measure"])  # load, compress and save only: no export either
    err = " ".join(res.stderr.split())
    assert "estimate: about" in err and "compress" in err and "save" in err, err
    assert "measure" not in err.split("estimate:")[1] and "export" not in err.split("estimate:")[1]
    assert "warning:" not in err


def test_plain_progress_prints_a_moving_count_as_one_stage(capsys):
    """Per-window and per-token counts change the shown stage every report; a log file still gets a line
    per stage change or message and otherwise one every few seconds, not one per token."""
    from app.cli.compress import _PlainProgress

    clock = [0.0]
    plain = _PlainProgress(every_s=5.0, clock=lambda: clock[0])
    for i in range(20):
        plain("measure after", 0.8, "") if i == 0 else plain(
            f"measure after — {i}/20 windows, ETA 00:{20 - i:02d}", 0.8, ""
        )
        clock[0] += 0.5
    plain("export — 0/1 formats", 0.97, "")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines  # the stage, one 5 s later (of 19 counts in 9.5 s), the next stage
    assert "[measure after — 10/20 windows, ETA 00:10]" in lines[1] and "[export — 0/1 formats]" in lines[-1]


def test_compress_says_which_evaluation_windows_and_why(tmp_path, monkeypatch):
    """Without --eval-windows the run bounds them itself; the pre-run lines say which and why, and the
    run is called with None so it chooses the same (issue 12)."""
    from app.cli.main import _register, app

    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    seen: list[dict] = []

    def fake_run(*args, **kwargs):
        seen.append(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("compressors.run.compress_and_measure", fake_run)
    _register()
    res = CliRunner().invoke(app, ["compress", str(folder), "--method", "rtn", "--out", str(tmp_path / "o")])
    err = " ".join(res.stderr.split())
    assert "evaluation: 20 windows of 512 tokens (the default" in err, err  # a tiny model: cheap
    assert seen[0]["eval_windows"] is None and seen[0]["eval_seq_len"] is None
    res = CliRunner().invoke(
        app, ["compress", str(folder), "--method", "rtn", "--out", str(tmp_path / "p"), "--eval-windows", "3"]
    )
    assert "evaluation: 3 windows of 512 tokens (set by the user)" in " ".join(res.stderr.split())
    assert seen[1]["eval_windows"] == 3


def test_compress_a_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    from app.cli.main import _register, app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    _register()
    res = CliRunner().invoke(
        app, ["compress", "someorg/somemodel", "--method", "rtn", "--out", str(tmp_path / "o")]
    )
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2 and "Traceback" not in err
    assert "cannot download someorg/somemodel" in err and str(tmp_path / "models") in err


def test_models_lists_the_models_folder_and_the_cache_and_compress_takes_a_listed_name(tmp_path, monkeypatch):
    import json

    from app.cli.main import _register, app
    from tests.jobs.test_model_sources import fake_cache_repo

    root = tmp_path / "models"
    for sub in ("llama-tiny", "org/other"):
        tiny_model("llama").save_pretrained(root / sub)
        tiny_tokenizer().save_pretrained(root / sub)
    fake_cache_repo(tmp_path / "hf", "someorg/cached", {"config.json": b"{}", "model.safetensors": b"w"})
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    _register()
    res = CliRunner().invoke(app, ["models", "--json"])
    rows = json.loads(res.stdout)
    assert [(r["source"], r["name"]) for r in rows] == [
        ("models folder", "llama-tiny"),
        ("models folder", "org/other"),
        ("Hugging Face cache", "someorg/cached (main)"),
    ]
    seen: list[tuple] = []

    def fake_run(model, *args, **kwargs):
        seen.append(model)
        raise SystemExit(0)

    monkeypatch.setattr("compressors.run.compress_and_measure", fake_run)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # org/other is found under the models folder: no download
    for name in ("llama-tiny", "org/other"):
        CliRunner().invoke(app, ["compress", name, "--method", "rtn", "--out", str(tmp_path / "o")])
    assert seen == [str((root / "llama-tiny").resolve()), str((root / "org" / "other").resolve())]
