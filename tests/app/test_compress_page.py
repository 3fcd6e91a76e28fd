"""The Compress page: what the model is before anything runs, the form from the compressor's config,
pre-filled from the URL, the cost estimate, and a job that is queued, followed live, cancelled, found
again after a reload, and finished with a link to its result. Tiny random models only."""

from __future__ import annotations

import time

import pytest

from jobs import queue
from jobs.worker import Worker
from knowledge import runs as knowledge_runs
from knowledge.tables import RunStatus
from tests.app.conftest import open_page, text_of
from tests.jobs.checkpoints import tiny_checkpoint

FAKE = "tests.jobs.fake_executors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def run_button(at):
    return at.button(key="cmp_run")


def wait_for(pred, worker: Worker | None = None, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        if worker is not None:
            worker.tick()
        time.sleep(0.1)


def test_shows_what_the_model_is_before_anything_runs(home, tiny):
    at = open_page("compress", {"source": "path", "path": str(tiny)})
    m = metrics(at)
    assert m["Architecture"] == "LlamaForCausalLM"
    assert m["Layers"] == "2" and m["Weights dtype"] == "float32"
    assert m["Parameters"] == "113,256"
    assert "Estimated peak memory" in m and "Estimated time" in m
    assert not at.error
    assert run_button(at).disabled is False
    assert queue.list_runs() == []  # looking runs nothing


def test_token_pruning_refuses_an_unsupported_architecture_before_anything_runs(home, tmp_path):
    """LazyLLM/AIM on a model type they do not support: refused from the config, Run disabled (it used
    to be refused only after loading and measuring the original)."""
    gpt2 = tiny_checkpoint(tmp_path / "tiny-gpt2", arch="gpt2")
    for cid in ("lazyllm", "aim"):
        at = open_page("compress", {"source": "path", "path": str(gpt2), "compressor": cid})
        assert at.selectbox(key="cmp_method").value == cid
        assert any("cannot run on this model" in e.value and "gpt2" in e.value for e in at.error)
        assert run_button(at).disabled is True
    at = open_page("compress", {"source": "path", "path": str(gpt2), "compressor": "rtn"})
    assert not at.error and run_button(at).disabled is False


def test_the_cost_card_follows_the_chosen_calibration_size(home, tiny):
    """GPTQ's estimate scales with the calibration windows the user picks (it once said "assumes
    128x512" with 16 windows chosen, overstating the time 8x)."""
    base = {"source": "path", "path": str(tiny), "compressor": "gptq"}
    captions = lambda at: " ".join(c.value for c in at.caption)  # noqa: E731
    small, large = open_page("compress", {**base, "calib_samples": "16"}), open_page("compress", base)
    assert "assumes 16×512 calibration" in captions(small)
    assert "assumes 128×512 calibration" in captions(large)
    rtn = open_page("compress", {**base, "compressor": "rtn", "calib_samples": "16"})
    assert "calibration tokens and" not in captions(rtn)  # no calibration assumption for RTN


def test_url_preselects_method_and_settings(home, tiny):
    at = open_page(
        "compress",
        {"source": "path", "path": str(tiny), "method": "sparsegpt", "sparsity": "0.3", "blocksize": "64"},
    )
    assert at.selectbox(key="cmp_method").value == "sparsegpt"
    assert at.number_input(key="cmp_sparsegpt_blocksize").value == 64
    sparsity = [w for w in at.get("number_input") if w.key == "cmp_sparsegpt_sparsity"]
    sel = [w for w in at.selectbox if w.key == "cmp_sparsegpt_sparsity"]
    assert (sparsity and sparsity[0].value == pytest.approx(0.3)) or (sel and sel[0].value == 0.3)


def test_the_url_names_the_method_and_the_compressor_apart(home, tiny):
    """?method= is a knowledge-base method, ?compressor= a compressor; the run is filed under the method."""
    base = {"source": "path", "path": str(tiny)}
    at = open_page("compress", {**base, "compressor": "cpu-inference", "method": "dynamic-int8"})
    assert at.selectbox(key="cmp_method").value == "cpu-inference"
    assert not at.warning and "filed under the method" in text_of(at) and "Dynamic int8" in text_of(at)
    # the paper's INT4 CPU runtime is not what the bundled int8 compressor writes: not filed under it
    at = open_page("compress", {**base, "compressor": "cpu-inference", "method": "cpu-inference"})
    assert at.warning
    # a compressor alone, and an old link naming a compressor as ?method=: the compressor's own method
    for query in ({"compressor": "magnitude"}, {"method": "magnitude"}):
        at = open_page("compress", {**base, **query})
        assert at.selectbox(key="cmp_method").value == "magnitude" and not at.warning
        assert "Magnitude pruning" in text_of(at) and "filed under the method" in text_of(at)
    # a pair that does not belong together: warned, and the method's own compressor is chosen
    at = open_page("compress", {**base, "method": "wanda", "compressor": "gptq"})
    assert at.selectbox(key="cmp_method").value == "wanda"
    assert any("does not run" in w.value for w in at.warning)
    run_button(at).click().run()
    (run,) = queue.list_runs()
    assert (run.method, run.compressor) == ("wanda", "wanda")


def test_form_fields_come_from_the_config(home, tiny):
    from compressors.base import get_compressor

    at = open_page("compress", {"source": "path", "path": str(tiny), "method": "gptq"})
    names = {f["name"] for f in get_compressor("gptq").config_cls.describe()}
    keys = {
        w.key for kind in ("selectbox", "checkbox", "number_input", "text_input") for w in getattr(at, kind)
    }
    assert {f"cmp_gptq_{n}" for n in names} <= keys
    assert at.selectbox(key="cmp_gptq_bits").options == ["2", "3", "4", "8"]


def test_run_queues_a_job_the_page_follows_and_a_reload_finds(home, tiny):
    at = open_page("compress", {"source": "path", "path": str(tiny), "method": "gptq", "bits": "4"})
    run_button(at).click().run()
    assert not at.exception
    link = at.query_params["job"][0] if isinstance(at.query_params["job"], list) else at.query_params["job"]
    run = queue.get_run_by_public_id(link)  # the URL carries the run's unguessable id, not its number
    job = run.id
    assert run.status == "queued" and run.compressor == "gptq" and run.config["bits"] == 4
    assert run.owner == "local" and not link.isdigit()
    # the panel appears at the top, the button is at the bottom: the page scrolls to the panel, once
    scripts = [e for e in at.get("iframe") if "shrinkwise-job-panel" in str(e.proto)]
    assert len(scripts) == 1 and "scrollIntoView" in str(scripts[0].proto)
    at.run()
    assert not [e for e in at.get("iframe") if "shrinkwise-job-panel" in str(e.proto)]
    assert run.model_ref == str(tiny) and run.model_name == "tiny-llama (113,256)"
    assert "Queued: the worker is starting it" in [p.proto.text for p in at.get("progress")][0]

    # a second tab (fresh session) with the URL finds the same job
    other = open_page("compress", {"job": link})
    assert f"Job #{job}" in text_of(other)

    w = Worker(executor=f"{FAKE}:slow", max_jobs=1, use_lock=False)
    try:
        wait_for(lambda: (queue.get_run(job).fraction or 0) > 0.02, w)
        at.run()
        progress = [p.proto.text for p in at.get("progress")]
        assert progress and progress[0].startswith("layer")
        at.button(key=f"cmp_job_cancel_{job}").click().run()
        assert queue.get_run(job).cancel_requested
        wait_for(lambda: RunStatus(queue.get_run(job).status).finished, w, timeout=20)
    finally:
        w.stop()
    at.run()
    assert queue.get_run(job).status == "cancelled"
    assert "cancelled by the user" in text_of(at)


def test_run_is_disabled_while_the_started_job_is_queued(home, tiny):
    """One run at a time from a page: after Run, the button is off (with the reason) until the job ends."""
    at = open_page("compress", {"source": "path", "path": str(tiny), "method": "rtn"})
    assert run_button(at).disabled is False
    run_button(at).click().run()
    assert not at.exception
    (run,) = queue.list_runs()
    assert run.status == "queued"
    assert run_button(at).disabled is True
    assert any(f"while job #{run.id} is queued" in c.value for c in at.caption)
    # a fresh tab on the job's link: the same
    link = at.query_params["job"][0] if isinstance(at.query_params["job"], list) else at.query_params["job"]
    assert run_button(open_page("compress", {"job": link, "source": "path", "path": str(tiny)})).disabled
    w = Worker(executor=f"{FAKE}:quick", max_jobs=1, use_lock=False)
    try:
        wait_for(lambda: RunStatus(queue.get_run(run.id).status).finished, w)
    finally:
        w.stop()
    at.run()
    assert run_button(at).disabled is False
    assert not any("while job" in c.value for c in at.caption)


def test_a_finished_job_links_to_its_result(home, tiny):
    (job,) = [
        int(
            queue.create_run(
                model_ref=str(tiny), model_name="tiny", method="gptq", compressor="gptq", config={"bits": 4}
            ).id
        )
    ]
    w = Worker(executor=f"{FAKE}:quick", max_jobs=1, use_lock=False)
    try:
        wait_for(lambda: RunStatus(queue.get_run(job).status).finished, w)
    finally:
        w.stop()
    at = open_page("compress", {"job": str(job)})
    assert any("perplexity 10.00 → 10.50" in s.value for s in at.success)
    links = [el for el in at.get("page_link")]
    assert any("Open the result" in el.proto.label for el in links)


@pytest.mark.slow
def test_end_to_end_gptq_on_a_tiny_model_with_the_real_compressor(home, tiny):
    """Press Run, the worker runs the real compress_and_measure, the result page shows measured figures."""
    at = open_page(
        "compress",
        {
            "source": "path",
            "path": str(tiny),
            "method": "gptq",
            "bits": "4",
            "group_size": "32",
            "calib_samples": "8",
            "eval_windows": "2",
            "seq_len": "128",
        },
    )
    run_button(at).click().run()
    job = int(queue.list_runs()[0].id)
    w = Worker(max_jobs=1, use_lock=False)
    t0 = time.monotonic()
    try:
        wait_for(lambda: RunStatus(queue.get_run(job).status).finished, w, timeout=300)
    finally:
        w.stop()
    run = queue.get_run(job)
    assert run.status == "succeeded", (run.error, run.log_tail)
    print(f"tiny GPTQ job: {time.monotonic() - t0:.1f} s")
    assert (
        4.0 < run.after_metrics["bits_per_weight"] < 5.1 and run.before_metrics["model_bits_per_weight"] == 32
    )
    assert run.after_metrics["size_bytes"] < run.before_metrics["size_bytes"]
    res = open_page("run_result", {"run": str(job)})
    table = res.table[0].value
    assert "Perplexity (held-out)" in list(table["figure"])
    assert {b.proto.label for b in res.get("download_button")} >= {
        "Download Shrinkwise packed (.zip)",
        "Report (JSON)",
    }
    ev = knowledge_runs.measured_evidence(method="gptq", model="tiny-llama (113,256)")
    assert any(e.metric.value == "perplexity" for e in ev)


def test_settings_that_block_an_export_are_said_before_the_run_with_one_click_fixes(home, tiny):
    """GPTQ with act-order's permuted groups on a model whose widths (72, 136) a group of 16 does not
    divide: both blockers are shown before Run, and each button applies the nearest setting that
    unblocks the export."""
    query = {
        "source": "path",
        "path": str(tiny),
        "compressor": "gptq",
        "group_size": "16",
        "static_groups": "false",
    }
    at = open_page("compress", query)
    assert at.checkbox(key="cmp_gptq_static_groups").value is False
    warnings = [w.value for w in at.warning]
    assert any("Group size 16 does not divide the input widths 72, 136" in w for w in warnings)
    assert any("Act-order" in w for w in warnings)
    assert run_button(at).disabled is False  # a warning, not a refusal: the packed result is still made
    at.button(key="cmp_fix_0").click().run()
    assert not at.exception
    assert at.number_input(key="cmp_gptq_group_size").value == 8
    assert not any("does not divide" in w.value for w in at.warning)
    assert at.button(key="cmp_fix_0").label == "Use static groups"
    at.button(key="cmp_fix_0").click().run()
    assert at.checkbox(key="cmp_gptq_static_groups").value is True
    assert not at.warning
    # what is left is a note: groups of 8 are not whole llama.cpp blocks, so the GGUF is re-quantized
    assert any(
        "GGUF" in c.value and "groups of 8 are not whole 32-weight blocks" in c.value for c in at.caption
    )


def test_the_job_panel_shows_the_stage_its_count_and_eta(home, tiny):
    """What the run's reporter writes (compressors.progress: "stage — k/n unit, ETA mm:ss") is what the
    live panel shows, with the share of the whole run."""
    from compressors.progress import Count, progress_text

    run = queue.create_run(model_ref=str(tiny), model_name="tiny", method="gptq", compressor="gptq")
    queue.claim_next_run("host:1:t")
    queue.update_progress(int(run.id), progress_text("measure after", Count(12, 20, "windows"), 41.0), 0.9)
    at = open_page("compress", {"job": run.public_id})
    (bar,) = [p.proto.text for p in at.get("progress")]
    assert bar == "measure after — 12/20 windows, ETA 00:41 · 90%"


def test_the_estimate_covers_every_stage_before_the_run(home, tiny):
    at = open_page(
        "compress", {"source": "path", "path": str(tiny), "compressor": "gptq", "eval_windows": "4"}
    )
    (by_stage,) = [c.value for c in at.caption if c.value.startswith("By stage: ")]
    for label in ("load the model", "measure before", "compress", "save packed", "measure after", "export"):
        assert label in by_stage, by_stage
    assert "Estimated time" in metrics(at)
