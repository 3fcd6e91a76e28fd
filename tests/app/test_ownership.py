"""Issue 15, finding 1: runs belong to their owner; server paths only under the configured roots.

Team mode is simulated the way Streamlit's AppTest allows: ``app.auth.auth_configured`` says sign-in is
configured and ``app.auth._user_info`` returns what ``st.user`` would hold for the signed-in user. The
pages, the queries and the ownership rules are the real ones.
"""

from __future__ import annotations

import shutil

import pytest

from app import auth
from jobs import queue
from jobs.access import LOCAL_USER
from jobs.ui import plain
from knowledge.db import session
from knowledge.tables import CompressionRun
from tests.app.conftest import open_page, text_of
from tests.app.test_history_page import finished_run
from tests.jobs.checkpoints import tiny_checkpoint

ALICE, BOB, ADMIN = "alice@example.org", "bob@example.org", "admin@example.org"


def owned_run(owner: str, model: str, tmp) -> CompressionRun:
    rid = finished_run(model, "gptq", 100.0, 21.0, tmp=tmp, bits=4)
    with session() as s:
        row = s.get(CompressionRun, rid)
        row.owner = owner
        s.add(row)
    return queue.get_run(rid)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


@pytest.fixture
def team(monkeypatch):
    """Team mode; ``team(email)`` signs that user in (None: nobody signed in)."""
    monkeypatch.setattr(auth, "auth_configured", lambda: True)
    monkeypatch.setenv("SHRINKWISE_ADMINS", ADMIN)

    def sign_in(email: str | None) -> None:
        info = {"is_logged_in": email is not None, **({"email": email} if email else {})}
        monkeypatch.setattr(auth, "_user_info", lambda: info)

    return sign_in


@pytest.fixture
def two_runs(home, tmp_path, team):
    return owned_run(ALICE, "alice-model", tmp_path), owned_run(BOB, "bob-model", tmp_path)


def history_rows(at) -> list[dict]:
    return at.dataframe[0].value.to_dict("records") if at.dataframe else []


def test_nobody_signed_in_sees_the_sign_in_page_only(two_runs, team):
    team(None)
    at = open_page("history")
    assert "Sign in" in [b.label for b in at.button]
    assert "alice-model" not in text_of(at) and "bob-model" not in text_of(at)
    at = open_page("run_result", {"run": two_runs[0].public_id})
    assert not at.dataframe and not at.get("download_button")


def test_each_user_sees_only_their_own_runs_in_history(two_runs, team):
    alice_run, bob_run = two_runs
    for user, mine, theirs in ((ALICE, alice_run, bob_run), (BOB, bob_run, alice_run)):
        team(user)
        at = open_page("history")
        models = {r["model"] for r in history_rows(at)}
        assert models == {mine.model_name}, user
        assert theirs.model_name not in text_of(at)
        links = [el.proto.query_string for el in at.get("page_link") if el.proto.page == "run_result"]
        assert links == [f"run={mine.public_id}"]


@pytest.mark.parametrize("by", ["public_id", "number"])
def test_a_user_cannot_open_or_download_another_users_run(two_runs, team, by):
    alice_run, bob_run = two_runs
    team(ALICE)
    at = open_page("run_result", {"run": bob_run.public_id if by == "public_id" else str(bob_run.id)})
    page = text_of(at)
    assert "There is no such run that you can open" in page
    assert "bob-model" not in page and bob_run.public_id not in page
    assert at.query_params["run"] in (alice_run.public_id, [alice_run.public_id])  # her own run instead
    assert f"Job #{alice_run.id}:" in page  # the page shows her own latest run, and its downloads


def test_the_same_answer_for_someone_elses_run_and_a_missing_one(two_runs, team):
    _, bob_run = two_runs
    team(ALICE)
    other = open_page("run_result", {"run": bob_run.public_id})
    missing = open_page("run_result", {"run": "no-such-run-id"})
    assert [w.value for w in other.warning] == [w.value for w in missing.warning]


