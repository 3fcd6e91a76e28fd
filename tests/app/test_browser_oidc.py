"""Team sign-in for real (issue 15, finding 1): a local OpenID provider (``oidc-provider-mock``) on
127.0.0.1, the app with an ``[auth]`` secret, and two users signed in with Playwright in two browser
contexts. Neither sees the other's run in History, opens it by its link, or gets its downloads.

Needs the ``team`` extra (Authlib, for ``st.login``) and ``oidc-provider-mock`` (dev extra); skipped
without them. The provider runs in its own process, so its import-time warnings stay out of pytest.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, _wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@example.org", "bob@example.org"


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """(app URL, {user: (model name, public id)}): the app in team mode with one finished run per user."""
    for mod in ("authlib", "oidc_provider_mock"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed: pip install -e '.[team,dev]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: run scripts/install-system-deps.sh")
    tmp = tmp_path_factory.mktemp("team")
    home = tmp / "home"
    env = {
        **os.environ,
        "SHRINKWISE_HOME": str(home),
        "SHRINKWISE_JOBS_AUTOSTART": "0",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("SHRINKWISE_DATABASE_URL", None)
    env.pop("SHRINKWISE_ADMINS", None)
    # one finished run each, stored in the app's database by a child process (the test process keeps its env)
    made = subprocess.run(
        [sys.executable, "-c", _MAKE_RUNS, str(tmp), ALICE, BOB],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    runs = {}
    for line in made.stdout.splitlines():
        user, model, public_id = line.split("\t")
        runs[user] = (model, public_id)

    idp_port, app_port = _free_port(), _free_port()
    idp_log, app_log = tmp / "idp.log", tmp / "app.log"
    with open(idp_log, "w") as out:
        idp = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "-p", str(idp_port), "--user", ALICE, "--user", BOB],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    issuer = f"http://127.0.0.1:{idp_port}"
    try:
        _wait_http(f"{issuer}/.well-known/openid-configuration", idp, idp_log, "oidc-provider-mock")
        # the app runs from a folder whose .streamlit/ holds the repository's config and the [auth] secret
        (tmp / ".streamlit").mkdir()
        shutil.copy(ROOT / ".streamlit" / "config.toml", tmp / ".streamlit" / "config.toml")
        (tmp / ".streamlit" / "secrets.toml").write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{app_port}/oauth2callback"\n'
            'cookie_secret = "test-cookie-secret-0123456789abcdef"\n'
            'client_id = "shrinkwise-test"\n'
            'client_secret = "shrinkwise-test-secret"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        )
        with open(app_log, "w") as out:
            app = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    str(ROOT / "app" / "main.py"),
                    "--server.port",
                    str(app_port),
                    "--server.fileWatcherType",
                    "none",
                ],
                cwd=tmp,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{app_port}"
        try:
            _wait_http(f"{url}/_stcore/health", app, app_log, "streamlit")
            yield url, runs
        finally:
            _stop(app)
    finally:
        _stop(idp)


_MAKE_RUNS = r"""
import sys
from pathlib import Path
from jobs import queue
from knowledge.db import session
from knowledge.tables import CompressionRun
from tests.app.test_history_page import finished_run

tmp = Path(sys.argv[1])
for user in sys.argv[2:]:
    model = user.split("@")[0] + "-model"
    rid = finished_run(model, "gptq", 100.0, 21.0, tmp=tmp, bits=4)
    with session() as s:
        row = s.get(CompressionRun, rid)
        row.owner = user
        s.add(row)
    print(f"{user}\t{model}\t{queue.get_run(rid).public_id}")
"""


def _sign_in(browser, url: str, user: str):
    ctx = browser.new_context(accept_downloads=True)
    page = ctx.new_page()
    page.goto(f"{url}/history")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("**/oauth2/authorize**", timeout=30_000)
    page.locator(f"button[name=sub][value='{user}']").first.click()  # the provider's "sign in as" button
    page.wait_for_url(f"{url}/**", timeout=30_000)
    page.goto(f"{url}/history")
    page.get_by_text(f"Signed in as {user}").wait_for(timeout=60_000)
    _wait_idle(page)
    return ctx, page


def test_two_signed_in_users_cannot_see_open_or_download_each_others_runs(team_server):
    from playwright.sync_api import sync_playwright

    url, runs = team_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # nobody signed in: the sign-in page, no runs
            anon = browser.new_page()
            anon.goto(f"{url}/run_result?run={runs[ALICE][1]}")
            anon.get_by_role("button", name="Sign in", exact=True).wait_for(timeout=60_000)
            _wait_idle(anon)
            assert runs[ALICE][0] not in anon.content()

            for me, other in ((ALICE, BOB), (BOB, ALICE)):
                my_model, my_id = runs[me]
                their_model, their_id = runs[other]
                ctx, page = _sign_in(browser, url, me)
                # History: my run only (the table is a canvas; its cells are in the DOM for accessibility)
                page.get_by_text(my_model).first.wait_for(state="attached", timeout=60_000)
                assert their_model not in page.content()
                # their run by its link: refused, nothing of it shown, no download of it
                page.goto(f"{url}/run_result?run={their_id}")
                page.get_by_text("There is no such run that you can open").wait_for(timeout=60_000)
                _wait_idle(page)
                assert their_model not in page.content() and my_model in page.content()
                # my own run: its downloads work (made on the click)
                page.goto(f"{url}/run_result?run={my_id}")
                page.get_by_text(my_model).first.wait_for(state="attached", timeout=60_000)
                _wait_idle(page)
                with page.expect_download(timeout=60_000) as dl:
                    page.get_by_role("button", name="Report (JSON)").click()
                data = Path(dl.value.path()).read_text()
                assert my_model in data and their_model not in data
                ctx.close()
        finally:
            browser.close()
