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
    res = CliRunner().invoke(app, args)
    assert started == ["run"], res.output
    err = " ".join(res.stderr.split())
    assert "warning: Group size 16 does not divide the input widths 72, 136" in err
    assert "Use g=8" in err and "Act-order" in err and "note: GGUF" in err
    res = CliRunner().invoke(app, [*args[:5], "8", "--set", "act_order=false", "--out", str(tmp_path / "p")])
    assert "warning:" not in res.stderr
    res = CliRunner().invoke(app, [*args, "--no-export"])
    assert "warning:" not in res.stderr
