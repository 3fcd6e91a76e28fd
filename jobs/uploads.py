"""Uploaded checkpoints and text files: saved under ``<data>/uploads/<id>/``, checked, never deleted by a job.

What a user may upload (the Compress page):

* one archive (``.zip``, ``.tar.gz``/``.tgz``, ``.tar``) of a Hugging Face model folder: extracted with
  :func:`compressors.storage.safe_extract` (no ``../``, no absolute paths, no links or devices, limits
  on file count and bytes) into ``model/``, then the folder holding ``config.json`` is found;
* loose files (``config.json``, ``*.safetensors``, tokenizer files): saved side by side in ``model/``
  under their base names only;
* one ``.gguf`` file.

Code files (``*.py`` and compiled modules) are refused among loose files and deleted from an extracted
archive: Shrinkwise never runs code shipped with a model, and none travels into an output.

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
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from compressors.base import CompressionError

log = logging.getLogger(__name__)

ENV_MAX_UPLOAD_MB = "SHRINKWISE_MAX_UPLOAD_MB"
#: Same default as ``server.maxUploadSize`` in .streamlit/config.toml.
DEFAULT_MAX_UPLOAD_MB = 2048
#: How much one upload may take on disk once unpacked (an archive's contents, or the loose files).
ENV_MAX_UNPACKED_MB = "SHRINKWISE_MAX_UNPACKED_MB"
#: The default fits the largest model an upload can bring (2 GB of safetensors barely compress) twice over.
DEFAULT_MAX_UNPACKED_MB = 4096
#: How much all the uploads of one user may take on disk together (one quota for everyone in local mode).
ENV_UPLOAD_QUOTA_MB = "SHRINKWISE_UPLOAD_QUOTA_MB"
DEFAULT_UPLOAD_QUOTA_MB = 16384
#: Uploads and job outputs older than this many days are deleted (0: never).
ENV_RETENTION_DAYS = "SHRINKWISE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 14.0
#: An upload folder without its ``upload.json`` this old is the debris of an interrupted upload.
DEBRIS_AFTER_S = 3600.0
#: Files and folders an archive may hold, together.
MAX_FILES = 1000
META = "upload.json"
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+\-][A-Za-z0-9._+\- ]{0,200}$")

FileLike = bytes | BinaryIO
T = TypeVar("T")


class UploadError(CompressionError):
    """An upload was refused; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class SavedUpload:
    upload_id: str
    folder: Path  # uploads/<id>/
    model_ref: str  # what load_model / inspect_checkpoint accept: the model folder or the .gguf
    files: tuple[str, ...]
    total_bytes: int


def larger_models_advice() -> str:
    """The ways to bring a model larger than an upload may be, for the refusal (issue 12)."""
    from jobs.access import ENV_MODELS_DIR, models_dir

    folder = f"put the model's folder under the models folder {models_dir()} ({ENV_MODELS_DIR} moves it)"
    return (
        f"{folder} and pick it there, pick it from the Hugging Face cache, or give its hub id (owner/name) "
        "to download it on the server"
    )


