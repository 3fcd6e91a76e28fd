"""The evaluation harness: one function that measures a model the same way before and after compression.

What is measured, and how:

* **perplexity** on held-out text: ``exp`` of the mean next-token negative log-likelihood over
  non-overlapping windows (default 20 x 512 tokens, the same tokens for every model, no sliding context);
* **size on disk** of a saved checkpoint folder (all files) and of its weights files;
* **bits per weight** from what is stored: packed layers report every bit they hold (codes, scales,
  zeros, indices, outliers, bias) through :meth:`PackedModule.stored_bits`; other tensors count at their
  dtype. Given for the compressed layers and for the whole model (parameters deduplicated: a tied
  embedding counts once);
* **parameters** and **sparsity** (fraction of exact zeros in the decoder blocks' linear weights);
* **prefill** tokens/s for a fixed prompt length and **decode** tokens/s (one token at a time with the
  KV cache, greedy), best of ``repeats`` runs so a busy machine disturbs it less;
* **peak memory**: the highest resident set size (RSS) sampled every 5 ms while the evaluation runs,
  and the bytes held by the model's tensors (including dequantization caches);
* a **greedy generation** for a fixed prompt, to read side by side.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import Cancelled
from compressors.hf_compat import cache_kwarg, output_cache
from compressors.packed import PackedModule, packed_modules
from compressors.progress import Count
from compressors.text import DEFAULT_EVAL_WINDOWS, DEFAULT_SEQ_LEN, eval_windows, tokenize

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_PROMPT = "Python is a programming language that"
DEFAULT_PREFILL_LEN = 256
DEFAULT_DECODE_TOKENS = 32


@dataclass
class EvalResult:
    perplexity: float
    eval_tokens: int
    eval_windows: int
    eval_seq_len: int
    n_params: int
    n_compressed_weights: int
    bits_per_weight_compressed: float | None  # None when no layer is packed
    bits_per_weight_model: float
    total_stored_bits: int
    sparsity: float
    size_on_disk_bytes: int | None
    weights_file_bytes: int | None
    prefill_tokens_per_s: float
    prefill_prompt_len: int
    decode_tokens_per_s: float
    decode_tokens: int
    peak_rss_bytes: int
    model_memory_bytes: int
    generation_prompt: str
    generation: str
    seconds: float
    packed_layer_types: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        return cls(**d)


class _RssSampler:
    """Samples the process's resident set size on a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def storage_bits(model: nn.Module) -> tuple[int, int, int, int]:
    """``(total stored bits, total parameters, bits in packed layers, weights in packed layers)``.

    Dense parameters and persistent buffers are counted once each (tied weights share storage), at the
    width they are stored with: a packed checkpoint whose dense tensors were saved in 16 bits computes in
    float32 after loading (``shrinkwise_stored_dense_bits`` says what the file holds).
    """
    stored_bits = getattr(model, "shrinkwise_stored_dense_bits", None)
    packed = packed_modules(model)
    packed_bits = sum(m.stored_bits() for m in packed.values())
    packed_weights = sum(m.n_weights for m in packed.values())
    packed_params = sum(m.n_params() for m in packed.values())
    inside = tuple(p + "." for p in packed)
    seen: set[int] = set()
    dense_bits = dense_params = 0
    for name, p in model.named_parameters():
        if name.startswith(inside) or id(p) in seen:
            continue
        seen.add(id(p))
        width = stored_bits if stored_bits and p.is_floating_point() else p.element_size() * 8
        dense_bits += p.numel() * width
        dense_params += p.numel()
    return dense_bits + packed_bits, dense_params + packed_params, packed_bits, packed_weights


