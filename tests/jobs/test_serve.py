"""The "Serve it" blocks of the result page (jobs.serve): one per format, with the download and the exact
commands, written for the names the download has once saved and unpacked."""

from __future__ import annotations

import ast
import shlex
import zipfile

from compressors.storage import make_archive
from jobs.serve import GONE, serve_commands


def _run_folder(tmp_path, gguf=True, export=True, archive=True):
    out = tmp_path / "run7"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"w")
    art = {"checkpoint_dir": str(out / "model")}
    if archive:
        art["archive"] = str(make_archive(out / "model", "zip", out / "model.zip"))
    if export:
        (out / "compressed-tensors").mkdir()
        (out / "compressed-tensors" / "config.json").write_text("{}")
        art["export_dir"] = str(out / "compressed-tensors")
    if gguf:
        (out / "model.gguf").write_bytes(b"GGUF")
        art.update(gguf_path=str(out / "model.gguf"), gguf_type="Q4_1", gguf_note="4-bit codes carried over")
    return art


def test_every_format_has_its_download_and_the_exact_commands(tmp_path):
    art = _run_folder(tmp_path)
    gguf, ct, packed = serve_commands(art, "run-7")
    assert [t.key for t in (gguf, ct, packed)] == ["gguf", "compressed-tensors", "packed"]
    assert all(t.missing is None for t in (gguf, ct, packed))

    assert gguf.file == tmp_path / "run7" / "model.gguf" and gguf.folder is None
    assert gguf.download_name == "run-7-model.gguf" and "Q4_1" in gguf.detail
    codes = [c.code for c in gguf.commands]
    assert codes[0] == "llama-cli -m run-7-model.gguf -p 'Python is a programming language that' -n 32 -st"
    assert codes[1] == "llama-server -m run-7-model.gguf --port 8080"
    assert 'Llama(model_path="run-7-model.gguf")' in codes[2]

    # the export is zipped on the first download; the commands name the folder the zip unpacks to
    assert (
        ct.file == tmp_path / "run7" / "compressed-tensors.zip"
        and ct.folder == tmp_path / "run7" / "compressed-tensors"
    )
    assert [c.code for c in ct.commands][:2] == [
        "unzip run-7-compressed-tensors.zip",
        "vllm serve ./compressed-tensors",
    ]
    assert 'AutoModelForCausalLM.from_pretrained("./compressed-tensors")' in ct.commands[2].code

    assert packed.file == tmp_path / "run7" / "model.zip" and packed.folder is None
    assert packed.download_name == "run-7-model.zip"
    assert (
        packed.commands[1].code
        == "shrinkwise generate ./model --prompt 'Python is a programming language that'"
    )


def test_the_folders_the_commands_name_are_the_ones_the_zips_unpack_to(tmp_path):
    art = _run_folder(tmp_path)
    for target in serve_commands(art, "run-7")[1:]:
        zip_path = target.file if target.file.is_file() else make_archive(target.folder, "zip", target.file)
        tops = {name.split("/")[0] for name in zipfile.ZipFile(zip_path).namelist()}
        named = {arg for c in target.commands if c.language == "bash" for arg in shlex.split(c.code)}
        assert {"./" + t for t in tops} <= named, (target.key, tops, named)


def test_python_snippets_compile_and_a_prompt_with_quotes_stays_one_argument(tmp_path):
    prompt = 'It\'s "quoted"; rm -rf /'
    for target in serve_commands(_run_folder(tmp_path), "run-7", prompt=prompt):
        for c in target.commands:
            if c.language == "python":
                tree = ast.parse(c.code)  # valid Python, and the prompt is one string constant in it
                assert prompt in {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
            elif "--prompt" in c.code or " -p " in c.code:
                args = shlex.split(c.code)
                assert prompt in args  # the whole prompt is one argument, nothing runs after it


def test_a_missing_format_keeps_its_block_with_the_reason(tmp_path):
    art = _run_folder(tmp_path, gguf=False, export=False)
    art["export_note"] = "model.layers.0.mlp.down_proj: group_size 128 does not divide in_features 1536"
    art["gguf_note"] = "SpQR's outliers cannot be written as llama.cpp blocks"
    gguf, ct, packed = serve_commands(art, "run-7")
    assert gguf.file is None and gguf.missing == art["gguf_note"]
    assert ct.file is None and ct.missing == art["export_note"]
    assert packed.missing is None
    # a run made before the GGUF export says so; files deleted since the run: said too
    del art["gguf_note"]
    assert "no GGUF file" in serve_commands(art, "run-7")[0].missing
    (tmp_path / "run7" / "model.zip").unlink()
    for f in (tmp_path / "run7" / "model").iterdir():
        f.unlink()
    (tmp_path / "run7" / "model").rmdir()
    assert serve_commands(art, "run-7")[2].missing == GONE


def test_a_packed_checkpoint_without_its_archive_is_zipped_on_download(tmp_path):
    art = _run_folder(tmp_path, gguf=False, export=False, archive=False)
    packed = serve_commands(art, "run-7")[2]
    assert packed.file == tmp_path / "run7" / "model.zip" and packed.folder == tmp_path / "run7" / "model"
