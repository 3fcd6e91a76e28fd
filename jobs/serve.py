"""How to serve a run's result: one block per target format, with its download and the exact commands.

A run leaves up to three things a user can serve (:class:`compressors.run.Artifacts`):

* **GGUF** (``gguf_path``): one file for llama.cpp (``llama-cli``, ``llama-server``) and
  llama-cpp-python: what CPU, Apple and local users run;
* **compressed-tensors** (``export_dir``): the folder vLLM and transformers load quantized models from;
* **Shrinkwise packed** (``checkpoint_dir``, zipped as ``archive``): the complete result, which
  Shrinkwise itself loads.

:func:`serve_commands` turns a run's artifacts into :class:`ServeTarget` blocks: what to download (a
file, or a folder zipped on the first download), and the commands that serve it, written for the names
the download has on the user's disk. The commands are data (:data:`TARGETS`), so the result page only
renders them and a test can check each one. A target the run did not produce keeps its block, with the
reason (``gguf_note``, ``export_note``) instead of a download, so the user learns why.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The prompt of the commands when the run recorded none (compressors.evaluate.DEFAULT_PROMPT).
DEFAULT_PROMPT = "Python is a programming language that"


@dataclass(frozen=True)
class Command:
    """One way to use a download: a label ("Chat in the terminal"), the language of the code block
    (``bash`` or ``python``) and the code, ready to paste."""

    label: str
    language: str
    code: str


@dataclass(frozen=True)
class ServeTarget:
    """One format a run can be served in.

    ``file`` is what the download sends; when ``folder`` is set, ``file`` is the zip of that folder,
    made on the first download if it does not exist yet. Both None: nothing to download, ``missing``
    says why. ``download_name`` is the name the file gets on the user's disk, the name the commands use.
    """

    key: str
    title: str
    engines: str
    detail: str
    file: Path | None
    folder: Path | None
    download_name: str
    mime: str
    missing: str | None
    commands: list[Command]


@dataclass(frozen=True)
class _Spec:
    key: str
    title: str
    engines: str
    artifact: str  # the Artifacts field holding the file or folder
    note: str | None  # the Artifacts field saying why there is none
    none_yet: str  # why there is none when the run says nothing (runs made before this format)
    mime: str
    commands: tuple[tuple[str, str, str], ...]  # (label, language, code template)


# Templates: {file_*} is the downloaded file's name, {dir_*} the folder it unpacks to (./compressed-tensors),
# {prompt_*} the prompt; quoted for a shell (_sh) or as a Python string (_py).
TARGETS: tuple[_Spec, ...] = (
    _Spec(
        key="gguf",
        title="GGUF",
        engines="llama.cpp and llama-cpp-python (CPU, Apple silicon, local apps)",
        artifact="gguf_path",
        note="gguf_note",
        none_yet="this run has no GGUF file (it was made before the GGUF export, or with a method "
        "llama.cpp cannot hold)",
        mime="application/octet-stream",
        commands=(
            # -st (single turn): answer the prompt and exit; without it today's llama-cli opens a chat
            # for a model with a chat template and waits for input
            (
                "Generate in the terminal (llama.cpp; -st answers once and exits)",
                "bash",
                "llama-cli -m {file_sh} -p {prompt_sh} -n 32 -st",
            ),
            (
                "Serve it (llama.cpp's OpenAI-compatible server, port 8080)",
                "bash",
                "llama-server -m {file_sh} --port 8080",
            ),
            (
                "From Python (pip install llama-cpp-python)",
                "python",
                "from llama_cpp import Llama\n\n"
                "llm = Llama(model_path={file_py})\n"
                'print(llm({prompt_py}, max_tokens=32)["choices"][0]["text"])',
            ),
        ),
    ),
    _Spec(
        key="compressed-tensors",
        title="compressed-tensors",
        engines="vLLM and transformers",
        artifact="export_dir",
        note="export_note",
        none_yet="this run has no compressed-tensors export",
        mime="application/zip",
        commands=(
            ("Unpack the download", "bash", "unzip {file_sh}"),
            (
                "Serve it with vLLM (OpenAI-compatible server, port 8000)",
                "bash",
                "vllm serve {dir_sh}",
            ),
            (
                "Load it with transformers (pip install transformers compressed-tensors)",
                "python",
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                "model = AutoModelForCausalLM.from_pretrained({dir_py})\n"
                "tokenizer = AutoTokenizer.from_pretrained({dir_py})\n"
                'inputs = tokenizer({prompt_py}, return_tensors="pt")\n'
                "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
            ),
        ),
    ),
    _Spec(
        key="packed",
        title="Shrinkwise packed",
        engines="Shrinkwise (the complete result: every method's layers exactly as measured)",
        artifact="checkpoint_dir",
        note=None,
        none_yet="this run has no packed checkpoint",
        mime="application/zip",
        commands=(
            ("Unpack the download", "bash", "unzip {file_sh}"),
            ("Generate with Shrinkwise", "bash", "shrinkwise generate {dir_sh} --prompt {prompt_sh}"),
            (
                "From Python (with Shrinkwise installed)",
                "python",
                "from compressors.evaluate import greedy_generate\n"
                "from compressors.models import load_model\n\n"
                "model, tokenizer = load_model({dir_py})\n"
                "print(greedy_generate(model, tokenizer, {prompt_py}))",
            ),
        ),
    ),
)

GONE = "the files are no longer on the server (outputs are deleted after the retention period)"


def _locate(spec: _Spec, artifacts: Mapping[str, str | None]) -> tuple[Path | None, Path | None, str]:
    """``(file, folder to zip into it, name of the folder inside the zip)`` for a target, or
    ``(None, None, "")`` when its files are not there."""
    raw = artifacts.get(spec.artifact)
    if not raw:
        return None, None, ""
    path = Path(raw)
    if spec.key == "gguf":
        return (path, None, "") if path.is_file() else (None, None, "")
    if spec.key == "packed":
        zipped = artifacts.get("archive")
        archive = Path(zipped) if zipped else path.with_name("model.zip")
        if archive.is_file():
            return archive, None, path.name
        return (archive, path, path.name) if path.is_dir() else (None, None, "")
    archive = path.with_name(path.name + ".zip")  # compressors.storage.make_archive's default name
    if archive.is_file():
        return archive, None, path.name
    return (archive, path, path.name) if path.is_dir() else (None, None, "")


def serve_commands(
    artifacts: Mapping[str, str | None], run_name: str, prompt: str | None = None
) -> list[ServeTarget]:
    """One :class:`ServeTarget` per format in :data:`TARGETS`, for a run whose artifacts are
    ``artifacts`` (the job's ``artifacts`` column: :class:`compressors.run.Artifacts` as strings).

    ``run_name`` prefixes the downloads (``run-12`` gives ``run-12-model.gguf``), so two runs' files do
    not overwrite each other; ``prompt`` is the text the commands continue (default: the harness's)."""
    text = prompt or DEFAULT_PROMPT
    quoted = {"prompt_sh": shlex.quote(text), "prompt_py": json.dumps(text)}
    targets = []
    for spec in TARGETS:
        file, folder, inner = _locate(spec, artifacts)
        if spec.key == "gguf":
            gguf_type = artifacts.get("gguf_type")
            stem = Path(artifacts.get("gguf_path") or "model.gguf").name
            download_name = f"{run_name}-{stem}"
            detail = f"llama.cpp block type {gguf_type}" if gguf_type else "one file"
            if artifacts.get("gguf_note") and file is not None:
                detail += f"; {artifacts['gguf_note']}"
        else:
            download_name = f"{run_name}-{file.name if file is not None else spec.key + '.zip'}"
            detail = f"a zip of the folder {inner or spec.key}/"
        if file is None:
            note = artifacts.get(spec.note) if spec.note else None
            missing = note or (GONE if artifacts.get(spec.artifact) else spec.none_yet)
        else:
            missing = None
        folder_name = "./" + (inner or spec.key)
        fill = {
            **quoted,
            "file_sh": shlex.quote(download_name),
            "file_py": json.dumps(download_name),
            "dir_sh": shlex.quote(folder_name),
            "dir_py": json.dumps(folder_name),
        }
        commands = [Command(label, lang, code.format(**fill)) for label, lang, code in spec.commands]
        targets.append(
            ServeTarget(
                key=spec.key,
                title=spec.title,
                engines=spec.engines,
                detail=detail,
                file=file,
                folder=folder,
                download_name=download_name,
                mime=spec.mime,
                missing=missing,
                commands=commands,
            )
        )
    return targets