def linear_sparsity(model: nn.Module) -> float:
    """Fraction of the decoder blocks' linear weights that are pruned: zeros a pruned layer does not store
    (``nnz`` of a sparse packed layer) and exact zeros of a dense float layer.

    A quantized layer's weights that round to zero are not counted: they are stored like every other
    code and save nothing, so counting them made 4-bit runs report "sparsity 4.5% -> 13.7%". (A dense
    source that was itself quantized, such as a GGUF, still shows its rounding zeros: a float tensor
    does not say where its zeros came from.)"""
    from compressors.layers import find_blocks, get_weight, is_linear

    _, blocks = find_blocks(model)
    zeros = total = 0
    for block in blocks:
        for m in block.modules():
            if isinstance(m, PackedModule):
                nnz = getattr(m, "nnz", None)
                if nnz is not None:
                    zeros += m.n_weights - nnz
                total += m.n_weights
            elif is_linear(m):
                w = get_weight(m)
                zeros += int((w == 0).sum())
                total += w.numel()
    return zeros / total if total else 0.0


def model_memory_bytes(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    for m in packed_modules(model).values():
        total += m.runtime_bytes()  # a cached float weight, a low-bit kernel's weight
    return total


def folder_bytes(path: Path) -> tuple[int, int]:
    """``(all files, weight files)`` in bytes."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    weights = sum(p.stat().st_size for p in files if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    return total, weights


@torch.no_grad()
def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    cancel_event: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """exp(mean NLL) of every next token in every window (window by window, no context across windows).

    ``progress(windows done, windows)`` is called before the first window and after each one."""
    nll = 0.0
    count = 0
    if progress:
        progress(0, len(windows))
    for i, w in enumerate(windows):
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled("cancelled by the user")
        logits = model(input_ids=w[None], use_cache=False).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum").item()
        count += w.numel() - 1
        if progress:
            progress(i + 1, len(windows))
    return math.exp(nll / count)


@torch.no_grad()
def speed(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    repeats: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, float]:
    """``(prefill tokens/s, decode tokens/s)``: best of ``repeats``; decode is greedy with the KV cache.

    ``progress(steps done, steps)`` after each forward pass (a prefill or a decoded token; a slow packed
    model can take seconds per token); the time it takes is not counted in the speeds."""
    best_prefill = best_decode = 0.0
    cache_kw = cache_kwarg(model, {})
    steps, done = repeats * (1 + decode_tokens), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(input_ids=prompt_ids[None], use_cache=True)
        t1 = time.perf_counter()
        past = output_cache(out)
        nxt = out.logits[0, -1].argmax()[None, None]
        done += 1
        if progress:
            progress(done, steps)
        decode_s = 0.0  # the tokens' own time: the progress reports between them are not counted
        for _ in range(decode_tokens):
            t2 = time.perf_counter()
            out = model(input_ids=nxt, use_cache=True, **{cache_kw: past})
            past = output_cache(out)
            nxt = out.logits[0, -1].argmax()[None, None]
            decode_s += time.perf_counter() - t2
            done += 1
            if progress:
                progress(done, steps)
        best_prefill = max(best_prefill, prompt_ids.numel() / (t1 - t0))
        best_decode = max(best_decode, decode_tokens / max(decode_s, 1e-9))
    return best_prefill, best_decode


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Greedy continuation of ``prompt`` (plain text, no chat template), decoded without special tokens.

    ``progress(tokens generated, max_new_tokens)`` after each new token."""
    from transformers import GenerationMixin
    from transformers.generation.streamers import BaseStreamer

    class _Counter(BaseStreamer):  # generate() hands a streamer the prompt, then each new token
        def __init__(self) -> None:
            self.calls = 0

        def put(self, value: torch.Tensor) -> None:
            if progress is not None and self.calls:
                progress(min(self.calls, max_new_tokens), max_new_tokens)
            self.calls += 1

        def end(self) -> None:
            pass

    if not isinstance(model, GenerationMixin):  # every *ForCausalLM class is one
        raise TypeError(f"{type(model).__name__} has no generate(): not a causal language model")
    enc = tokenizer(prompt, return_tensors="pt")
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        streamer=_Counter() if progress is not None else None,
    )
    # batch_decode: decode() is typed str | list[str]; one sequence in, one string out either way
    return tokenizer.batch_decode(out[:1, enc["input_ids"].shape[1] :], skip_special_tokens=True)[0]


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_text: str,
    *,
    n_windows: int = DEFAULT_EVAL_WINDOWS,
    seq_len: int = DEFAULT_SEQ_LEN,
    checkpoint_dir: str | Path | None = None,
    prompt: str = DEFAULT_PROMPT,
    prefill_len: int = DEFAULT_PREFILL_LEN,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    max_new_tokens: int = 32,
    cancel_event: threading.Event | None = None,
    progress: Callable[[str, float, Count | None], None] | None = None,
    measure_speed: bool = True,
) -> EvalResult:
    """Measure ``model`` on ``eval_text`` (see the module docstring for each figure).

    ``checkpoint_dir``: the saved checkpoint whose size is reported (None: size not reported).
    ``progress(stage, fraction, count)`` is called with stages "perplexity" (after every window), "speed"
    (after every forward pass) and "generate" (after every token), so a slow model still reports every
    few seconds; ``count`` (:class:`compressors.progress.Count`) says how many of the step's items are
    done, from which the run shows an ETA.
    Raises :class:`compressors.text.TextTooShort` when the text has fewer than ``n_windows*seq_len`` tokens.
    """
    t_start = time.perf_counter()
    model.eval()
    ids = tokenize(tokenizer, eval_text)
    windows = eval_windows(tokenizer, eval_text, n_windows, seq_len, ids=ids)

    def report(stage: str, frac: float, count: Count | None = None) -> None:
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled("cancelled by the user")
        if progress:
            progress(stage, frac, count)

    def counted(stage: str, lo: float, hi: float, unit: str) -> Callable[[int, int], None]:
        return lambda done, total: report(
            stage, lo + (hi - lo) * done / max(total, 1), Count(done, total, unit)
        )

    with _RssSampler() as rss:
        ppl = perplexity(model, windows, cancel_event, counted("perplexity", 0.0, 0.8, "windows"))
        prefill_tps = decode_tps = 0.0
        plen = min(prefill_len, ids.numel())
        if measure_speed:
            report("speed", 0.8)
            prefill_tps, decode_tps = speed(
                model, ids[:plen], decode_tokens, progress=counted("speed", 0.8, 0.9, "speed-test passes")
            )
        report("generate", 0.9)
        gen = greedy_generate(
            model,
            tokenizer,
            prompt,
            max_new_tokens,
            progress=counted("generate", 0.9, 1.0, "generated tokens"),
        )
    total_bits, n_params, packed_bits, packed_weights = storage_bits(model)
    size = wbytes = None
    if checkpoint_dir is not None:
        size, wbytes = folder_bytes(Path(checkpoint_dir))
    types: dict[str, int] = {}
    for m in packed_modules(model).values():
        types[m.packed_type] = types.get(m.packed_type, 0) + 1
    report("done", 1.0)
    return EvalResult(
        perplexity=ppl,
        eval_tokens=int(windows.numel()),
        eval_windows=int(windows.shape[0]),
        eval_seq_len=int(windows.shape[1]),
        n_params=n_params,
        n_compressed_weights=packed_weights,
        bits_per_weight_compressed=(packed_bits / packed_weights) if packed_weights else None,
        bits_per_weight_model=total_bits / n_params,
        total_stored_bits=total_bits,
        sparsity=linear_sparsity(model),
        size_on_disk_bytes=size,
        weights_file_bytes=wbytes,
        prefill_tokens_per_s=prefill_tps,
        prefill_prompt_len=plen,
        decode_tokens_per_s=decode_tps,
        decode_tokens=decode_tokens if measure_speed else 0,
        peak_rss_bytes=rss.peak,
        model_memory_bytes=model_memory_bytes(model),
        generation_prompt=prompt,
        generation=gen,
        seconds=time.perf_counter() - t_start,
        packed_layer_types=types,
    )
