"""Issue 15, finding 5: entries of every kind count toward the archive limits, a per-upload unpacked
limit and a per-user quota hold, refused uploads are deleted at once, an interrupted extraction leaves
nothing, and uploads and job outputs expire (or are deleted by their owner)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import zipfile
from datetime import timedelta

import pytest

from compressors.base import CompressionError
from jobs import preflight, queue
from jobs.uploads import (
    UploadError,
    cleanup_expired,
    delete_run_and_outputs,
    delete_upload,
    list_uploads,
    save_checked_model_upload,
    save_model_upload,
    save_text_upload,
)
from knowledge.db import session
from knowledge.tables import CompressionRun, utcnow
from tests.jobs import checkpoints as ck

CONFIG = json.dumps(ck.BERT_CONFIG | {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode()


def _left(home) -> list[str]:
    """Everything under uploads/ (hidden folders included)."""
    root = home / "uploads"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def _tar_of_empty_folders(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("m/config.json")
        info.size = len(CONFIG)
        t.addfile(info, io.BytesIO(CONFIG))
        for i in range(n):
            d = tarfile.TarInfo(f"m/d{i}")
            d.type = tarfile.DIRTYPE
            t.addfile(d)
    return buf.getvalue()


def test_ten_thousand_empty_folders_are_refused_by_the_count_limit(home):
    data = _tar_of_empty_folders(10_000)
    with pytest.raises(UploadError, match=r"entries .*at most 1000 files and folders"):
        save_model_upload([("dirs.tar.gz", data)])
    assert _left(home) == []


def test_folders_implied_by_paths_count_too(home):
    """400 files, each three folders deep, and not one folder entry: 1600 paths, over the count."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(400):
            z.writestr(f"a{i}/b/c/f.txt", b"")
    with pytest.raises(UploadError, match=r"1600 entries \(400 files, 1200 folders\)"):
        save_model_upload([("deep.zip", buf.getvalue())])
    assert _left(home) == []


def test_a_bomb_over_the_unpacked_limit_is_refused_and_nothing_is_left(home, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_MAX_UNPACKED_MB", "1")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/config.json", CONFIG)
        z.writestr("m/model.safetensors", b"\0" * (8 * 2**20))
    assert len(buf.getvalue()) < 100_000  # a small upload...
    with pytest.raises(UploadError, match=r"expands to more than .*at most 1 MB unpacked per upload"):
        save_model_upload([("bomb.zip", buf.getvalue())])  # ...that would unpack to 8 MB
    assert _left(home) == []


def test_a_lying_header_is_stopped_while_writing_and_nothing_is_left(home, monkeypatch):
    """Sizes in the header say 0 bytes; the data is 3 MB: counted while writing, refused, removed."""
    monkeypatch.setenv("SHRINKWISE_MAX_UNPACKED_MB", "1")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/config.json", CONFIG)
        z.writestr("m/big.bin", b"\0" * (3 * 2**20))
    raw = bytearray(buf.getvalue())
    cd = raw.rfind(b"PK\x01\x02")  # the central directory entry of big.bin: its uncompressed size
    raw[cd + 24 : cd + 28] = (1).to_bytes(4, "little")
    with pytest.raises(UploadError):
        save_model_upload([("liar.zip", bytes(raw))])
    assert _left(home) == []


def test_an_interrupted_extraction_leaves_nothing_behind(home, monkeypatch):
    from compressors import storage

    calls = []
    real = storage._copy_limited

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the server stopped mid-extraction
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "_copy_limited", interrupted)
    src = ck.tiny_checkpoint(home / "src")
    with pytest.raises(KeyboardInterrupt):
        save_model_upload([("m.zip", ck.zip_bytes(src))])
    assert _left(home) == []


def test_a_failed_extraction_leaves_no_partial_folder(tmp_path, monkeypatch):
    from compressors import storage

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "secret" / "path"))

    monkeypatch.setattr(storage, "_copy_limited", disk_full)
    arc = tmp_path / "a.zip"
    arc.write_bytes(ck.zip_with({"m/config.json": b"{}"}))
    with pytest.raises(storage.UnsafeArchive, match="could not be extracted: No space left on device") as exc:
        storage.safe_extract(arc, tmp_path / "out")
    assert "secret" not in str(exc.value)  # no server paths in the message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


@pytest.mark.parametrize("kind", ["pickle", "encoder"])
def test_uploads_refused_by_the_model_check_are_deleted_at_once(home, tmp_path, kind):
    folder = (
        ck.evil_pickle_checkpoint(tmp_path / "evil")
        if kind == "pickle"
        else ck.config_only_checkpoint(tmp_path / "bert", ck.BERT_CONFIG)
    )
    files = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
    # the check runs in a child process (bounded inspection), which reports a refusal as ModelLoadError
    with pytest.raises(CompressionError, match="pickle" if kind == "pickle" else "encoder|causal"):
        save_checked_model_upload(files, preflight.check_model)
    assert _left(home) == []


