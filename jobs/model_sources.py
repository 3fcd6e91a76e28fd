"""Where a large model comes from when it is too big to upload: the models folder, the local Hugging Face
cache, or a hub id downloaded onto the server.

* **Models folder** (``SHRINKWISE_MODELS_DIR``, :func:`jobs.access.models_dir`): the model folders
  (``config.json`` and weights) and ``.gguf`` files up to two levels under it (``<root>/name`` and
  ``<root>/org/name``) are listed; a link that leads out of the root is not. A typed path is checked by
  :func:`jobs.access.check_server_path` (one mechanism for every server path).
* **Hugging Face cache** (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``,
  read when called, not when imported): every cached model revision that holds a ``config.json`` and
  weights, found with huggingface_hub's public :func:`huggingface_hub.scan_cache_dir`, resolving to its
  snapshot folder.
* **Hub id** (``org/name``): downloaded with :func:`huggingface_hub.snapshot_download` (which resumes
  the ``.incomplete`` files an interrupted download left) into the models folder when one is set, else
  into the Hugging Face cache; only safetensors weights, configs and tokenizer files
  (:data:`ALLOW_PATTERNS`): never pickled ``*.bin`` weights, never code files (Shrinkwise never runs
  remote code). Without a network (``HF_HUB_OFFLINE``, or the hub cannot be reached) the message names
  what to do instead: copy the folder under the models folder.

Why not through transformers' ``from_pretrained(hub_id)``: it downloads into the cache with no progress
the page can show, and it would fetch a repository's ``pytorch_model.bin`` when there are no
safetensors; here the files are chosen first, and the result is an ordinary local folder that the
memory check, streaming and the measurement cache all treat like any other.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressors.base import CompressionError
from jobs.access import ENV_MODELS_DIR, models_dir

log = logging.getLogger(__name__)

#: The files of a hub repository that are downloaded: weights in safetensors, configs, tokenizer files.
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
]
#: A hub id: ``owner/name`` in the characters the hub allows, no ``..``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_OFF = ("1", "true", "yes", "on")

#: ``progress(fraction, message)``: fraction of the bytes downloaded so far (0-1).
DownloadProgress = Callable[[float, str], None]


class ModelSourceError(CompressionError):
    """A model source cannot be used; the message says why and what to do instead."""


@dataclass(frozen=True)
class LocalModel:
    """A model found on the server: what to show, and the path :func:`compressors.models.load_model` takes."""

    label: str
    path: Path
    size_bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _is_model_folder(folder: Path) -> bool:
    """A folder with ``config.json`` and weights, and no download still under way in it (huggingface_hub
    keeps a download's ``.incomplete`` parts in ``.cache/huggingface/download/``)."""
    partial = folder / ".cache" / "huggingface" / "download"
    if partial.is_dir() and any(partial.rglob("*.incomplete")):
        return False
    return (folder / "config.json").is_file() and any(
        f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf") for f in folder.iterdir()
    )


def list_models_dir(root: Path | None = None, *, max_depth: int = 2) -> list[LocalModel]:
    """The model folders and ``.gguf`` files under the models folder (default: ``SHRINKWISE_MODELS_DIR``),
    at most ``max_depth`` levels down, sorted by name; nothing that resolves outside the root."""
    base = root if root is not None else models_dir()
    if base is None or not base.is_dir():
        return []
    root = base.resolve()
    found: list[LocalModel] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            real = entry.resolve()
            if real != root and root not in real.parents:
                continue  # a link out of the root: never listed
            rel = entry.relative_to(root).as_posix()
            if entry.is_file() and entry.suffix == ".gguf":
                found.append(LocalModel(rel, real, entry.stat().st_size))
            elif entry.is_dir() and not entry.name.startswith("."):
                if _is_model_folder(entry):
                    found.append(LocalModel(rel, real, _size(entry)))
                elif depth < max_depth:
                    walk(entry, depth + 1)

    walk(root, 1)
    return found


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it, read from the environment now:
    ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub`` or
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def list_hf_cache(cache_dir: Path | None = None) -> list[LocalModel]:
    """The models in the local Hugging Face cache that Shrinkwise can read (a snapshot with
    ``config.json`` and weights), one entry per cached revision, newest first within a repository."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    cache = cache_dir or hf_cache_dir()
    if not cache.is_dir():
        return []
    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError) as exc:
        log.info("no usable Hugging Face cache at %s: %s", cache, exc)
        return []
    out: list[LocalModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            snap = Path(rev.snapshot_path)
            if not snap.is_dir() or not _is_model_folder(snap):
                continue
            refs = ", ".join(sorted(rev.refs)) or rev.commit_hash[:8]
            out.append(LocalModel(f"{repo.repo_id} ({refs})", snap, int(rev.size_on_disk)))
    return out


def cached_repo_name(path: str | Path) -> str | None:
    """``owner/name`` for a snapshot folder of the Hugging Face cache
    (``.../models--owner--name/snapshots/<commit>``), so runs are named after the model, not the commit;
    None for any other path."""
    p = Path(path)
    if p.parent.name != "snapshots" or not p.parent.parent.name.startswith("models--"):
        return None
    return p.parent.parent.name[len("models--") :].replace("--", "/", 1)


# ---------------------------------------------------------------------------------------------------
# downloading a hub id


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and ".." not in text


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in _OFF for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def download_target(repo_id: str) -> dict[str, Path]:
    """Where :func:`download_hub_model` puts ``repo_id``: ``{"local_dir": <models folder>/org/name}``, so a
    downloaded model is a plain folder under the one root server paths are read from."""
    return {"local_dir": models_dir() / repo_id}


def offline_message(repo_id: str, reason: str) -> str:
    where = (
        "copy the model's folder (config.json, *.safetensors, tokenizer files) under the models folder "
        f"{models_dir()} ({ENV_MODELS_DIR} moves it)"
    )
    return (
        f"cannot download {repo_id}: {reason}. Download it on a machine with a network "
        f"(e.g. `hf download {repo_id} --include '*.safetensors' '*.json' 'tokenizer*'`), then {where}; "
        f"or put it in the Hugging Face cache ({hf_cache_dir()}) and pick it from the cached models"
    )


class _ReportingBar:
    """A tqdm stand-in for ``snapshot_download(tqdm_class=...)``: it keeps the counts of every bar it is
    made for and reports the byte bars' sum through ``progress``; it prints nothing."""

    def __init__(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        self.state = state
        self.total = kwargs.get("total") or 0
        self.n = kwargs.get("initial") or 0
        self.unit = kwargs.get("unit", "it")
        self.desc = kwargs.get("desc") or ""
        self.state["bars"].append(self)
        self.iterable = args[0] if args else kwargs.get("iterable")
        self._report()

    def __iter__(self) -> Any:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> _ReportingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        self._report()

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        self._report()

    def close(self) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    set_description_str = set_description

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _report(self) -> None:
        byte_bars = [b for b in self.state["bars"] if b.unit == "B" and "Reconstruct" in str(b.desc)]
        byte_bars = byte_bars or [b for b in self.state["bars"] if b.unit == "B"]
        files = [b for b in self.state["bars"] if b.unit != "B" and b.total]
        done = max((b.n for b in byte_bars), default=0)
        total = max((b.total or 0 for b in byte_bars), default=0)
        text = f"{done / 2**20:,.0f} of {total / 2**20:,.0f} MB" if total else "listing the files"
        if files:
            text += f", {int(files[0].n)}/{int(files[0].total)} files"
        self.state["progress"](min(done / total, 1.0) if total else 0.0, text)


def _bar_class(progress: DownloadProgress) -> type:
    state: dict[str, Any] = {"bars": [], "progress": progress}

    class Bar(_ReportingBar):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(state, *args, **kwargs)

    return Bar


def download_hub_model(
    repo_id: str, *, progress: DownloadProgress | None = None, revision: str | None = None
) -> Path:
    """Download ``repo_id``'s safetensors, configs and tokenizer files (:data:`ALLOW_PATTERNS`) and return
    the local folder :func:`compressors.models.load_model` reads; an interrupted download resumes.

    Raises :class:`ModelSourceError` for a malformed id, no network (with what to do instead), an unknown
    or gated repository, or a repository without safetensors weights. Files already there are reused
    without a network when ``HF_HUB_OFFLINE`` is set.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = repo_id.strip()
    if not is_hub_id(repo_id):
        raise ModelSourceError(
            f"{repo_id!r} is not a hub id: write it as owner/name, e.g. HuggingFaceTB/SmolLM2-135M"
        )
    offline = _offline()
    target = download_target(repo_id)
    say = progress or (lambda frac, msg: None)
    kwargs: dict[str, Any] = dict(
        revision=revision,
        allow_patterns=ALLOW_PATTERNS,
        endpoint=_endpoint(),
        local_files_only=offline,
        tqdm_class=_bar_class(say),
        etag_timeout=10,
        **target,
    )
    say(0.0, f"downloading {repo_id} from {_endpoint()} into {next(iter(target.values()))}")
    try:
        folder = Path(snapshot_download(repo_id, **kwargs))
    except RepositoryNotFoundError:
        raise ModelSourceError(
            f"there is no model {repo_id} on {_endpoint()} (or it is private); check the id"
        ) from None
    except GatedRepoError:
        raise ModelSourceError(
            f"{repo_id} is gated: accept its licence on the hub and set HF_TOKEN for the server, or download "
            "it elsewhere and copy it under the models folder"
        ) from None
    except RevisionNotFoundError:
        raise ModelSourceError(f"{repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        reason = (
            "this server is offline (HF_HUB_OFFLINE is set) and the model is not downloaded yet"
            if offline
            else f"the model hub ({_endpoint()}) cannot be reached from this server"
        )
        raise ModelSourceError(offline_message(repo_id, reason)) from None
    except HfHubHTTPError as exc:
        raise ModelSourceError(
            offline_message(repo_id, f"the model hub answered {str(exc).splitlines()[0][:200]}")
        ) from None
    except OSError as exc:  # a connection that drops half way: the next try resumes
        raise ModelSourceError(
            f"the download of {repo_id} stopped ({type(exc).__name__}: {str(exc)[:200]}); start it again: "
            "it resumes where it stopped"
        ) from None
    if not any(folder.glob("*.safetensors")):
        raise ModelSourceError(
            f"{repo_id} has no safetensors weights (only pickled *.bin files, which Shrinkwise does not "
            "download: loading a pickle can run code). Convert it to safetensors where you trust it, and put "
            "that folder under the models folder"
        )
    say(1.0, f"{repo_id} is in {folder}")
    return folder