def max_upload_bytes() -> int:
    raw = os.environ.get(ENV_MAX_UPLOAD_MB, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise UploadError(f"{ENV_MAX_UPLOAD_MB}={raw!r} is not a number of megabytes; e.g. 2048") from None
    return int(mb * 2**20)


def _mb_setting(env: str, default: float) -> int:
    raw = os.environ.get(env, "").strip()
    try:
        mb = float(raw) if raw else default
    except ValueError:
        raise UploadError(f"{env}={raw!r} is not a number of megabytes; e.g. {default:.0f}") from None
    return int(mb * 2**20)


def max_unpacked_bytes() -> int:
    """``SHRINKWISE_MAX_UNPACKED_MB`` (default 4096): the most one upload may take on disk unpacked."""
    return _mb_setting(ENV_MAX_UNPACKED_MB, DEFAULT_MAX_UNPACKED_MB)


def upload_quota_bytes() -> int:
    """``SHRINKWISE_UPLOAD_QUOTA_MB`` (default 16384): the most one user's uploads may take together."""
    return _mb_setting(ENV_UPLOAD_QUOTA_MB, DEFAULT_UPLOAD_QUOTA_MB)


def retention_s() -> float | None:
    """``SHRINKWISE_RETENTION_DAYS`` (default 14) in seconds; None when set to 0 (keep everything)."""
    raw = os.environ.get(ENV_RETENTION_DAYS, "").strip()
    try:
        days = float(raw) if raw else DEFAULT_RETENTION_DAYS
    except ValueError:
        raise UploadError(f"{ENV_RETENTION_DAYS}={raw!r} is not a number of days; e.g. 14") from None
    return days * 86400.0 if days > 0 else None


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
    files: Iterable[tuple[str, FileLike]],
    *,
    limit_bytes: int | None = None,
    unpacked_limit_bytes: int | None = None,
    owner: str | None = None,
) -> SavedUpload:
    """Save what the user uploaded and return where the model is; refuse anything unsafe or unusable.

    On a refusal the new upload folder is removed (nothing unsafe stays on disk) and :class:`UploadError`
    is raised. The model itself is not inspected here: call :func:`compressors.models.inspect_checkpoint`
    on ``model_ref`` (and :func:`check_pickles`) to learn what it is.
    """
    from compressors.storage import UnsafeArchive, drop_code_files, find_model_root, safe_extract

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
            f"{larger_models_advice()}, or raise {ENV_MAX_UPLOAD_MB} and server.maxUploadSize"
        )
    unpacked_limit = unpacked_limit_bytes if unpacked_limit_bytes is not None else max_unpacked_bytes()
    if total > unpacked_limit:
        raise UploadError(
            f"the upload is {total / 2**20:.1f} MB, over the limit of {unpacked_limit / 2**20:.0f} MB per model "
            f"({ENV_MAX_UNPACKED_MB}); {larger_models_advice()}"
        )
    quota, used = upload_quota_bytes(), upload_usage(owner)
    if used + total > quota:
        raise UploadError(_quota_message(owner, used, total, quota))
    names = [safe_file_name(n) for n, _ in files]
    from compressors.storage import CODE_SUFFIXES

    code = [n for n in names if n.lower().endswith(CODE_SUFFIXES)]
    if code:
        raise UploadError(
            f"refused {', '.join(code)}: code files are not accepted (Shrinkwise never runs code shipped "
            "with a model); upload config.json, the *.safetensors weights and the tokenizer files only"
        )
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
        folder.mkdir(parents=True)
        if archives:
            original = folder / "original" / names[0]
            _write(files[0][1], original)
            try:
                safe_extract(original, model_dir, max_files=MAX_FILES, max_total_bytes=unpacked_limit)
            except UnsafeArchive as exc:
                raise UploadError(
                    f"{names[0]}: {exc}"
                    + (
                        f" (at most {unpacked_limit / 2**20:.0f} MB unpacked per upload, {ENV_MAX_UNPACKED_MB})"
                        if "expands to more than" in str(exc)
                        else ""
                    )
                ) from None
            on_disk = _disk_bytes(folder)
            if used + on_disk > quota:
                raise UploadError(_quota_message(owner, used, on_disk, quota))
            dropped = drop_code_files(model_dir)  # never run, never copied into an output
            if dropped:
                log.warning("upload %s: dropped %d code file(s): %s", upload_id, len(dropped), dropped[:8])
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
            model_dir.mkdir()
            for name, (_, data) in zip(names, files):
                _write(data, model_dir / name)
            root = model_dir / ggufs[0] if ggufs else model_dir
            if not ggufs and not (model_dir / "config.json").is_file():
                raise UploadError(
                    f"the uploaded files ({', '.join(sorted(names))}) have no config.json; a Hugging Face model "
                    "needs config.json next to its *.safetensors weights and tokenizer files"
                )
        (folder / META).write_text(
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
    quota, used = upload_quota_bytes(), upload_usage(owner)
    if used + size > quota:
        raise UploadError(_quota_message(owner, used, size, quota))
    upload = uploads_root() / (time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8])
    folder = upload / "text"
    try:
        folder.mkdir(parents=True)
        path = folder / base
        path.write_bytes(bytes(raw))
        (upload / META).write_text(
            json.dumps({"files": [base], "bytes": size, "created": time.time(), "owner": owner, "text": True})
        )
    except BaseException:
        shutil.rmtree(upload, ignore_errors=True)
        raise
    return path


