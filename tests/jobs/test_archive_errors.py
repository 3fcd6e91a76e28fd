"""Issue 15, finding 8: every archive error is a clear message (no traceback), a user's folder name is
never read as Markdown, the pickle refusal is whole sentences, and a failed inspection is not cached."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from markdown_it import MarkdownIt

from jobs import queue
from jobs.backend import JobInfo
from jobs.uploads import UploadError, check_pickles, save_model_upload
from tests.jobs import checkpoints as ck

CONFIG = b'{"model_type": "llama"}'


def _stored_zip() -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/config.json", CONFIG * 50)
    return bytearray(buf.getvalue())


def _corrupt_deflate() -> bytes:
    raw = _stored_zip()
    start = 30 + len("m/config.json")  # the compressed data after the first local header
    raw[start : start + 4] = b"\xff\xff\xff\xff"  # an invalid deflate block type
    return bytes(raw)


def _encrypted() -> bytes:
    raw = _stored_zip()
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" general-purpose bit
        at = raw.find(sig)
        raw[at + flag_at] |= 0x01
    return bytes(raw)


def _deflate64() -> bytes:
    raw = _stored_zip()
    for sig, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method 9
        at = raw.find(sig)
        raw[at + method_at : at + method_at + 2] = (9).to_bytes(2, "little")
    return bytes(raw)


@pytest.mark.parametrize(
    "make,message",
    [
        (_corrupt_deflate, r"bad\.zip: bad\.zip is corrupt: its compressed data does not decompress"),
        (_encrypted, r"bad\.zip is encrypted .*upload an archive made without a password"),
        (_deflate64, r"compression Shrinkwise cannot read \(deflate64.*standard zip compression"),
    ],
)
def test_unreadable_zips_give_a_clear_message_and_leave_nothing(home, make, message):
    with pytest.raises(UploadError, match=message) as exc:
        save_model_upload([("bad.zip", make())])
    assert "Traceback" not in str(exc.value) and "Error -3" not in str(exc.value).split("(")[0]
    assert not (home / "uploads").exists() or not any((home / "uploads").iterdir())


EVIL = "[Session expired - click here](https://x)"


def _html(markdown: str) -> str:
    return MarkdownIt("commonmark").render(markdown)


def test_an_archive_folder_name_is_plain_text_in_the_job_panel(home):
    from jobs import ui

    run = queue.create_run(model_ref="demo", model_name=EVIL, method="gptq", compressor="gptq")
    title = ui.job_title(JobInfo.from_row(run))
    html = _html(f"**{title}**")
    assert "<a" not in html and "href" not in html
    assert EVIL in html.replace("&quot;", '"')  # shown exactly as written
    for text in ("<img src=x onerror=alert(1)>", "**bold** _it_ `code` :red[x] $x^2$", "# head"):
        rendered = _html(ui.plain(text))
        assert "<img" not in rendered and "<strong>" not in rendered and "<code>" not in rendered
        assert "<h1>" not in rendered and "\\" not in rendered


def test_the_pickle_refusal_is_complete_sentences(tmp_path):
    folder = ck.evil_pickle_checkpoint(tmp_path / "evil")
    with pytest.raises(UploadError) as exc:
        check_pickles(folder)
    message = str(exc.value)
    assert message.startswith("refused pytorch_model.bin: it is a pickle that torch.load(weights_only=True)")
    assert "Re-running" not in message and "mmap" not in message
    assert "torch says: " in message and message.endswith("upload those.")
    assert "can run code on the server" in message


def test_a_fixed_model_is_inspected_again(tmp_path):
    """The first look fails (broken config.json); once the file is fixed, the next look reads it again
    (failures are never cached), even though the folder's own modification time did not change."""
    import os

    from jobs import ui

    folder = ck.tiny_checkpoint(tmp_path / "m")
    good = (folder / "config.json").read_text()
    (folder / "config.json").write_text("{ not json")
    folder_time = os.stat(folder).st_mtime
    info, error = ui.inspect_model(str(folder))
    assert info is None and error
    (folder / "config.json").write_text(json.dumps(json.loads(good)))
    os.utime(folder, (folder_time, folder_time))
    info, error = ui.inspect_model(str(folder))
    assert error is None and info.n_layers == 2
