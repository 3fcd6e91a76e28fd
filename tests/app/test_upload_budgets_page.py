"""Issue 15, findings 5 and 8 on the pages: the Compress page states the upload limits, an upload the
model check refuses is deleted at once, an unreadable zip is a sentence (no traceback), and a user
deletes their own upload on the History page."""

from __future__ import annotations

from jobs.uploads import list_uploads, save_model_upload
from tests.app.conftest import open_page, text_of
from tests.app.test_bad_inputs import errors, refused, upload
from tests.jobs import checkpoints as ck
from tests.jobs.test_archive_errors import _encrypted


def _uploads(home) -> list[str]:
    root = home / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_the_compress_page_states_the_upload_limits(home, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_MAX_UNPACKED_MB", "3000")
    monkeypatch.setenv("SHRINKWISE_RETENTION_DAYS", "7")
    text = text_of(open_page("compress", {"source": "upload"}))
    assert "3,000 MB once unpacked" in text and "1,000 files and folders" in text
    assert "16,384 MB" in text and "deleted after 7 days" in text and "History page" in text


def test_a_pickle_upload_is_refused_and_deleted_at_once(home, tmp_path):
    folder = ck.evil_pickle_checkpoint(tmp_path / "evil")
    at = upload([(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()])
    refused(at, "refused pytorch_model.bin", "can run code on the server")
    assert _uploads(home) == []


def test_an_encoder_upload_is_refused_and_deleted_at_once(home, tmp_path):
    folder = ck.config_only_checkpoint(tmp_path / "bert", ck.BERT_CONFIG)
    at = upload([(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()])
    assert errors(at)
    assert _uploads(home) == []


def test_an_encrypted_zip_is_a_sentence_on_the_page(home):
    at = upload([("secret.zip", _encrypted())])
    refused(at, "secret.zip is encrypted", "without a password")
    assert "Traceback" not in errors(at)
    assert _uploads(home) == []


def test_a_user_deletes_their_upload_on_the_history_page(home):
    from jobs import queue

    saved = save_model_upload([("config.json", b"{}")])
    queue.create_run(model_ref="demo", model_name="m", method="gptq", compressor="gptq")
    at = open_page("history")
    assert at.button(key=f"hist_del_upload_{saved.upload_id}").disabled is False
    at.button(key=f"hist_del_upload_{saved.upload_id}").click().run()
    assert not at.exception
    assert not saved.folder.exists() and list_uploads() == []