def pickle_refusal(name: str, exc: BaseException) -> str:
    """The page's refusal of a pickle, in whole sentences: what was found (the one line of torch's long
    message that says it, e.g. ``Unsupported global: GLOBAL posix.system``), why that matters, what to do."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = found.group(1).strip() if found else ""
    if not detail:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if len(detail) > 160:
        detail = detail[:157].rstrip() + "..."
    detail = detail.rstrip(".")
    return (
        f"refused {name}: it is a pickle that torch.load(weights_only=True) does not accept "
        f"(torch says: {detail}). Loading such a file can run code on the server, so Shrinkwise never "
        "loads it. Convert the weights to safetensors on a machine where you trust them, and upload those."
    )


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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4 ..."
                try:
                    obj = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as exc:  # a legacy (not zip) torch file cannot be memory-mapped
                    if "mmap can only be used" not in str(exc):
                        raise
                    obj = torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as exc:
            raise UploadError(pickle_refusal(f.name, exc)) from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UploadError(f"refused {f.name}: it holds {type(obj).__name__}, not a dict of tensors")


# ---------------------------------------------------------------------------------------------------
# disk budgets: refused uploads deleted at once, a quota per user, expiry, deleting one's own

_UPLOAD_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class UploadRecord:
    """One upload folder as the History page lists it."""

    upload_id: str
    folder: Path
    owner: str | None
    files: tuple[str, ...]
    created: float
    disk_bytes: int
    in_use: bool  # a queued or running job reads it


def _disk_bytes(path: Path) -> int:
    """Bytes a folder takes: its files' sizes, and one block for every file and folder."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        total += 4096 * (len(dirnames) + 1)
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _quota_message(owner: str | None, used: int, adding: int, quota: int) -> str:
    who = "your uploads" if owner is not None else "the uploads on this server"
    return (
        f"this upload ({adding / 2**20:.1f} MB) would take {who} to {(used + adding) / 2**20:.0f} MB, over the "
        f"quota of {quota / 2**20:.0f} MB ({ENV_UPLOAD_QUOTA_MB}); delete uploads you no longer need on the "
        "History page and try again"
    )


def _active_paths(url: str | None = None) -> list[Path]:
    """Paths that queued or running jobs read (their model and text files): never deleted under them."""
    from jobs.queue import list_runs
    from knowledge.tables import RunStatus

    paths = []
    for run in list_runs(status=[RunStatus.QUEUED, RunStatus.RUNNING], url=url):
        paths.append(Path(run.model_ref))
        for value in (run.calibration or {}).values():
            if isinstance(value, str) and value:
                paths.append(Path(value))
    return paths


def _used_by(folder: Path, active: list[Path]) -> bool:
    folder = folder.resolve()
    return any(p == folder or folder in p.parents for p in (a.resolve() for a in active))


def list_uploads(
    owner: str | None = None, *, every_owner: bool = False, url: str | None = None
) -> list[UploadRecord]:
    """The finished uploads of ``owner`` (None: the local user), newest first; ``every_owner``: all."""
    root = uploads_root()
    if not root.is_dir():
        return []
    active = _active_paths(url)
    out = []
    for folder in sorted(root.iterdir(), reverse=True):
        meta = _meta(folder) if folder.is_dir() else None
        if meta is None or (not every_owner and meta.get("owner") != owner):
            continue
        out.append(
            UploadRecord(
                upload_id=folder.name,
                folder=folder,
                owner=meta.get("owner"),
                files=tuple(str(f) for f in meta.get("files") or ()),
                created=float(meta.get("created") or folder.stat().st_mtime),
                disk_bytes=_disk_bytes(folder),
                in_use=_used_by(folder, active),
            )
        )
    return out


def upload_usage(owner: str | None = None) -> int:
    """Bytes on disk of the uploads of ``owner`` (None: the local user): what the quota counts."""
    root = uploads_root()
    if not root.is_dir():
        return 0
    total = 0
    for folder in root.iterdir():
        meta = _meta(folder) if folder.is_dir() else None
        if meta is not None and meta.get("owner") == owner:
            total += _disk_bytes(folder)
    return total


def discard_upload(upload: SavedUpload | str | Path) -> None:
    """Delete a just-saved upload at once (it was refused by a later check: pickle, encoder, corrupt)."""
    folder = upload.folder if isinstance(upload, SavedUpload) else Path(upload)
    root = uploads_root().resolve()
    folder = folder.resolve()
    if folder.parent != root:
        raise UploadError(f"{folder} is not an upload folder")
    shutil.rmtree(folder, ignore_errors=True)
    log.info("deleted the refused upload %s", folder.name)


