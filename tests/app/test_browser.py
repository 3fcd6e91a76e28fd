"""End to end in a real browser: start the app, fill the questionnaire, check the recommendation on
screen, open the map, save screenshots and print how long each took to render.

Debian's Chromium (``/usr/bin/chromium``, installed by ``scripts/install-system-deps.sh``) is driven by
Playwright with ``executable_path``: Playwright's own browser download does not work here. Screenshots
go to ``artifacts/browser/`` (git-ignored) or ``$SHRINKWISE_ARTIFACTS``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SHRINKWISE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SHRINKWISE_ARTIFACTS", ROOT / "artifacts" / "browser"))
PHONE_AGENT = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: run scripts/install-system-deps.sh")
    port = _free_port()
    log = ARTIFACTS / "streamlit.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
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
                pytest.fail(f"streamlit did not start; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script (its status widget says 'Running')."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout,
    )


def _shot(page, name: str) -> None:
    """Screenshot of the whole page. Streamlit scrolls inside its main block, not the document, so
    Playwright's full_page sees one screen: grow the viewport to the content's height, then shrink back."""
    size = page.viewport_size
    tall = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
        " return m ? m.scrollHeight : 0 }"
    )
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(tall, 16000))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / name))
    page.set_viewport_size(size)


def _plotly_points(page, nth: int = 0) -> int:
    return page.evaluate(
        "(n) => { const p = document.querySelectorAll('.js-plotly-plot')[n];"
        " return p ? p.querySelectorAll('g.trace.scatter path.point').length : 0 }",
        nth,
    )


@pytest.mark.parametrize("width,height,tag", [(1280, 800, "desktop"), (420, 900, "narrow")])
def test_questionnaire_recommendation_and_map_render(server, browser, width, height, tag):
    # The narrow run is a phone: its User-Agent makes the map open in the tall layout.
    agent = PHONE_AGENT if width < 600 else None
    page = browser.new_page(viewport={"width": width, "height": height}, user_agent=agent)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    page.goto(f"{server}/")
    page.get_by_text("How should I compress my model?").wait_for(timeout=60_000)
    page.get_by_role("button", name="Recommend", exact=True).wait_for()
    _wait_idle(page)
    timings["questionnaire"] = time.perf_counter() - t0

    # The paper's claim 5: the model cannot be modified or fine-tuned -> dynamic methods lead.
    page.get_by_role("button", name="pre-training").click()
    page.get_by_role("button", name="post-training").click()
    page.get_by_role("button", name="fine-tuning").click()
    page.get_by_text("Keep the original weights usable").click()
    hardware = page.locator("[data-testid='stSelectbox']").filter(has_text="Hardware").locator("input")
    hardware.click()
    option = page.get_by_role("option", name="CPU", exact=True)
    if not option.is_visible():  # on a narrow window a click only focuses the box; the arrow key opens it
        page.keyboard.press("ArrowDown")
    option.click()
    _shot(page, f"form-{tag}.png")

    t0 = time.perf_counter()
    page.get_by_role("button", name="Recommend", exact=True).click()
    page.get_by_role("heading", name="Recommendation").wait_for(timeout=60_000)
    page.get_by_role("button", name="Open method page").first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000)
    _wait_idle(page)
    timings["recommendation"] = time.perf_counter() - t0

    assert "keep_original=true" in page.url and "phases=inference" in page.url and "hardware=cpu" in page.url
    # The paper's scenario (claim 5 on a CPU): the model must stay unmodified -> only recipes that keep
    # the original rank; lossless speculative decoding (the only one with a known quality) leads.
    first = page.get_by_role("heading", name="1. ", exact=False).first.inner_text()
    assert first.startswith("1. Speculative decoding"), first
    assert page.get_by_text("Dynamic", exact=True).first.is_visible()
    _shot(page, f"recommendation-{tag}.png")

    t0 = time.perf_counter()
    page.get_by_role("link", name="See the ranked methods highlighted on the map").click()
    page.get_by_text("The phase × impact map").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => { const p = document.querySelector('.js-plotly-plot');"
        " return p && p.querySelectorAll('g.trace.scatter path.point').length > 8 }",
        timeout=60_000,
    )
    _wait_idle(page)
    timings["map"] = time.perf_counter() - t0
    assert _plotly_points(page) > 8
    _shot(page, f"map-{tag}.png")

    tall = page.get_by_role("radio", name="Tall").get_attribute("aria-checked")
    assert tall == ("true" if width < 600 else "false"), "phones open the map in the tall layout"
    page.get_by_role("radio", name="The paper's eight").click()
    page.wait_for_function(
        "() => { const p = document.querySelector('.js-plotly-plot');"
        " return p && p.querySelectorAll('g.trace.scatter path.point').length === 8 }",
        timeout=60_000,
    )
    _shot(page, f"map-paper-{tag}.png")

    # Clicking a marker opens that method's page (plotly selection event -> st.switch_page).
    point = page.locator(".js-plotly-plot g.trace.scatter path.point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/method?id=*", timeout=60_000)
    method_id = page.url.rsplit("id=", 1)[1]
    assert method_id in {
        "sparse-pretraining",
        "spqr",
        "gptq",
        "llm-pruner",
        "selective-distillation",
        "cpu-inference",
        "aim",
        "lazyllm",
    }
    page.get_by_role("heading", name="From the papers").wait_for()
    _shot(page, f"method-{tag}.png")
    page.close()

    line = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    print(f"\n[{tag} {width}x{height}] time from request to fully rendered: {line}")
    (ARTIFACTS / f"timings-{tag}.txt").write_text(line + "\n")
