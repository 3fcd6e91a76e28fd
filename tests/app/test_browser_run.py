"""End to end in a real browser: upload a small checkpoint as an archive, run GPTQ 4-bit on it, watch the
progress, see the result, download the compressed archive and load it back with Shrinkwise.

Its own Streamlit server on a fresh data folder, with the job worker started by the app itself (as in
production). Screenshots of every state of the Compress page go to ``artifacts/browser/`` (or
``$SHRINKWISE_ARTIFACTS``); the time from pressing Run to the result is printed and written to
``run-timing.txt``. Uses Debian's Chromium through Playwright (see tests/app/test_browser.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, _free_port, _shot, _wait_idle
from tests.jobs import checkpoints as ck

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUERY = "method=gptq&bits=4&group_size=32&calib_samples=8&eval_windows=2&seq_len=128"


@pytest.fixture(scope="module")
def app_home(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-home")


@pytest.fixture(scope="module")
def run_server(app_home):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: run scripts/install-system-deps.sh")
    port = _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SHRINKWISE_HOME=str(app_home), SHRINKWISE_JOBS_AUTOSTART="1")
    env.pop("SHRINKWISE_DATABASE_URL", None)
    with open(ARTIFACTS / "streamlit-run.log", "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app/main.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"streamlit did not start; log:\n{(ARTIFACTS / 'streamlit-run.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        _stop_worker(app_home)


def _stop_worker(home: Path) -> None:
    """Stop the worker pool the app started for this test (its pid is in worker.json)."""
    try:
        pid = json.loads((home / "worker.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    folder = ck.tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")
    path = folder.parent / "tiny-llama.zip"
    path.write_bytes(ck.zip_bytes(folder))
    return path


def test_upload_run_gptq_watch_result_download_and_load_back(run_server, browser, archive, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.goto(f"{run_server}/compress?source=upload&{QUERY}")
    page.get_by_role("heading", name="4. Run").wait_for(timeout=120_000)
    _wait_idle(page, 90_000)
    _shot(page, "compress-empty-upload.png")

    page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(archive))
    try:
        page.get_by_text("LlamaForCausalLM").first.wait_for(timeout=120_000)
    except Exception:
        _shot(page, "compress-upload-timeout.png")
        raise
    page.get_by_text("evaluation tokens with this model's tokenizer").wait_for(timeout=90_000)
    _wait_idle(page, 90_000)
    _shot(page, "compress-model-found.png")

    run = page.get_by_role("button", name="Run", exact=True)
    assert run.is_enabled()
    t0 = time.perf_counter()
    run.click()
    page.get_by_text("Job #1").first.wait_for(timeout=60_000)
    # progress: a stage with a percentage, then the result
    page.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)
    seen_running = False
    for _ in range(600):
        if page.get_by_text("Open the result").count():
            break
        if page.get_by_text("running", exact=True).count() and not seen_running:
            seen_running = True
            _shot(page, "compress-running.png")
        if page.get_by_text("The job failed").count():
            _shot(page, "compress-failed.png")
            pytest.fail(page.locator("[data-testid='stAlert']").first.inner_text())
        page.wait_for_timeout(500)
    page.get_by_text("Open the result").wait_for(timeout=5_000)
    took = time.perf_counter() - t0
    from urllib.parse import parse_qs, urlparse

    job = parse_qs(urlparse(page.url).query)["job"][0]
    assert not job.isdigit() and len(job) >= 12, "job links carry an unguessable id, not the row number"
    _shot(page, "compress-succeeded.png")

    page.get_by_text("Open the result").click()
    page.get_by_role("heading", name="Before and after").wait_for(timeout=60_000)
    page.get_by_role("button", name="Report (JSON)").wait_for(timeout=60_000)
    page.locator("[data-testid='stTable']").first.wait_for(timeout=60_000)  # before/after
    page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=60_000)  # settings, timings
    _wait_idle(page)
    page.wait_for_timeout(1000)
    _shot(page, "run-result.png")
    with page.expect_download(timeout=120_000) as dl:
        page.get_by_role("button", name="Download Shrinkwise packed (.zip)").click()
    zip_path = tmp_path / "downloaded.zip"
    dl.value.save_as(zip_path)

    from compressors.models import load_model
    from compressors.packed import packed_modules
    from compressors.storage import find_model_root, safe_extract

    folder = find_model_root(safe_extract(zip_path, tmp_path / "unzipped"))
    model, tok = load_model(str(folder))
    packed = packed_modules(model)
    assert packed and {m.packed_type for m in packed.values()} == {"quantized_linear"}
    assert {m.bits for m in packed.values()} == {4}
    out = model.generate(**tok("Python is", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 2

    page.goto(f"{run_server}/history")
    page.get_by_role("heading", name="Run history").wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000)
    _wait_idle(page)
    _shot(page, "history.png")
    page.close()
    line = f"tiny Llama (113 k parameters), GPTQ 4-bit g32, 8x128 calibration, 2x128 evaluation: Run -> result {took:.1f} s"
    print("\n" + line)
    (ARTIFACTS / "run-timing.txt").write_text(line + "\n")


def _upload_and_run(page, run_server: str, archive) -> None:
    """Open the Compress page for GPTQ 4-bit, upload the tiny model, press Run and wait for the job link."""
    page.goto(f"{run_server}/compress?source=upload&method=gptq&bits=4&group_size=32")
    page.get_by_role("heading", name="4. Run").wait_for(timeout=120_000)
    _wait_idle(page)
    page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(archive))
    page.get_by_text("evaluation tokens with this model's tokenizer").wait_for(timeout=90_000)
    _wait_idle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url("**job=*", timeout=60_000)


def test_bad_upload_and_cancel_states(run_server, browser, archive, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    bad = tmp_path / "photos.zip"
    bad.write_bytes(ck.zip_with({"holiday/readme.md": b"# hi"}))
    page.goto(f"{run_server}/compress?source=upload&{QUERY}")
    page.get_by_role("heading", name="4. Run").wait_for(timeout=120_000)
    _wait_idle(page)
    page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(bad))
    page.get_by_text("does not hold a model").wait_for(timeout=60_000)
    _wait_idle(page)
    assert page.get_by_role("button", name="Run", exact=True).is_disabled()
    _shot(page, "compress-bad-upload.png")

    # a real job with the full text budget, a second one queued behind it; cancel both
    _upload_and_run(page, run_server, archive)
    page.get_by_role("button", name="Cancel").first.wait_for(timeout=60_000)
    _wait_idle(page)
    first_url = page.url
    # while its job is queued or running, this page's Run is off (a second click used to queue a twin)
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Run", exact=True)).to_be_disabled(timeout=30_000)
    # a second job from another tab waits behind the first; cancel it before it starts
    other = browser.new_page(viewport={"width": 1280, "height": 800})
    _upload_and_run(other, run_server, archive)
    other.get_by_text("1 job(s) ahead").wait_for(timeout=60_000)
    _wait_idle(other)
    _shot(other, "compress-queued.png")
    other.get_by_role("button", name="Cancel").first.click()
    other.get_by_text("cancelled before it started").wait_for(timeout=30_000)
    other.close()

    page.goto(first_url)
    page.get_by_text("running", exact=True).wait_for(timeout=120_000)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Cancel").first.click()
    page.get_by_text("The job was cancelled").wait_for(timeout=60_000)
    took = time.perf_counter() - t0
    print(f"\ncancel in the browser: {took:.1f} s from the click to the page saying so")
    _shot(page, "compress-cancelled.png")
    (ARTIFACTS / "cancel-timing.txt").write_text(
        f"cancel in the browser: {took:.1f} s from the click to the page saying so\n"
    )
    page.close()


def test_failed_job_and_narrow_window(run_server, browser, tmp_path):
    """A checkpoint whose headers are valid but whose weights do not fit its config: refused on the page
    before anything is queued (issue 15: it used to run as a random model), naming a tensor. Then the
    narrow layout."""
    bad = ck.mismatched_checkpoint(tmp_path / "mismatched")
    zip_path = tmp_path / "mismatched.zip"
    zip_path.write_bytes(ck.zip_bytes(bad, prefix="mismatched"))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{run_server}/compress?source=upload&{QUERY}")
    page.get_by_role("heading", name="4. Run").wait_for(timeout=120_000)
    _wait_idle(page)
    page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(zip_path))
    page.get_by_text("do not match its config.json").wait_for(timeout=90_000)
    _wait_idle(page)
    assert page.get_by_role("button", name="Run", exact=True).is_disabled()
    _shot(page, "compress-failed.png")
    page.close()

    narrow = browser.new_page(viewport={"width": 420, "height": 900})
    for path, name in (
        ("compress?source=demo&method=gptq&bits=4", "compress-narrow.png"),
        ("run_result?run=1", "run-result-narrow.png"),
        ("history", "history-narrow.png"),
    ):
        narrow.goto(f"{run_server}/{path}")
        narrow.wait_for_timeout(3000)
        _wait_idle(narrow, 180_000)
        narrow.wait_for_timeout(2000)
        _shot(narrow, name)
    narrow.close()


def test_demo_gptq_verdict_then_gguf_download_served_by_llama_cpp(run_server, browser, tmp_path):
    """Issue 13's path: GPTQ 4-bit on the demo model, the verdict line first, then the GGUF download,
    which llama.cpp (llama-cpp-python) loads and completes a prompt with."""
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.goto(
        f"{run_server}/compress?source=demo&method=gptq&bits=4&group_size=64&calib_samples=8&eval_windows=2&seq_len=128"
    )
    page.get_by_role("heading", name="4. Run").wait_for(timeout=120_000)
    page.get_by_text("evaluation tokens with this model's tokenizer").wait_for(timeout=120_000)
    _wait_idle(page, 90_000)
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url("**job=*", timeout=60_000)
    # GPTQ on 135M parameters (210 layers) with 8 x 128 calibration, measured before and after: 21 min at
    # load average 6 on 2 cores (compress 997 s), a few minutes on an idle machine
    for _ in range(3600):
        if page.get_by_text("Open the result").count():
            break
        if page.get_by_text("The job failed").count():
            _shot(page, "demo-gptq-failed.png")
            pytest.fail(page.locator("[data-testid='stAlert']").first.inner_text())
        page.wait_for_timeout(500)
    page.get_by_text("Open the result").click()
    verdict = page.locator("h4").filter(has_text="GPTQ").first
    verdict.wait_for(timeout=60_000)
    text = verdict.inner_text()
    assert "4-bit" in text and "smaller" in text and "perplexity +" in text, text
    page.get_by_role("heading", name="Serve it").wait_for(timeout=60_000)
    _wait_idle(page)
    _shot(page, "demo-gptq-result.png")
    with page.expect_download(timeout=120_000) as dl:
        page.get_by_role("button", name="Download GGUF (.gguf)").click()
    gguf_file = tmp_path / "demo-gptq.gguf"
    dl.value.save_as(gguf_file)
    page.close()

    from compressors.engines import llama_cpp_generate

    assert gguf_file.read_bytes()[:4] == b"GGUF"
    completion = llama_cpp_generate(gguf_file, "The capital of France is", max_tokens=8)
    assert completion.strip(), "llama.cpp generated nothing from the downloaded GGUF"
    print(f"\nllama.cpp on the downloaded GGUF: 'The capital of France is' -> {completion!r}")