def delete_upload(upload_id: str, owner: str | None = None, *, url: str | None = None) -> None:
    """Delete one of ``owner``'s uploads (the History page's Delete); refused while a job reads it."""
    if not _UPLOAD_ID.match(upload_id):
        raise UploadError(f"there is no upload {upload_id!r}")
    folder = uploads_root() / upload_id
    meta = _meta(folder)
    if meta is None or meta.get("owner") != owner:
        raise UploadError(f"there is no upload {upload_id!r} of yours")
    if _used_by(folder, _active_paths(url)):
        raise UploadError(f"upload {upload_id} is used by a queued or running job; cancel it first")
    shutil.rmtree(folder, ignore_errors=True)
    log.info("deleted upload %s at its owner's request", upload_id)


def save_checked_model_upload(
    files: Iterable[tuple[str, FileLike]],
    check: Callable[[str], T],
    *,
    owner: str | None = None,
    limit_bytes: int | None = None,
) -> tuple[SavedUpload, T]:
    """:func:`save_model_upload`, then ``check(model_ref)`` (the page's model check: pickles, encoders,
    corrupt weights, memory); an upload the check refuses is deleted at once, so nothing refused stays."""
    saved = save_model_upload(files, limit_bytes=limit_bytes, owner=owner)
    try:
        return saved, check(saved.model_ref)
    except BaseException:
        discard_upload(saved)
        raise


def cleanup_expired(
    *, max_age_s: float | None = None, now: float | None = None, url: str | None = None
) -> list[Path]:
    """Delete uploads and job outputs older than the retention time; returns what was deleted.

    Called at every worker start and page visit. ``max_age_s`` defaults to ``SHRINKWISE_RETENTION_DAYS``
    (14 days; 0 keeps everything). Uploads count from when they were saved, a job's outputs
    (``<data>/runs/<id>/``) from when it finished; whatever a queued or running job reads is kept.
    Upload folders left half-written by an interrupted upload (no ``upload.json``) go after an hour.
    """
    from jobs.queue import list_runs
    from knowledge.paths import data_home
    from knowledge.tables import RunStatus

    max_age = retention_s() if max_age_s is None else max_age_s
    now = time.time() if now is None else now
    removed: list[Path] = []
    root = uploads_root()
    active = _active_paths(url) if root.is_dir() else []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        meta = _meta(folder)
        if meta is None:
            try:
                old = now - folder.stat().st_mtime > DEBRIS_AFTER_S
            except OSError:
                continue
        else:
            old = max_age is not None and now - float(meta.get("created") or 0) > max_age
        if old and not _used_by(folder, active):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    runs_root = data_home() / "runs"
    if max_age is not None and runs_root.is_dir():
        finished = {
            r.stored_id: r.finished_at
            for r in list_runs(status=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED], url=url)
        }
        for folder in sorted(runs_root.iterdir()):
            if not (folder.is_dir() and folder.name.isdigit()) or int(folder.name) not in finished:
                continue
            ended = finished[int(folder.name)]
            when = (
                ended.timestamp()
                if ended is not None and ended.tzinfo
                else (
                    ended.replace(tzinfo=timezone.utc).timestamp()
                    if ended is not None
                    else folder.stat().st_mtime
                )
            )
            if now - when > max_age:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    if removed:
        log.info(
            "deleted %d expired upload(s) and job output(s): %s", len(removed), [p.name for p in removed]
        )
    return removed


def delete_run_and_outputs(run_id: int, *, url: str | None = None) -> None:
    """Delete a finished run, its evidence and its outputs (``<data>/runs/<id>/``): the History page's
    Delete. A queued or running job is refused: cancel it first."""
    from jobs import queue
    from knowledge.paths import data_home
    from knowledge.tables import RunStatus

    run = queue.get_run(run_id, url=url)
    if run is None:
        raise UploadError(f"there is no run #{run_id}")
    if not RunStatus(run.status).finished:
        raise UploadError(f"run #{run_id} is {run.status}; cancel it first")
    queue.delete_run(run_id, url=url)
    shutil.rmtree(data_home() / "runs" / str(run_id), ignore_errors=True)
    log.info("deleted run #%s and its outputs", run_id)
