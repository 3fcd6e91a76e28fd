"""Packed checkpoints round-trip exactly, their size matches the bits they report, archives are safe."""

import io
import os
import stat
import tarfile
import zipfile

import pytest
import torch

from compressors.evaluate import storage_bits
from compressors.packed import QuantizedLinear, SparseLinear, packed_modules
from compressors.storage import (
    CheckpointError,
    UnsafeArchive,
    find_model_root,
    load_packed,
    make_archive,
    read_manifest,
    safe_extract,
    save_packed,
)
from tests.compressors.tiny import ARCHS, rtn_quantize_model, tiny_model, tiny_tokenizer

TOKENS = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_checkpoint_round_trip_gives_identical_logits(arch, tmp_path):
    model = rtn_quantize_model(tiny_model(arch), bits=3, group_size=32)
    with torch.no_grad():
        ref = model(TOKENS).logits
    save_packed(model, tiny_tokenizer(), tmp_path, method="rtn", config={"bits": 3, "group_size": 32})
    loaded = load_packed(tmp_path)
    assert {type(m) for m in packed_modules(loaded).values()} == {QuantizedLinear}
    assert len(packed_modules(loaded)) == len(packed_modules(model))
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS).logits, ref)


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_transformers_refuses_a_packed_checkpoint_loudly(arch, tmp_path):
    """Loading the packed folder with plain transformers used to give a randomly initialised model
    without an error; now it fails naming the format, and Shrinkwise's own loaders still read it."""
    from transformers import AutoModelForCausalLM

    from compressors.models import inspect_checkpoint

    model = rtn_quantize_model(tiny_model(arch), bits=4, group_size=32)
    save_packed(model, tiny_tokenizer(), tmp_path, method="rtn", config={"bits": 4, "group_size": 32})
    with pytest.raises((ValueError, KeyError), match="shrinkwise-packed"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    info = inspect_checkpoint(str(tmp_path))
    assert info.source == "packed" and info.architecture == type(model).__name__
    assert load_packed(tmp_path).config.model_type == model.config.model_type


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_size_on_disk_matches_the_reported_bits(arch, tmp_path):
    model = rtn_quantize_model(tiny_model(arch), bits=4, group_size=32)
    total_bits, n_params, packed_bits, packed_weights = storage_bits(model)
    save_packed(model, None, tmp_path, method="rtn", config={})
    size = os.path.getsize(tmp_path / "model.safetensors")
    header = int.from_bytes((tmp_path / "model.safetensors").read_bytes()[:8], "little")
    assert size == 8 + header + total_bits // 8  # the data section is exactly the counted bits
    assert 4.5 < packed_bits / packed_weights < 5.2  # 4-bit codes + fp16 scales + 4-bit zeros (+ bias)


def test_tied_embedding_is_stored_once_and_retied(tmp_path):
    model = tiny_model("llama")  # tie_word_embeddings=True
    save_packed(model, None, tmp_path, method="none", config={})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    loaded = load_packed(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_sparse_layers_round_trip(tmp_path):
    from compressors.layers import all_linear_layers, get_bias, get_weight, set_module

    model = tiny_model("opt")
    for path, layer in all_linear_layers(model).items():
        w = get_weight(layer).detach().clone()
        w[w.abs() < w.abs().median()] = 0
        set_module(model, path, SparseLinear.from_dense(w, get_bias(layer)))
    with torch.no_grad():
        ref = model(TOKENS).logits
    save_packed(model, None, tmp_path, method="magnitude", config={"sparsity": 0.5})
    with torch.no_grad():
        assert torch.equal(load_packed(tmp_path)(TOKENS).logits, ref)
    assert read_manifest(tmp_path)["method"] == "magnitude"


def test_missing_manifest_and_tensors_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="shrinkwise.json is missing"):
        load_packed(tmp_path)
    model = rtn_quantize_model(tiny_model("llama"))
    save_packed(model, None, tmp_path, method="rtn", config={})
    from safetensors.torch import load_file, save_file

    t = load_file(str(tmp_path / "model.safetensors"))
    t.pop("model.norm.weight")
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        load_packed(tmp_path)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_round_trip_loads_back(fmt, tmp_path):
    model = rtn_quantize_model(tiny_model("qwen2"))
    ckpt = save_packed(model, tiny_tokenizer(), tmp_path / "ckpt", method="rtn", config={})
    arc = make_archive(ckpt, fmt)
    root = find_model_root(safe_extract(arc, tmp_path / "x"))
    assert root.name == "ckpt"
    with torch.no_grad():
        assert torch.equal(load_packed(root)(TOKENS).logits, model(TOKENS).logits)


# ---- hostile archives: each is refused and writes nothing outside the target ------------------------


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode:
                info.external_attr = mode << 16
            z.writestr(info, data)
    return path


def _tar(path, members):
    with tarfile.open(path, "w:gz") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name, type_=tarfile.REGTYPE, size=0, linkname=""):
    i = tarfile.TarInfo(name)
    i.type, i.size, i.linkname = type_, size, linkname
    return i


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil_abs.txt", "C:/evil.txt"])
def test_zip_with_traversal_or_absolute_path_is_refused(name, tmp_path):
    arc = _zip(tmp_path / "a.zip", [("ok.txt", b"x", 0), (name, b"evil", 0)])
    with pytest.raises(UnsafeArchive, match="refused"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_zip_symlink_is_refused(tmp_path):
    arc = _zip(tmp_path / "a.zip", [("link", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    with pytest.raises(UnsafeArchive, match="links"):
        safe_extract(arc, tmp_path / "out")


@pytest.mark.parametrize(
    "member",
    [
        _info("link", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _info("hard", tarfile.LNKTYPE, linkname="/etc/passwd"),
        _info("dev", tarfile.CHRTYPE),
        _info("fifo", tarfile.FIFOTYPE),
        _info("../up.txt", size=1),
    ],
)
def test_tar_links_devices_and_traversal_are_refused(member, tmp_path):
    arc = _tar(tmp_path / "a.tar.gz", [(member, b"x" if member.size else None)])
    with pytest.raises(UnsafeArchive, match="refused"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "up.txt").exists()


def test_too_many_files_and_too_many_bytes_are_refused(tmp_path):
    arc = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x", 0) for i in range(20)])
    with pytest.raises(UnsafeArchive, match="20 files"):
        safe_extract(arc, tmp_path / "o1", max_files=10)
    big = _zip(tmp_path / "big.zip", [("zeros.bin", b"\0" * 100_000, 0)])
    with pytest.raises(UnsafeArchive, match="more than 1000 bytes"):
        safe_extract(big, tmp_path / "o2", max_total_bytes=1000)


def test_not_an_archive_is_refused(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(UnsafeArchive, match="not a"):
        safe_extract(p, tmp_path / "o")


def test_archive_without_a_model_says_what_was_expected(tmp_path):
    arc = _zip(tmp_path / "a.zip", [("docs/readme.txt", b"hello", 0)])
    with pytest.raises(CheckpointError, match="config.json"):
        find_model_root(safe_extract(arc, tmp_path / "o"))
