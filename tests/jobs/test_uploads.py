"""Saving uploads: where each kind of upload ends up, and what is refused before anything is kept."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from jobs.uploads import UploadError, safe_file_name, save_model_upload, save_text_upload
from tests.jobs import checkpoints as ck


def test_loose_files_become_one_model_folder(home, tmp_path):
    src = ck.tiny_checkpoint(tmp_path / "src")
    files = [(p.name, io.BytesIO(p.read_bytes())) for p in sorted(src.iterdir())]
    saved = save_model_upload(files)
    assert saved.model_ref == str(home / "uploads" / saved.upload_id / "model")
    assert sorted(p.name for p in (home / "uploads" / saved.upload_id / "model").iterdir()) == sorted(
        n for n, _ in files
    )


def test_a_single_gguf_is_the_model_reference(home):
    saved = save_model_upload([("SmolLM2.Q4_1.gguf", b"GGUF....")])
    assert saved.model_ref.endswith("/model/SmolLM2.Q4_1.gguf")


@pytest.mark.parametrize(
    "files,message",
    [
        ([("a.gguf", b"x"), ("config.json", b"{}")], "upload one .gguf on its own"),
        ([("a.zip", b"x"), ("b.zip", b"y")], "upload one archive on its own"),
        ([], "no files were uploaded"),
    ],
)
def test_mixed_uploads_are_refused_and_nothing_is_kept(home, files, message):
    with pytest.raises(UploadError, match=message):
        save_model_upload(files)
    assert not (home / "uploads").exists() or not list((home / "uploads").iterdir())


@pytest.mark.parametrize("name", ["../config.json", "a/b.json", "..", "", "evil\x00.json", "C:\\x.json"])
def test_file_names_with_paths_or_odd_characters_are_refused(name):
    with pytest.raises(UploadError, match="refused the file name"):
        safe_file_name(name)


def test_size_limit_is_checked_before_anything_is_written(home):
    with pytest.raises(UploadError, match=r"the upload is 0.0 MB, over the limit of 0 MB"):
        save_model_upload([("config.json", b"{}" * 100)], limit_bytes=10)
    assert not (home / "uploads").exists()


def test_an_upload_over_the_limit_names_the_other_ways(home, monkeypatch):
    """Models folder, Hugging Face cache, hub id (issue 12)."""
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(home / "models"))
    with pytest.raises(UploadError) as err:
        save_model_upload([("config.json", b"{}" * 100)], limit_bytes=10)
    msg = str(err.value)
    assert f"under the models folder {(home / 'models').resolve()}" in msg
    assert "Hugging Face cache" in msg and "hub id" in msg and "SHRINKWISE_MAX_UPLOAD_MB" in msg
    monkeypatch.delenv("SHRINKWISE_MODELS_DIR")
    with pytest.raises(UploadError, match="SHRINKWISE_MODELS_DIR"):
        save_model_upload([("config.json", b"{}" * 100)], limit_bytes=10)


def test_text_upload_must_be_utf8(home):
    with pytest.raises(UploadError, match="not UTF-8 text"):
        save_text_upload("notes.txt", b"\xff\xfe\x00bad")
    path = save_text_upload("notes.txt", b"Hello.\n\nWorld.")
    assert path.read_text() == "Hello.\n\nWorld." and path.parent.name == "text"


def test_code_files_in_an_archive_are_dropped(home, tmp_path):
    src = ck.tiny_checkpoint(tmp_path / "src")
    (src / "modeling_evil.py").write_text("import os\nos.system('echo pwned')\n")
    (src / "sub").mkdir()
    (src / "sub" / "helper.py").write_text("x = 1\n")
    saved = save_model_upload([("tiny.zip", ck.zip_bytes(src))])
    model = home / "uploads" / saved.upload_id / "model"
    assert (Path(saved.model_ref) / "config.json").is_file()
    assert not list(model.rglob("*.py"))


def test_a_loose_code_file_is_refused_and_nothing_is_kept(home, tmp_path):
    src = ck.tiny_checkpoint(tmp_path / "src")
    files = [(p.name, p.read_bytes()) for p in sorted(src.iterdir())] + [("modeling_evil.py", b"x = 1\n")]
    with pytest.raises(UploadError, match="modeling_evil.py: code files are not accepted"):
        save_model_upload(files)
    assert not (home / "uploads").exists() or not list((home / "uploads").iterdir())
