"""Tiny checkpoints on disk, good and bad, for the upload, page and runner tests (nothing downloaded).

``tiny_checkpoint`` saves a random 2-layer Llama with its 320-token tokenizer (~0.4 MB); the bad ones
are each broken in exactly one way the issue lists.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path


def tiny_checkpoint(folder: Path, arch: str = "llama") -> Path:
    from tests.compressors.tiny import tiny_model, tiny_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model(arch)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def zip_bytes(folder: Path, prefix: str = "tiny-llama") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


def tar_with(members: list[tarfile.TarInfo], payload: bytes = b"pwned") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for m in members:
            if m.isfile():
                m.size = len(payload)
                t.addfile(m, io.BytesIO(payload))
            else:
                t.addfile(m)
    return buf.getvalue()


def zip_with(names: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in names.items():
            z.writestr(n, data)
    return buf.getvalue()


def truncate_safetensors(folder: Path) -> Path:
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return folder


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def evil_pickle_checkpoint(folder: Path) -> Path:
    """config.json + a pytorch_model.bin whose pickle would run a command when unpickled unsafely."""
    folder.mkdir(parents=True, exist_ok=True)
    good = tiny_checkpoint(folder / "_src")
    (folder / "config.json").write_text((good / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Evil()}))
    return folder


def config_only_checkpoint(folder: Path, config: dict) -> Path:
    """A folder with the given config.json and a tiny valid safetensors file (weights never read)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


BERT_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
}
UNKNOWN_CONFIG = {"architectures": ["FlorpForCausalLM"], "model_type": "florp", "hidden_size": 32}
#: A Llama-2-7B shape (6.7 B parameters): ~35 GB to load in float32, more than this machine's memory.
HUGE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
}


def mismatched_checkpoint(folder: Path) -> Path:
    """A Llama config with a Mistral's weights: every header is valid, but the weights' shapes do not fit
    the config; the Compress page refuses it before a job is queued, naming a mismatching tensor."""
    import shutil

    llama = tiny_checkpoint(folder.parent / (folder.name + "-llama"))
    mistral = tiny_checkpoint(folder.parent / (folder.name + "-mistral"), arch="mistral")
    shutil.copytree(llama, folder)
    shutil.copy(mistral / "model.safetensors", folder / "model.safetensors")
    return folder