def test_corrupt_upload_refused_by_the_model_check_is_deleted(home, tmp_path):
    folder = ck.truncate_safetensors(ck.tiny_checkpoint(tmp_path / "t"))
    files = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
    with pytest.raises(CompressionError):
        save_checked_model_upload(files, preflight.check_model)
    assert _left(home) == []


def test_per_user_quota_and_deleting_ones_own(home, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_UPLOAD_QUOTA_MB", "1")
    files = [("config.json", CONFIG), ("model.safetensors", b"x" * 600_000)]
    first = save_model_upload(files, owner="ann")
    with pytest.raises(UploadError, match=r"over the quota of 1 MB .*History page"):
        save_model_upload(files, owner="ann")
    with pytest.raises(UploadError, match="quota"):
        save_text_upload("notes.txt", b"x" * 600_000, owner="ann")
    other = save_model_upload(files, owner="bob")  # another user's quota is their own
    local = save_model_upload(files)  # local mode: one quota for the local user
    assert [u.upload_id for u in list_uploads("ann")] == [first.upload_id]
    with pytest.raises(UploadError, match="of yours"):
        delete_upload(other.upload_id, owner="ann")
    with pytest.raises(UploadError, match="no upload"):
        delete_upload("../../etc", owner="ann")
    delete_upload(first.upload_id, owner="ann")
    assert not first.folder.exists() and other.folder.exists() and local.folder.exists()
    save_model_upload(files, owner="ann")  # room again


def _age_upload(folder, days: float) -> None:
    meta = json.loads((folder / "upload.json").read_text())
    meta["created"] = time.time() - days * 86400
    (folder / "upload.json").write_text(json.dumps(meta))


def _finished_run(home, days_ago: float) -> int:
    run = queue.create_run(model_ref="demo", model_name="tiny", method="gptq", compressor="gptq")
    queue.claim_next_run("w")
    queue.fail_run(run.stored_id, "x")
    with session() as s:
        row = s.get(CompressionRun, run.stored_id)
        row.finished_at = utcnow() - timedelta(days=days_ago)
        s.add(row)
    out = home / "runs" / str(run.stored_id)
    (out / "model").mkdir(parents=True)
    (out / "model.zip").write_bytes(b"z")
    return run.stored_id


def test_expiry_removes_old_uploads_and_outputs_and_keeps_recent_ones(home, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_RETENTION_DAYS", "7")
    files = [("config.json", CONFIG)]
    old, recent, in_use = (save_model_upload(files) for _ in range(3))
    _age_upload(old.folder, 8)
    _age_upload(in_use.folder, 30)
    queue.create_run(model_ref=in_use.model_ref, model_name="m", method="gptq", compressor="gptq")  # queued
    debris, fresh_debris = home / "uploads" / "20200101-000000-deadbeef", home / "uploads" / "partial-now"
    (debris / ".model.extracting-1234").mkdir(parents=True)  # a killed upload: no upload.json
    os.utime(debris, (time.time() - 7200, time.time() - 7200))
    fresh_debris.mkdir()  # may be an upload in progress right now
    old_run, new_run = _finished_run(home, 8), _finished_run(home, 1)

    removed = cleanup_expired()

    assert sorted(p.name for p in removed) == sorted([old.upload_id, debris.name, str(old_run)])
    assert not old.folder.exists() and recent.folder.exists() and in_use.folder.exists()
    assert fresh_debris.exists() and not debris.exists()
    assert not (home / "runs" / str(old_run)).exists() and (home / "runs" / str(new_run)).is_dir()
    assert queue.get_run(old_run) is not None  # the history row stays; only its files go


def test_retention_zero_keeps_everything(home, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_RETENTION_DAYS", "0")
    saved = save_model_upload([("config.json", CONFIG)])
    _age_upload(saved.folder, 3650)
    run = _finished_run(home, 3650)
    assert cleanup_expired() == []
    assert saved.folder.exists() and (home / "runs" / str(run)).exists()


def test_worker_start_cleans_up(home, monkeypatch):
    from jobs.worker import Worker

    monkeypatch.setenv("SHRINKWISE_RETENTION_DAYS", "1")
    saved = save_model_upload([("config.json", CONFIG)])
    _age_upload(saved.folder, 2)
    w = Worker(executor="tests.jobs.fake_executors:quick", use_lock=False)
    assert w.start()
    w.stop()
    assert not saved.folder.exists()


def test_a_user_deletes_a_finished_run_and_its_files(home):
    run = _finished_run(home, 0)
    delete_run_and_outputs(run)
    assert queue.get_run(run) is None and not (home / "runs" / str(run)).exists()
    active = queue.create_run(model_ref="demo", model_name="m", method="gptq", compressor="gptq")
    with pytest.raises(UploadError, match="cancel it first"):
        delete_run_and_outputs(active.stored_id)
