"""Large models into the app (issue 12): the models folder, the local Hugging Face cache, a hub id.

No test reaches the real hub: the cache is a fake layout built in tmp, the offline messages come from
``HF_HUB_OFFLINE`` and from an endpoint on a closed loopback port, and the download wiring is checked
against a loopback server that answers like the hub (tests/jobs/fake_hub.py)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from jobs.access import AccessDenied, Viewer, check_server_path, model_roots, models_dir
from jobs.model_sources import (
    ALLOW_PATTERNS,
    ModelSourceError,
    cached_repo_name,
    download_hub_model,
    download_target,
    hf_cache_dir,
    list_hf_cache,
    list_models_dir,
)

LOCAL = Viewer.local()


def model_folder(folder: Path, weights: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / weights).write_bytes(b"x" * 16)
    return folder


# --- the models folder -------------------------------------------------------------------------------


def test_models_dir_is_the_root_and_refuses_everything_outside(tmp_path, monkeypatch):
    root = tmp_path / "models"
    model_folder(root / "llama")
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")  # a link inside the root that leads out of it
    (root / "inside-link").symlink_to(root / "llama")  # a link that stays inside: fine
    monkeypatch.delenv("SHRINKWISE_MODEL_ROOTS", raising=False)
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(root))
    assert models_dir() == root.resolve() and model_roots() == [root.resolve()]
    assert check_server_path(str(root / "llama"), LOCAL) == (root / "llama").resolve()
    assert check_server_path(str(root / "inside-link"), LOCAL) == (root / "llama").resolve()
    answers = set()
    for p in (
        str(tmp_path / "secret"),  # outside
        str(root / ".." / "secret"),  # `..` traversal
        str(root / "llama" / ".." / ".." / "secret"),
        str(root / "escape"),  # a link escaping the root
        str(root / "escape" / "weights.safetensors"),
        "/etc/passwd",
        "/no/such/model",
    ):
        with pytest.raises(AccessDenied) as err:
            check_server_path(p, LOCAL)
        answers.add(str(err.value))
    assert len(answers) == 1  # the same answer whether the path exists or not
    (msg,) = answers
    assert f"outside the models folder {root.resolve()}" in msg
    assert "put the model under it or set SHRINKWISE_MODELS_DIR" in msg


def test_the_older_roots_variable_adds_to_the_same_list(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(a))
    monkeypatch.setenv("SHRINKWISE_MODEL_ROOTS", os.pathsep.join([str(b), str(a)]))
    assert model_roots() == [a.resolve(), b.resolve()]  # one mechanism: the models root first, no twice
    assert check_server_path(str(b), LOCAL) == b.resolve()


def test_team_users_read_the_models_folder_only(tmp_path, monkeypatch):
    root = model_folder(tmp_path / "models" / "m").parent
    monkeypatch.setenv("SHRINKWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(root))
    alice = Viewer.signed_in("alice@example.org")
    assert check_server_path(str(root / "m"), alice) == (root / "m").resolve()
    with pytest.raises(AccessDenied, match="outside the models folder"):
        check_server_path(str(tmp_path / "home"), alice)


def test_model_folders_under_the_root_are_listed_and_links_out_are_not(tmp_path, monkeypatch):
    root = tmp_path / "models"
    model_folder(root / "llama-7b")
    model_folder(root / "org" / "qwen", "model-00001-of-00002.safetensors")
    (root / "org" / "notes").mkdir()  # no config.json: not a model
    (root / "tiny.gguf").write_bytes(b"GGUF")
    outside = model_folder(tmp_path / "elsewhere" / "m")
    (root / "out").symlink_to(outside)
    model_folder(root / "a" / "b" / "too-deep")
    half = model_folder(root / "org" / "downloading")  # a hub download still under way: not yet
    (half / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (half / ".cache" / "huggingface" / "download" / "model.safetensors.abc.incomplete").write_bytes(b"x")
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(root))
    listed = {m.label: m for m in list_models_dir()}
    assert set(listed) == {"llama-7b", "org/qwen", "tiny.gguf"}
    assert listed["org/qwen"].path == (root / "org" / "qwen").resolve()
    monkeypatch.delenv("SHRINKWISE_MODELS_DIR")
    assert list_models_dir() == []  # no models folder set: nothing listed


# --- the Hugging Face cache ------------------------------------------------------------------------------


def fake_cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], ref: str = "main") -> Path:
    """One repository in the hub cache's layout: blobs by hash, a snapshot of links to them, a ref."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snap


