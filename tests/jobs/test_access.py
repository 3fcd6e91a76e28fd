"""Ownership rules and server-path roots (jobs.access), without Streamlit (issue 15, finding 1)."""

from __future__ import annotations

import pytest

from jobs.access import LOCAL_USER, AccessDenied, Viewer, check_server_path
from knowledge.tables import CompressionRun


def test_local_viewer_is_the_admin_of_everything():
    v = Viewer.local()
    assert v.user == LOCAL_USER and v.is_admin and not v.team
    assert v.can_see(None) and v.can_see("someone@example.org") and v.owner_filter is None


def test_team_viewers_see_their_own_and_admins_see_all(monkeypatch):
    monkeypatch.setenv("SHRINKWISE_ADMINS", "Boss@Example.org, other@example.org")
    alice = Viewer.signed_in("Alice@Example.org")
    assert alice.user == "alice@example.org" and not alice.is_admin and alice.owner_filter == alice.user
    assert alice.can_see("alice@example.org") and not alice.can_see("bob@example.org")
    assert not alice.can_see(None)  # runs from before owners existed: admins only
    boss = Viewer.signed_in("boss@example.org")
    assert boss.is_admin and boss.can_see("bob@example.org") and boss.can_see(None)
    with pytest.raises(AccessDenied):
        Viewer.signed_in("  ")


def test_public_ids_are_random_and_unique():
    ids = {
        CompressionRun(model_ref="demo", model_name="m", method="gptq", compressor="gptq").public_id
        for _ in range(50)
    }
    assert len(ids) == 50 and all(len(i) >= 16 and not i.isdigit() for i in ids)


def test_roots_refuse_alike_whatever_is_there(tmp_path, monkeypatch):
    root = tmp_path / "models"
    (root / "m").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    monkeypatch.setenv("SHRINKWISE_MODEL_ROOTS", str(root))
    local = Viewer.local()
    assert check_server_path(str(root / "m"), local) == (root / "m").resolve()
    answers = set()
    for p in (
        "/etc/shadow",
        "/etc",
        "/no/such/file",
        str(tmp_path),
        str(root / "escape" / "passwd"),
        "models/m",
    ):
        with pytest.raises(AccessDenied) as err:
            check_server_path(p, local)
        answers.add(str(err.value))
    assert len(answers) == 1


def test_team_mode_never_reads_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHRINKWISE_MODEL_ROOTS", str(tmp_path))  # a root that holds the data folder
    (tmp_path / "home" / "uploads" / "x").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    alice = Viewer.signed_in("alice@example.org")
    assert check_server_path(str(tmp_path / "shared"), alice) == (tmp_path / "shared").resolve()
    with pytest.raises(AccessDenied):
        check_server_path(str(tmp_path / "home" / "uploads" / "x"), alice)
    monkeypatch.delenv("SHRINKWISE_MODEL_ROOTS")
    # no folder configured: the default models folder <data>/models is the only root, for everyone
    default = (tmp_path / "home" / "models").resolve()
    with pytest.raises(AccessDenied, match=f"outside the models folder {default}"):
        check_server_path(str(tmp_path / "shared"), alice)
    with pytest.raises(AccessDenied, match=f"outside the models folder {default}"):
        check_server_path("/etc", Viewer.local())  # the local user too: never any path on the server
    (default / "m").mkdir()
    assert check_server_path(str(default / "m"), alice) == default / "m"  # shared, though in the data folder
    assert check_server_path(str(default / "m"), Viewer.local()) == default / "m"


def test_uploads_record_their_owner(tmp_path, monkeypatch):
    import json

    from jobs.uploads import save_model_upload, save_text_upload

    monkeypatch.setenv("SHRINKWISE_HOME", str(tmp_path / "home"))
    saved = save_model_upload([("config.json", b"{}")], owner="alice@example.org")
    assert json.loads((saved.folder / "upload.json").read_text())["owner"] == "alice@example.org"
    text = save_text_upload("calib.txt", b"some text", owner="bob@example.org")
    assert json.loads((text.parent.parent / "upload.json").read_text())["owner"] == "bob@example.org"
