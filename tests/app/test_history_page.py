"""History and Run result pages on stored runs, and the Pareto front of the size-vs-quality chart."""

from __future__ import annotations

import pytest

from app.figures.history import FRONT_TRACE, RUN_TRACE, pareto_front, points_from_runs, size_quality_figure
from jobs import queue
from tests.app.conftest import figures, open_page, text_of


def finished_run(model: str, method: str, size_mb: float, ppl: float, tmp=None, **config) -> int:
    run = queue.create_run(
        model_ref="demo", model_name=model, method=method, compressor=method, config=config
    )
    queue.claim_next_run("host:1:t")
    before = {
        "perplexity": 20.0,
        "size_bytes": 540e6,
        "bits_per_weight": None,
        "model_bits_per_weight": 32.0,
        "params": 134.5e6,
        "sparsity": 0.0,
        "decode_tokens_per_s": 30.0,
        "prefill_tokens_per_s": 900.0,
        "peak_memory_bytes": 900e6,
        "generation": "Python is a programming language that is easy",
        "generation_prompt": "Python is a programming language that",
    }
    after = dict(
        before,
        perplexity=ppl,
        size_bytes=size_mb * 1e6,
        bits_per_weight=4.5,
        model_bits_per_weight=7.0,
        generation="Python is a programming language that is used",
    )
    artifacts = {}
    if tmp is not None:
        ckpt = tmp / f"run{run.id}" / "model"
        ckpt.mkdir(parents=True)
        (ckpt / "shrinkwise.json").write_text("{}")
        report = tmp / f"run{run.id}" / "report.md"
        report.write_text("# report")
        artifacts = {
            "checkpoint_dir": str(ckpt),
            "report_md": str(report),
            "export_note": "SpQR's outliers cannot be expressed in compressed-tensors",
        }
    queue.finish_run(
        int(run.id),
        before_metrics=before,
        after_metrics=after,
        artifacts=artifacts,
        samples={
            "prompt": before["generation_prompt"],
            "before": before["generation"],
            "after": after["generation"],
        },
        timings={"compress": 61.0, "total": 140.0},
    )
    return int(run.id)


def test_pareto_front_keeps_only_undominated_points():
    pts = [(100, 5.0), (80, 9.0), (120, 2.0), (110, 6.0), (80, 12.0), (60, 30.0)]
    assert pareto_front(pts) == [5, 1, 0, 2]  # sorted by size; (110, 6) and (80, 12) are dominated
    assert pareto_front([(1, 1), (1, 1)]) == [0, 1]
    assert pareto_front([]) == []


def test_figure_marks_the_front_and_every_run(home):
    ids = [
        finished_run("m", "gptq", 80, 21.0, bits=4),
        finished_run("m", "rtn", 80, 23.0, bits=4),
        finished_run("m", "gptq", 60, 26.0, bits=3),
    ]
    points, original = points_from_runs(queue.list_runs())
    assert original == pytest.approx(540.0)
    fig = size_quality_figure(points, original)
    runs = [t for t in fig.data if t.meta == RUN_TRACE]
    assert sorted(r for t in runs for r, *_ in t.customdata) == sorted(ids)
    (front,) = [t for t in fig.data if t.meta == FRONT_TRACE]
    assert [c[0] for c in front.customdata] == [ids[2], ids[0]]  # rtn at 80 MB is beaten by gptq at 80 MB
    assert [round(y, 1) for y in front.y] == [30.0, 5.0]


def test_history_lists_runs_and_filters_by_method(home):
    finished_run("SmolLM2-135M-Instruct", "gptq", 80, 21.0, bits=4)
    finished_run("SmolLM2-135M-Instruct", "rtn", 80, 23.0, bits=4)
    finished_run("other-model", "gptq", 10, 30.0, bits=4)
    at = open_page("history")
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["method"]) == {"gptq", "rtn"}
    spec = figures(at)[0]
    assert sum(len(t.get("customdata", [])) for t in spec["data"] if t.get("meta") == RUN_TRACE) == 2
    at.multiselect(key="hist_methods").set_value(["rtn"]).run()
    assert list(at.dataframe[0].value["method"]) == ["rtn"]
    assert "1 of 3 runs." in text_of(at)


def test_history_url_selects_the_model(home):
    finished_run("a-model", "gptq", 80, 21.0)
    finished_run("b-model", "gptq", 80, 21.0)
    at = open_page("history", {"model": "b-model"})
    assert list(at.dataframe[0].value["model"]) == ["b-model"]
    assert at.selectbox(key="hist_chart_model").value == "b-model"


def test_empty_history_says_how_to_start(home):
    at = open_page("history")
    assert "No runs yet" in text_of(at)