def test_hf_cache_models_are_listed_as_their_snapshot_folders(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    snap = fake_cache_repo(
        cache,
        "HuggingFaceTB/SmolLM2-135M",
        {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"w" * 64, "tokenizer.json": b"{}"},
    )
    fake_cache_repo(cache, "someone/readme-only", {"README.md": b"# hi"})  # no weights: not listed
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_cache_dir() == cache
    (found,) = list_hf_cache()
    assert cached_repo_name(found.path) == "HuggingFaceTB/SmolLM2-135M"
    assert cached_repo_name(tmp_path / "models" / "llama") is None
    assert found.label == "HuggingFaceTB/SmolLM2-135M (main)"
    assert found.path == snap and (found.path / "config.json").is_file()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert list_hf_cache() == []  # no cache there: nothing, no error


# --- a hub id ---------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: connections are refused


def test_offline_the_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as err:
        download_hub_model("someorg/somemodel")
    msg = str(err.value)
    assert "offline" in msg and "HF_HUB_OFFLINE" in msg
    assert f"under the models folder {tmp_path / 'models'}" in msg


def test_an_unreachable_hub_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # the test session is offline (tests/conftest.py) and huggingface_hub read that at import: here it is
    # online, so a real connection to a closed loopback port is refused
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("SHRINKWISE_MODELS_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ModelSourceError) as err:
        download_hub_model("someorg/somemodel")
    msg = str(err.value)
    assert "cannot be reached" in msg and "SHRINKWISE_MODELS_DIR" in msg and "hf download" in msg


@pytest.mark.parametrize("bad", ["../etc", "a/../b", "/abs/path", "no-slash", "a/b/c", "a b/c"])
def test_malformed_hub_ids_are_refused_before_any_request(bad):
    with pytest.raises(ModelSourceError, match="not a hub id"):
        download_hub_model(bad)


def test_download_asks_only_for_safetensors_configs_and_tokenizers(tmp_path, monkeypatch):
    """The wiring, with snapshot_download replaced: what it is asked for and where it writes."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        folder = model_folder(Path(kwargs["local_dir"]))
        bar = kwargs["tqdm_class"](total=100, unit="B", desc="Reconstructing")
        bar.update(50)
        bar.update(50)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    seen = []
    folder = download_hub_model("org/name", progress=lambda f, m: seen.append(f))
    assert folder == tmp_path / "models" / "org" / "name"
    ((repo, kwargs),) = calls
    assert repo == "org/name" and kwargs["allow_patterns"] == ALLOW_PATTERNS
    assert not any(p.endswith((".bin", ".py", ".pt", "*")) for p in ALLOW_PATTERNS)
    assert kwargs["local_files_only"] is False
    assert seen[0] == 0.0 and 0.5 in seen and seen[-1] == 1.0
    assert download_target("org/name") == {"local_dir": tmp_path / "models" / "org" / "name"}
    monkeypatch.delenv("SHRINKWISE_MODELS_DIR")
    monkeypatch.setenv("SHRINKWISE_HOME", str(tmp_path / "home"))
    default = (tmp_path / "home" / "models").resolve()
    assert download_target("org/name") == {"local_dir": default / "org" / "name"}  # the default folder


def test_a_repository_without_safetensors_is_refused(tmp_path, monkeypatch):
    import huggingface_hub

    def only_pickles(repo_id, **kwargs):
        folder = Path(kwargs["local_dir"])
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", only_pickles)
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ModelSourceError, match="no safetensors"):
        download_hub_model("org/pickled")


def test_a_real_download_from_a_loopback_hub_resumes_a_cut_transfer(tmp_path, monkeypatch):
    """snapshot_download against tests/jobs/fake_hub.py: only the allowed files are fetched, and a
    transfer cut off half way is resumed with a Range request (not restarted)."""
    import huggingface_hub.constants
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    from tests.jobs.fake_hub import FakeHub

    # more than two of the client's read chunks: the cut (half way) comes after whole chunks were written
    weights = bytes(range(256)) * (3 * DOWNLOAD_CHUNK_SIZE // 256)
    files = {
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": weights,
        "tokenizer.json": b"{}",
        "pytorch_model.bin": b"pickle",  # never downloaded
        "modeling_custom.py": b"import os",  # never downloaded
        "README.md": b"# readme",
    }
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    with FakeHub("someorg/tiny", files, drop_once=("model.safetensors",)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        seen: list[float] = []
        folder = download_hub_model("someorg/tiny", progress=lambda f, m: seen.append(f))
    assert folder == (tmp_path / "models" / "someorg" / "tiny").resolve()
    assert (folder / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    gets = [
        (path, rng)
        for method, path, rng in hub.requests
        if method == "GET" and path.endswith("model.safetensors")
    ]
    assert gets[0][1] is None and len(gets) == 2
    # resumed where the written part ended (whole chunks before the cut), not restarted
    assert gets[1][1] is not None and gets[1][1].startswith("bytes="), hub.requests
    start = int(gets[1][1][len("bytes=") :].rstrip("-"))
    assert 0 < start <= len(weights) // 2
    assert seen[-1] == 1.0 and any(0 < f < 1 for f in seen)
