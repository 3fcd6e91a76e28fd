"""The Compress page's sources for models too large to upload: a folder under the models folder (listed,
or a typed path), the local Hugging Face cache, and a hub id downloaded onto the server.

Kept out of ``app/views/compress.py`` (which only calls :func:`pick_model`) so the page stays one
script of hooks; the rules live in :mod:`jobs.access` and :mod:`jobs.model_sources`, without Streamlit.
Every function here returns the model reference (a local path) or None, and appends what blocks the run
to ``problems``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import streamlit as st

from compressors.base import CompressionError
from jobs import ui as jobs_ui
from jobs.access import ENV_MODELS_DIR, AccessDenied, Viewer, check_server_path, models_dir
from jobs.model_sources import (  # noqa: F401  (cached_repo_name: for the page)
    LocalModel,
    cached_repo_name,
    download_hub_model,
    hf_cache_dir,
    list_hf_cache,
    list_models_dir,
)

P = "cmp_"
#: Source key (the ``?source=`` of a link) -> the radio's label; the page adds these to its own.
SOURCES = {
    "path": "Models folder on the server",
    "hf": "Hugging Face cache",
    "hub": "Hub id (download)",
}
TYPE_A_PATH = "(type a path)"

# hub downloads of this server process, by hub id: one at a time per model, whichever session started it
_downloads: dict[str, tuple[Future[Path], dict[str, Any]]] = {}
_downloads_lock = threading.Lock()
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shrinkwise-hub-download")


@st.cache_data(ttl=15, show_spinner=False, max_entries=8)
def _models_under(root: Path) -> list[LocalModel]:
    """The listing of the models folder, read again at most every 15 s (every rerun would walk it)."""
    return list_models_dir(root)


@st.cache_data(ttl=15, show_spinner=False, max_entries=8)
def _cached_models(cache: Path) -> list[LocalModel]:
    """The Hugging Face cache's models, scanned again at most every 15 s."""
    return list_hf_cache(cache)


def _downloading(repo: str) -> bool:
    with _downloads_lock:
        return repo in _downloads and not _downloads[repo][0].done()


def _start_download(repo: str) -> tuple[Future[Path], dict[str, Any]]:
    """The running download of ``repo``, or a new one (a finished one is started again: it resumes, or
    finds every file there and returns at once)."""
    with _downloads_lock:
        if repo in _downloads and not _downloads[repo][0].done():
            return _downloads[repo]
        state: dict[str, Any] = {"frac": 0.0, "msg": f"downloading {repo}"}
        future = _pool.submit(download_hub_model, repo, progress=lambda f, m: state.update(frac=f, msg=m))
        _downloads[repo] = (future, state)
        return future, state


def other_ways_caption() -> str:
    """What to do with a model larger than the upload limit, for the upload's caption."""
    folder = f"put its folder under the models folder {models_dir()} ({ENV_MODELS_DIR} moves it)"
    return (
        f"Larger models: {folder} (source *{SOURCES['path']}*), pick it from the Hugging Face cache, or give "
        "its hub id to download it on the server."
    )


def pick_model(source_key: str, qp: Mapping[str, str], viewer: Viewer, problems: list[str]) -> str | None:
    """The widgets of one of :data:`SOURCES`; returns the model's local path, or None."""
    if source_key == "path":
        return _server_path(qp, viewer, problems)
    if source_key == "hf":
        return _hf_cache(problems)
    return _hub(viewer, problems)


