"""Every bad input the issue lists, on the Compress page: a clear message, no exception, Run disabled,
nothing queued, nothing written outside the upload folder, and (for a crash) the upload kept."""

from __future__ import annotations

import tarfile
import time

import pytest
import torch

from jobs import queue
from jobs.worker import Worker
from knowledge.tables import RunStatus
from tests.app.conftest import open_page, text_of
from tests.jobs import checkpoints as ck

FAKE = "tests.jobs.fake_executors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ck.tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def errors(at) -> str:
    return "\n".join(e.value for e in at.error)


def refused(at, *needles: str) -> None:
    """The page shows an error containing every needle, the Run button is disabled, no job exists."""
    text = errors(at)
    for n in needles:
        assert n in text, f"{n!r} not in the page's errors: {text!r}"
    assert at.button(key="cmp_run").disabled
    assert queue.list_runs() == []


def upload(files: list[tuple[str, bytes]], **query):
    at = open_page("compress", {"source": "upload", **query})
    at.file_uploader(key="cmp_files").set_value([(n, d, "application/octet-stream") for n, d in files])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def by_path(path, **query):
    return open_page("compress", {"source": "path", "path": str(path), **query})


def test_archive_that_is_not_a_model(home):
    at = upload(
        [("photos.zip", ck.zip_with({"holiday/readme.md": b"# hi", "holiday/data.csv": b"a,b\n1,2"}))]
    )
    refused(at, "photos.zip does not hold a model", "config.json")


def test_folder_without_config_json(home, tiny, tmp_path):
    folder = tmp_path / "no-config"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((tiny / "model.safetensors").read_bytes())
    refused(by_path(folder), "has no config.json")


def test_loose_files_without_config_json(home, tiny):
    at = upload([("model.safetensors", (tiny / "model.safetensors").read_bytes())])
    refused(at, "have no config.json")


def test_truncated_safetensors(home, tiny, tmp_path):
    import shutil

    folder = ck.truncate_safetensors(shutil.copytree(tiny, tmp_path / "truncated"))
    refused(by_path(folder), "model.safetensors is truncated or corrupt")


def test_pickle_that_runs_code_is_refused(home, tmp_path):
    refused(
        by_path(ck.evil_pickle_checkpoint(tmp_path / "evil")),
        "refused pytorch_model.bin",
        "weights_only=True",
    )


def test_plain_tensor_pickle_is_accepted(home, tiny, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    for f in tiny.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save(load_file(str(tiny / "model.safetensors")), folder / "pytorch_model.bin")
    at = by_path(folder)
    assert not at.error, errors(at)
    assert {m.label: m.value for m in at.metric}["Architecture"] == "LlamaForCausalLM"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_archive_writes_nothing_outside(home, kind, tmp_path):
    outside = tmp_path / "escaped.txt"
    if kind == "dotdot":
        name, data = "evil.tar.gz", ck.tar_with([tarfile.TarInfo("model/../../../../escaped.txt")])
    elif kind == "absolute":
        name, data = "evil.zip", ck.zip_with({str(outside): b"pwned", "model/config.json": b"{}"})
    elif kind == "symlink":
        link = tarfile.TarInfo("model/config.json")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        name, data = "evil.tar.gz", ck.tar_with([link])
    else:
        link = tarfile.TarInfo("model/config.json")
        link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
        name, data = "evil.tar.gz", ck.tar_with([link])
    at = upload([(name, data)])
    refused(at, f"{name}: refused archive member")
    assert not outside.exists()
    assert not list((home / "uploads").glob("*")) if (home / "uploads").exists() else True


def test_upload_over_the_size_limit(home, tiny, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_MAX_UPLOAD_MB", "0.1")
    at = upload([("tiny.zip", ck.zip_bytes(tiny))])
    refused(at, "over the limit of 0 MB", "SHRINKWISE_MAX_UPLOAD_MB")


def test_good_archive_upload_is_found_and_kept(home, tiny):
    at = upload([("tiny-llama.zip", ck.zip_bytes(tiny))])
    assert not at.error, errors(at)
    assert {m.label: m.value for m in at.metric}["Architecture"] == "LlamaForCausalLM"
    (up,) = list((home / "uploads").iterdir())
    assert (up / "original" / "tiny-llama.zip").is_file()
    assert (up / "model" / "tiny-llama" / "config.json").is_file()


def test_non_causal_model(home, tmp_path):
    refused(
        by_path(ck.config_only_checkpoint(tmp_path / "bert", ck.BERT_CONFIG)),
        "not a causal language model",
        "BertModel",
    )


def test_unsupported_architecture(home, tmp_path):
    refused(
        by_path(ck.config_only_checkpoint(tmp_path / "florp", ck.UNKNOWN_CONFIG)), "unsupported architecture"
    )


def test_model_too_large_for_free_memory_is_refused_from_its_config(home, tmp_path):
    folder = ck.config_only_checkpoint(tmp_path / "huge", ck.HUGE_CONFIG)
    refused(by_path(folder), "too large for this machine", "6.74 B parameters")


def test_settings_the_compressor_rejects(home, tiny):
    refused(by_path(tiny, method="gptq", group_size="4"), "These settings are not accepted", "group_size=4")


def test_calibration_text_too_short(home, tiny):
    at = by_path(tiny, method="gptq")
    at.radio(key="cmp_text").set_value("Upload text files").run()
    at.file_uploader(key="cmp_calib_file").set_value(
        ("notes.txt", b"Too short.\n\nReally short.", "text/plain")
    )
    at.run()
    assert not at.exception
    refused(at, "evaluation text is too short")


def test_a_job_that_crashes_is_failed_with_its_error_and_the_upload_is_kept(home, tiny):
    at = upload([("tiny-llama.zip", ck.zip_bytes(tiny))])
    at.button(key="cmp_run").click().run()
    (run,) = queue.list_runs()
    assert "/uploads/" in run.model_ref
    w = Worker(executor=f"{FAKE}:crash", max_jobs=1, use_lock=False)
    t0 = time.monotonic()
    try:
        while not RunStatus(queue.get_run(run.id).status).finished:
            assert time.monotonic() - t0 < 60
            w.tick()
            time.sleep(0.1)
    finally:
        w.stop()
    page = open_page("compress", {"job": str(run.id)})
    assert "The job failed: RuntimeError: boom in layer 2 (simulated crash)" in errors(page)
    assert "Your uploaded model is kept" in text_of(page)
    from pathlib import Path

    assert (Path(run.model_ref) / "config.json").is_file()