def test_owner_opens_their_run_with_downloads(two_runs, team):
    _, bob_run = two_runs
    team(BOB)
    at = open_page("run_result", {"run": bob_run.public_id})
    assert plain("bob-model") in text_of(at) and not at.warning  # the title escapes Markdown
    buttons = at.get("download_button")
    assert {b.proto.label for b in buttons} >= {"Download Shrinkwise packed (.zip)", "Report (JSON)"}
    # no file is on a /media URL before its owner clicks: every download is made on the click
    assert all(b.proto.url == "" for b in buttons)


def test_compress_page_job_links_are_owned_too(two_runs, team):
    alice_run, bob_run = two_runs
    team(ALICE)
    at = open_page("compress", {"job": bob_run.public_id})
    assert "There is no such job that you can open" in text_of(at) and "bob-model" not in text_of(at)


def test_method_page_links_only_the_viewers_runs(two_runs, team):
    alice_run, bob_run = two_runs
    team(ALICE)
    at = open_page("method", {"id": "gptq"})
    links = [el.proto.query_string for el in at.get("page_link") if el.proto.page == "run_result"]
    assert links == [f"run={alice_run.public_id}"]
    table = next(df.value for df in at.dataframe if "run" in df.value.columns)
    assert f"#{bob_run.id}" not in set(table["run"]) and f"#{alice_run.id}" in set(table["run"])
    assert "bob-model" not in text_of(at) and "bob-model" not in set(table["model"])


def test_an_admin_sees_every_run(two_runs, team):
    team(ADMIN)
    at = open_page("history")
    assert {r["model"] for r in history_rows(at)} == {"alice-model", "bob-model"}


def test_local_mode_needs_no_sign_in_and_owns_its_runs(home, tmp_path):
    run = owned_run(LOCAL_USER, "local-model", tmp_path)
    at = open_page("history")
    assert {r["model"] for r in history_rows(at)} == {"local-model"}
    at = open_page("run_result", {"run": run.public_id})
    assert plain("local-model") in text_of(at) and not at.warning


# --- server paths ---------------------------------------------------------------------------------------


def path_error(path) -> list[str]:
    at = open_page("compress", {"source": "path", "path": str(path)})
    return [e.value for e in at.error]


def test_outside_the_roots_the_answer_is_the_same_whether_the_path_exists(home, tiny, tmp_path, monkeypatch):
    root = tmp_path / "models"
    shutil.copytree(tiny, root / "tiny")
    monkeypatch.setenv("SHRINKWISE_MODEL_ROOTS", str(root))
    shadow, missing, existing = (
        path_error("/etc/shadow"),
        path_error(tmp_path / "no-such-model"),
        path_error(tiny),
    )
    assert shadow == missing == existing and len(shadow) == 1
    assert "not available" in shadow[0] and "is a file" not in shadow[0]
    assert (root / "link").symlink_to(tiny) is None  # a link inside the root that points out of it
    assert path_error(root / "link") == shadow
    assert path_error(root / "tiny") == []  # inside the root: read as before


def test_without_a_configured_folder_only_the_default_models_folder_is_readable(
    home, tiny, team, monkeypatch
):
    monkeypatch.delenv("SHRINKWISE_MODEL_ROOTS")  # the suite's temp-folder root (tests/conftest.py)
    team(ALICE)
    assert path_error("/etc/shadow") == path_error(tiny) == path_error("/no/such/path")
    assert "outside the models folder" in path_error(tiny)[0]


def test_a_sign_in_without_an_email_is_refused(home, team, monkeypatch):
    team(None)
    monkeypatch.setattr(auth, "_user_info", lambda: {"is_logged_in": True})  # a provider gave no e-mail
    at = open_page("history")
    assert any("no e-mail address" in e.value for e in at.error)
    assert "Sign out" in [b.label for b in at.button] and not at.dataframe


def test_other_users_measured_figures_stay_off_the_map(two_runs, team):
    import json

    from tests.app.conftest import figures

    team(ALICE)
    shown = json.dumps(figures(open_page("map")))
    assert "alice-model" in shown and "bob-model" not in shown
    team(ADMIN)
    shown = json.dumps(figures(open_page("map")))
    assert "bob-model" in shown or "alice-model" in shown  # the admin's map keeps every run's figures