def _server_path(qp: Mapping[str, str], viewer: Viewer, problems: list[str]) -> str | None:
    root = models_dir()
    listed = _models_under(root) if root is not None else []
    typed = qp.get("path", "")
    choice = TYPE_A_PATH
    if listed:
        labels = [TYPE_A_PATH] + [f"{m.label} ({jobs_ui.fmt_bytes(m.size_bytes)})" for m in listed]
        choice = (
            st.selectbox(
                f"Model folders under {root}",
                labels,
                index=0 if typed else 1,
                key=P + "folder_pick",
                help=f"Folders with config.json and weights, and .gguf files, up to two levels under {ENV_MODELS_DIR}.",
            )
            or TYPE_A_PATH
        )
    if choice != TYPE_A_PATH:
        picked = listed[labels.index(choice) - 1].path
        typed = str(picked)
    else:
        if root is not None and not listed:
            st.caption(
                f"No model folders under the models folder {root} yet: copy one there, or type a path."
            )
        typed = st.text_input(
            "Path on the server",
            key=P + "path",
            value=qp.get("path", ""),
            placeholder=f"{root or '/models'}/my-model (a folder with config.json) or {root or '/models'}/model.gguf",
        )
    if not typed.strip():
        return None
    try:  # only under the configured roots (jobs.access); one answer whether the path exists or not
        return str(check_server_path(typed.strip(), viewer))
    except AccessDenied as exc:
        st.error(str(exc))
        problems.append("the path is not available")
        return None


def _hf_cache(problems: list[str]) -> str | None:
    cache = hf_cache_dir()
    models = _cached_models(cache)
    if not models:
        st.info(
            f"No models in the Hugging Face cache ({cache}; HF_HUB_CACHE or HF_HOME move it). Download one with "
            "the hub id source, or copy a model folder under the models folder."
        )
        return None
    labels = [f"{m.label} ({jobs_ui.fmt_bytes(m.size_bytes)})" for m in models]
    choice = st.selectbox(f"Models in {cache}", labels, key=P + "hf_pick")
    return str(models[labels.index(choice)].path) if choice in labels else None


def _hub(viewer: Viewer, problems: list[str]) -> str | None:
    if viewer.team and not viewer.is_admin:
        st.info(
            "Downloading from the hub writes to the server's shared models folder, so only admins can; ask "
            "one to download the model, then pick it from the models folder or the Hugging Face cache."
        )
        return None
    root = models_dir()
    c1, c2 = st.columns([3, 1])
    repo = c1.text_input(
        "Hub id",
        key=P + "hub_id",
        placeholder="HuggingFaceTB/SmolLM2-135M",
        help="Downloaded once (safetensors, configs and tokenizer files only; never pickles or code) into "
        + (f"the models folder {root}" if root else f"the Hugging Face cache {hf_cache_dir()}")
        + "; an interrupted download resumes where it stopped.",
    ).strip()
    done: dict[str, str] = st.session_state.setdefault(P + "hub_done", {})
    clicked = c2.button("Download", key=P + "hub_go", disabled=not repo)
    if repo and (clicked or _downloading(repo)):
        # huggingface_hub reports from its worker threads, where Streamlit elements do not update: the
        # download runs in the background and this script run shows its progress until it ends. Leaving
        # the page does not stop it, and coming back (or another session) shows the same download.
        future, state = _start_download(repo)
        bar = st.progress(0.0, text=f"downloading {repo}")
        while not future.done():
            bar.progress(min(max(state["frac"], 0.0), 1.0), text=str(state["msg"])[:200])
            time.sleep(0.5)
        bar.empty()
        try:
            done[repo] = str(future.result())
            st.session_state.pop(P + "hub_error", None)
        except CompressionError as exc:
            st.session_state[P + "hub_error"] = (repo, str(exc))
        except Exception as exc:  # an unexpected failure: said on the page, never a traceback
            st.session_state[P + "hub_error"] = (
                repo,
                f"the download of {repo} failed: {type(exc).__name__}: {exc}",
            )
    error = st.session_state.get(P + "hub_error")
    if error and error[0] == repo:
        st.error(jobs_ui.plain(error[1]))
        problems.append("the download failed")
        return None
    if repo in done:
        st.caption(jobs_ui.plain(f"{repo} is downloaded to {done[repo]}"))
        return done[repo]
    if repo:
        st.caption("Press Download; the model is read from the server's copy afterwards.")
    return None
