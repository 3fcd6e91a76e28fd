"""Uploaded checkpoints and text files: saved under ``<data>/uploads/<id>/``, checked, never deleted by a job.

What a user may upload (the Compress page):

* one archive (``.zip``, ``.tar.gz``/``.tgz``, ``.tar``) of a Hugging Face model folder: extracted with
  :func:`compressors.storage.safe_extract` (no ``../``, no absolute paths, no links or devices, limits
  on file count and bytes) into ``model/``, then the folder holding ``config.json`` is found;
* loose files (``config.json``, ``*.safetensors``, tokenizer files): saved side by side in ``model/``
  under their base names only;
* one ``.gguf`` file.

The original archive is kept in ``original/`` so a failed job loses nothing. Every refusal raises
:class:`UploadError` (a ``CompressionError``) whose message says what was wrong and what to do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from compressors.base import CompressionError

log = logging.getLogger(__name__)

ENV_MAX_UPLOAD_MB = "SHRINKWISE_MAX_UPLOAD_MB"
#: Same default as ``server.maxUploadSize`` in .streamlit/config.toml.
DEFAULT_MAX_UPLOAD_MB = 2048
#: An archive may expand to at most this many times the upload limit (stops zip bombs).
EXPAND_FACTOR = 4
MAX_FILES = 1000
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+\-][A-Za-z0-9._+\- ]{0,200}$")

FileLike = bytes | BinaryIO


class UploadError(CompressionError):
    """An upload was refused; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class SavedUpload:
    upload_id: str
    folder: Path  # uploads/<id>/
    model_ref: str  # what load_model / inspect_checkpoint accept: the model folder or the .gguf
    files: tuple[str, ...]
    total_bytes: int