def test_result_page_shows_before_after_generations_settings_and_downloads(home, tmp_path):
    run = finished_run("SmolLM2-135M-Instruct", "gptq", 80, 21.0, tmp=tmp_path, bits=4, group_size=128)
    at = open_page("run_result", {"run": str(run)})
    assert not at.exception
    # the verdict first, then the table with every column (nothing dropped for a narrow screen)
    assert "4-bit GPTQ: 6.8× smaller, perplexity +5.0%, decode as fast on this machine" in text_of(
        at
    ).replace("\\", "")
    table = at.table[0].value
    assert list(table.columns) == ["figure", "before", "after", "change"]
    row = table[table["figure"] == "Perplexity (held-out)"].iloc[0]
    assert (row["before"], row["after"], row["change"]) == ("20.000", "21.000", "+5.0%")
    size = table[table["figure"] == "Size on disk"].iloc[0]
    assert (size["before"], size["after"]) == ("540.0 MB", "80.0 MB")
    texts = [t.value for t in at.text]
    assert (
        "Python is a programming language that is easy" in texts
        and "Python is a programming language that is used" in texts
    )
    settings = at.dataframe[0].value
    assert dict(zip(settings["setting"], settings["value"])) == {"bits": "4", "group_size": "128"}
    labels = {b.proto.label for b in at.get("download_button")}
    assert labels == {"Download Shrinkwise packed (.zip)", "Report (Markdown)", "Report (JSON)"}
    assert "cannot be expressed in compressed-tensors" in text_of(at).replace("\\", "")


def test_result_page_leads_from_the_verdict_to_serving_each_format(home, tmp_path):
    """Verdict, then "Serve it": a block per format with its download and the exact commands (those of a
    format the run lacks replaced by the reason), then the details."""
    run = finished_run("SmolLM2-135M-Instruct", "gptq", 80, 21.0, tmp=tmp_path, bits=4, group_size=64)
    folder = tmp_path / f"run{run}"
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    (folder / "compressed-tensors").mkdir()
    (folder / "compressed-tensors" / "config.json").write_text("{}")
    art = dict(queue.get_run(run).artifacts)
    art.update(
        gguf_path=str(folder / "model.gguf"),
        gguf_type="Q4_1",
        gguf_note="4-bit codes carried over bit for bit",
        export_dir=str(folder / "compressed-tensors"),
    )
    art.pop("export_note")
    _set_row(run, artifacts=art)
    at = open_page("run_result", {"run": str(run)})
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[:3] == [
        "Download GGUF (.gguf)",
        "Download compressed-tensors (.zip)",
        "Download Shrinkwise packed (.zip)",
    ]
    codes = [c.value for c in at.code]
    assert f"llama-cli -m run-{run}-model.gguf -p 'Python is a programming language that' -n 32 -st" in codes
    assert f"llama-server -m run-{run}-model.gguf --port 8080" in codes
    assert any(f'Llama(model_path="run-{run}-model.gguf")' in c for c in codes)
    assert "vllm serve ./compressed-tensors" in codes
    assert any('AutoModelForCausalLM.from_pretrained("./compressed-tensors")' in c for c in codes)
    assert any(c.startswith("shrinkwise generate ./model --prompt") for c in codes)
    # the order a reader meets: verdict, Serve it, then the details
    heads = [
        str(e.value).replace("\\", "")
        for e in at.main
        if getattr(e, "type", None) in ("markdown", "subheader")
        and str(e.value).startswith(("####", "S", "B"))
    ]
    assert heads[0].startswith("#### 4-bit GPTQ") and heads[1:3] == ["Serve it", "Before and after"], heads
    # a run without a GGUF keeps the block, with the reason
    art.pop("gguf_path")
    art["gguf_note"] = "2-bit codes have no llama.cpp block type"
    _set_row(run, artifacts=art)
    at = open_page("run_result", {"run": str(run)})
    assert "Download GGUF (.gguf)" not in [b.proto.label for b in at.get("download_button")]
    assert "Not available: 2-bit codes have no llama" in " ".join(c.value for c in at.caption).replace(
        "\\", ""
    )


def test_result_page_of_a_failed_run_shows_the_error(home):
    run = queue.create_run(model_ref="demo", model_name="m", method="gptq", compressor="gptq")
    queue.claim_next_run("host:1:t")
    queue.fail_run(int(run.id), "loading the weights of demo failed: out of memory")
    at = open_page("run_result", {"run": str(run.id)})
    assert any("out of memory" in e.value for e in at.error)


def test_result_page_compares_each_stage_with_its_estimate(home, tmp_path):
    run = finished_run("SmolLM2-135M-Instruct", "rtn", 80, 21.0, tmp=tmp_path, bits=4, group_size=64)
    after = dict(queue.get_run(run).after_metrics)
    after["estimate"] = {
        "seconds": 50.0,
        "peak_memory_bytes": 1e9,
        "stages": {
            "load": 2.0,
            "measure before": 0.0,
            "compress": 50.0,
            "save": 1.0,
            "measure after": 30.0,
            "export": 1.0,
            "total": 84.0,
        },
    }
    _set_row(run, after_metrics=after)
    at = open_page("run_result", {"run": str(run)})
    timings = at.dataframe[1].value
    assert list(timings.columns) == ["stage", "estimated", "took"]
    rows = {r["stage"]: (r["estimated"], r["took"]) for _, r in timings.iterrows()}
    assert rows["compress"] == ("50.0 s", "1 min 01 s")
    assert rows["all stages"] == ("1 min 24 s", "2 min 20 s")
    assert rows["measure after (reloaded)"] == ("30.0 s", "–")  # estimated; this stored run did not time it


def _set_row(run_id: int, **columns) -> None:
    from knowledge.db import session
    from knowledge.tables import CompressionRun

    with session() as s:
        row = s.get(CompressionRun, run_id)
        for k, v in columns.items():
            setattr(row, k, v)
        s.add(row)
