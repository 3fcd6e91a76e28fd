"""Measure an exported model in the engine it is meant for, on the same windows Shrinkwise scores.

Why: an export is only worth something if the engine loads it and computes what Shrinkwise measured.
These functions run the engine itself (llama.cpp through ``llama-cpp-python``; ``transformers``
``from_pretrained`` on a compressed-tensors folder) and score exactly the token windows that
:func:`compressors.evaluate.perplexity` scores (exp of the mean next-token NLL, window by window), so
the two perplexities are comparable to a fraction of a percent. vLLM needs a GPU and is measured by
``benchmarks/engines.py`` where one exists.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compressors.base import CompressionError


class EngineMissing(CompressionError):
    """The engine's Python package is not installed; the message says how to install it."""


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # an optional engine: say how to get it
        raise EngineMissing(
            "llama-cpp-python is not installed; `bash scripts/setup.sh` installs it from the lock "
            "(it builds llama.cpp from source, about 5 minutes on 2 cores, once per machine)"
        ) from exc
    return llama_cpp


def load_gguf(path: str | Path, n_ctx: int, *, logits_all: bool = False, threads: int | None = None) -> Any:
    """Open a GGUF file with llama.cpp (CPU), quietly; raises a clear error when it refuses the file."""
    llama_cpp = _llama_cpp()
    import os

    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            logits_all=logits_all,
            n_threads=threads or max(1, min(4, os.cpu_count() or 1)),
            verbose=False,
        )
    except ValueError as exc:  # llama-cpp-python raises ValueError("Failed to load model from file")
        raise CompressionError(f"llama.cpp could not load {path}: {exc}") from exc


def _window_nll(logits: np.ndarray, tokens: list[int]) -> float:
    lg = logits[: len(tokens) - 1].astype(np.float64)
    lg -= lg.max(axis=-1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(tokens) - 1), tokens[1:]].sum())


def llama_cpp_perplexity(path: str | Path, windows: torch.Tensor) -> float:
    """Perplexity of the GGUF at ``path`` on ``windows`` ([n, seq] token ids), computed by llama.cpp."""
    llm = load_gguf(path, n_ctx=int(windows.shape[1]), logits_all=True)
    nll, count = 0.0, 0
    try:
        for row in windows.tolist():
            llm.reset()
            llm.eval(row)
            nll += _window_nll(np.asarray(llm.scores[: len(row)]), row)
            count += len(row) - 1
    finally:
        llm.close()
    return math.exp(nll / count)


def llama_cpp_generate(path: str | Path, prompt: str, max_tokens: int = 16) -> str:
    """Greedy completion of ``prompt`` by llama.cpp (its own tokenizer from the GGUF metadata)."""
    llm = load_gguf(path, n_ctx=256)
    try:
        out = llm(prompt, max_tokens=max_tokens, temperature=0.0)
    finally:
        llm.close()
    return str(out["choices"][0]["text"])


def transformers_perplexity(folder: str | Path, windows: torch.Tensor) -> float:
    """Perplexity of a checkpoint folder loaded with plain ``transformers`` ``from_pretrained``.

    For a compressed-tensors export this is transformers' own compressed-tensors integration (no
    Shrinkwise code runs in the forward), never with remote code.
    """
    from transformers import AutoModelForCausalLM

    from compressors.evaluate import perplexity

    model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=False)
    model.eval()
    with torch.no_grad():
        return perplexity(model, windows)