def max_upload_bytes() -> int:
    raw = os.environ.get(ENV_MAX_UPLOAD_MB, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise UploadError(f"{ENV_MAX_UPLOAD_MB}={raw!r} is not a number of megabytes; e.g. 2048") from None
    return int(mb * 2**20)


def uploads_root() -> Path:
    from knowledge.paths import data_home

    return data_home() / "uploads"


def _size_of(data: FileLike) -> int:
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    pos = data.tell()
    data.seek(0, os.SEEK_END)
    size = data.tell()
    data.seek(pos)
    return size


def _write(data: FileLike, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, (bytes, bytearray)):
        target.write_bytes(bytes(data))
        return
    data.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(data, out, 1 << 20)


def safe_file_name(name: str) -> str:
    """The base name of an uploaded file, refused if it tries to be a path or hides odd characters."""
    if "/" in name or "\\" in name:
        raise UploadError(
            f"refused the file name {name!r}: it contains a folder path; upload the file itself"
        )
    if name in ("", ".", "..") or not _SAFE_NAME.match(name):
        raise UploadError(
            f"refused the file name {name!r}: use plain names such as config.json or model.safetensors"
        )
    base = name
    return base


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def save_model_upload(
    files: Iterable[tuple[str, FileLike]], *, limit_bytes: int | None = None, owner: str | None = None
) -> SavedUpload:
    """Save what the user uploaded and return where the model is; refuse anything unsafe or unusable.

    On a refusal the new upload folder is removed (nothing unsafe stays on disk) and :class:`UploadError`
    is raised. The model itself is not inspected here: call :func:`compressors.models.inspect_checkpoint`
    on ``model_ref`` (and :func:`check_pickles`) to learn what it is.
    """
    from compressors.storage import UnsafeArchive, find_model_root, safe_extract

    files = [(str(n), d) for n, d in files]
    if not files:
        raise UploadError(
            "no files were uploaded; choose a .zip/.tar.gz of a model folder, its loose files, or a .gguf"
        )
    limit = limit_bytes if limit_bytes is not None else max_upload_bytes()
    total = sum(_size_of(d) for _, d in files)
    if total > limit:
        raise UploadError(
            f"the upload is {total / 2**20:.1f} MB, over the limit of {limit / 2**20:.0f} MB; "
            f"raise {ENV_MAX_UPLOAD_MB} and server.maxUploadSize, or give the model's path on the server instead"
        )
    names = [safe_file_name(n) for n, _ in files]
    if len(set(names)) != len(names):
        raise UploadError(f"two uploaded files have the same name: {sorted(names)}")
    archives = [n for n in names if is_archive(n)]
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    if archives and len(files) > 1:
        raise UploadError(
            f"upload one archive on its own (got {archives[0]} together with {len(files) - 1} other file(s))"
        )
    if ggufs and len(files) > 1:
        raise UploadError(
            f"upload one .gguf on its own (got {ggufs[0]} together with {len(files) - 1} other file(s))"
        )

    upload_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    folder = uploads_root() / upload_id
    model_dir = folder / "model"
    try:
        model_dir.mkdir(parents=True)
        if archives:
            original = folder / "original" / names[0]
            _write(files[0][1], original)
            try:
                safe_extract(original, model_dir, max_files=MAX_FILES, max_total_bytes=limit * EXPAND_FACTOR)
            except UnsafeArchive as exc:
                raise UploadError(f"{names[0]}: {exc}") from None
            try:
                root = find_model_root(model_dir)
            except CompressionError:
                found = sorted(
                    p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()
                )[:8]
                raise UploadError(
                    f"{names[0]} does not hold a model: no config.json (or single .gguf) at its top level or "
                    f"inside one folder; it holds {found or 'no files'}. Archive the model folder itself "
                    "(config.json, *.safetensors, tokenizer files)."
                ) from None
        else:
            for name, (_, data) in zip(names, files):
                _write(data, model_dir / name)
            root = model_dir / ggufs[0] if ggufs else model_dir
            if not ggufs and not (model_dir / "config.json").is_file():
                raise UploadError(
                    f"the uploaded files ({', '.join(sorted(names))}) have no config.json; a Hugging Face model "
                    "needs config.json next to its *.safetensors weights and tokenizer files"
                )
        (folder / "upload.json").write_text(
            json.dumps(
                {"files": names, "bytes": total, "model": str(root), "created": time.time(), "owner": owner}
            )
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("saved upload %s (%d file(s), %.1f MB): model at %s", upload_id, len(names), total / 2**20, root)
    return SavedUpload(upload_id, folder, str(root), tuple(names), total)


def save_text_upload(
    name: str, data: FileLike, *, limit_bytes: int = 64 * 2**20, owner: str | None = None
) -> Path:
    """Save an uploaded calibration/evaluation ``.txt`` under ``uploads/<id>/text/``; returns its path.
    ``owner`` (jobs.access) is written to ``uploads/<id>/upload.json``."""
    base = safe_file_name(name)
    size = _size_of(data)
    if size > limit_bytes:
        raise UploadError(
            f"{base} is {size / 2**20:.1f} MB; text files up to {limit_bytes / 2**20:.0f} MB are accepted"
        )
    raw = data if isinstance(data, (bytes, bytearray)) else (data.seek(0), data.read())[1]
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UploadError(
            f"{base} is not UTF-8 text (byte {exc.start}); save it as UTF-8 plain text"
        ) from None
    folder = uploads_root() / (time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]) / "text"
    folder.mkdir(parents=True)
    path = folder / base
    path.write_bytes(bytes(raw))
    (folder.parent / "upload.json").write_text(json.dumps({"files": [base], "text": True, "owner": owner}))
    return path


def check_pickles(model_ref: str | Path) -> None:
    """Refuse ``*.bin``/``*.pt`` weights that do not load with ``torch.load(weights_only=True)``.

    Checked on upload so a malicious pickle is refused on the page, before any job runs (loading with
    ``weights_only=True`` executes no code; tensors are memory-mapped, not read).
    """
    import pickle

    import torch

    folder = Path(model_ref)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    for f in sorted(list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth"))):
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise UploadError(
                f"refused {f.name}: it is a pickle that does not load with torch.load(weights_only=True) ({first}). "
                "Pickles can run code; convert the weights to safetensors where you trust them and upload those."
            ) from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UploadError(f"refused {f.name}: it holds {type(obj).__name__}, not a dict of tensors")
