"""Every bad input the issue lists, on the Compress page: a clear message, no exception, Run disabled,
nothing queued, nothing written outside the upload folder, and (for a crash) the upload kept."""

from __future__ import annotations

import re
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
    """The page's errors as a reader sees them (user-supplied names in them are Markdown-escaped)."""
    return re.sub(r"\\(.)", r"\1", "\n".join(e.value for e in at.error))


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


# --- issue 15, finding 7: checks that mean it ------------------------------------------------------------


def test_an_encoder_config_without_architectures_is_refused(home, tmp_path):
    cfg = {k: v for k, v in ck.BERT_CONFIG.items() if k != "architectures"}
    refused(
        by_path(ck.config_only_checkpoint(tmp_path / "bert", cfg)), "not a causal language model", "encoder"
    )


def test_weights_that_do_not_fit_the_config_are_refused_before_queueing(home, tmp_path):
    bad = ck.mismatched_checkpoint(tmp_path / "mismatched")
    refused(by_path(bad), "do not match its config.json", "model.embed_tokens.weight")


def test_a_negative_hidden_size_is_refused_not_counted(home, tmp_path):
    folder = ck.config_only_checkpoint(tmp_path / "neg", dict(ck.HUGE_CONFIG, hidden_size=-64))
    at = by_path(folder)
    refused(at, "hidden_size = -64")
    assert "parameters" not in " ".join(str(m.value) for m in at.metric)


@pytest.mark.parametrize(
    "query,refusal",
    [({"bits": "16"}, "Refused ?bits=16: not one of 2, 3, 4, 8."), ({"seq_len": "1"}, "Refused ?seq_len=1")],
)
def test_out_of_range_link_parameters_are_refused_never_coerced(home, tiny, query, refusal):
    at = by_path(tiny, method="gptq", **query)
    warnings = "\n".join(w.value for w in at.warning).replace("\\", "")
    assert refusal in warnings, warnings
    assert at.button(key="cmp_run").disabled
    if "bits" in query:
        assert at.selectbox(key="cmp_gptq_bits").value != 2  # not silently the first choice
    at.button(key="cmp_clear_qp").click().run()
    assert not at.exception
    assert not [w for w in at.warning if "Refused" in w.value]
    assert not at.button(key="cmp_run").disabled


HOSTILE = "[Session expired - click here](https:x.example)"


def test_user_names_are_shown_as_plain_text_never_markdown(home, tiny):
    from jobs.ui import plain

    at = upload([("tiny.zip", ck.zip_bytes(tiny, prefix=HOSTILE))])
    shown = text_of(at)
    assert plain(HOSTILE) in shown, shown  # the name is on the page, escaped
    assert HOSTILE not in shown.replace(plain(HOSTILE), "")
    run = queue.create_run(model_ref=str(tiny), model_name=HOSTILE, method="gptq", compressor="gptq")
    queue.fail_run(run.id, f"cannot read {HOSTILE}")
    page = open_page("compress", {"job": str(run.id)})
    shown = text_of(page)
    assert plain(HOSTILE) in shown and HOSTILE not in shown.replace(plain(HOSTILE), ""), shown
