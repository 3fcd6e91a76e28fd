"""Calibration and evaluation text, and the token windows cut from it.

By default the text is Python's own documentation that ships with every interpreter
(``pydoc_data.topics``: ~0.5 MB of English prose and code samples, ~80 topics), so
nothing is downloaded. A user's text file works the same way: it is split into documents at blank lines.

Calibration and evaluation never see the same text: documents (topic sections) are assigned whole to
one side (every ``eval_every``-th document, in a fixed order, goes to evaluation), so a compressor calibrated
on the calibration part is measured on text it has not seen.

* Calibration windows: ``n_samples`` windows of ``seq_len`` tokens at seeded random offsets in the
  calibration part (as GPTQ does with C4).
* Evaluation windows: consecutive non-overlapping windows of ``seq_len`` tokens from the start of
  the evaluation part, a fixed budget (default 20 x 512), so every model is measured on the same tokens.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from compressors.base import CompressionError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_EVAL_EVERY = 5  # every 5th document is held out: ~20% of the text
DEFAULT_EVAL_WINDOWS = 20
DEFAULT_SEQ_LEN = 512
DEFAULT_CALIB_SAMPLES = 128


class TextTooShort(CompressionError):
    """Not enough tokens for the requested windows; the message says how many are needed and found."""


@dataclass(frozen=True)
class TextSplit:
    """Disjoint calibration and evaluation text, and where it came from."""

    calibration: str
    evaluation: str
    source: str
    n_calibration_docs: int
    n_evaluation_docs: int


SECTION_CHARS = 4000


def default_documents(section_chars: int = SECTION_CHARS) -> list[str]:
    """The pydoc topics cut into sections of consecutive paragraphs (>= ``section_chars`` characters).

    Topics are taken in sorted key order (deterministic for one Python version). Sections rather than
    whole topics are the unit because a few topics hold most of the text: holding out every 5th topic
    leaves only 7.3 k evaluation tokens (SmolLM2's tokenizer); every 5th section gives ~24 k
    evaluation and ~90 k calibration tokens, and each section is coherent prose. Paragraphs that
    recur in several topics are kept once, so no paragraph is on both sides.
    """
    from pydoc_data.topics import topics

    docs: list[str] = []
    seen: set[str] = set()  # some topics repeat paragraphs of others; keep the first copy only
    for key in sorted(topics):
        if not topics[key].strip():
            continue
        current: list[str] = []
        for para in text_documents(topics[key]):
            if para in seen:
                continue
            seen.add(para)
            current.append(para)
            if sum(len(p) for p in current) >= section_chars:
                docs.append("\n\n".join(current))
                current = []
        if current:
            docs.append("\n\n".join(current))
    return docs


def file_documents(path: str | Path) -> list[str]:
    """A user's text file split into documents at blank lines."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CompressionError(f"cannot read text file {p}: {exc.strerror}") from None
    return text_documents(text)


def text_documents(text: str) -> list[str]:
    docs = [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]
    if not docs:
        raise TextTooShort("the text is empty; give a UTF-8 text file with some prose")
    return docs


def split_documents(docs: list[str], eval_every: int = DEFAULT_EVAL_EVERY, source: str = "") -> TextSplit:
    """Every ``eval_every``-th document (indices ``eval_every-1, 2*eval_every-1, ...``) is evaluation text.

    With fewer than ``eval_every`` documents, the last one is held out (at least one on each side needs
    two documents).
    """
    if eval_every < 2:
        raise ValueError(f"eval_every={eval_every} must be at least 2")
    if len(docs) < 2:
        raise TextTooShort(
            f"the text has {len(docs)} document(s); at least 2 (separated by a blank line) are needed "
            "to keep calibration and evaluation text apart"
        )
    is_eval = [(i % eval_every) == eval_every - 1 for i in range(len(docs))]
    if not any(is_eval):
        is_eval[-1] = True
    calib = [d for d, e in zip(docs, is_eval) if not e]
    evald = [d for d, e in zip(docs, is_eval) if e]
    return TextSplit("\n\n".join(calib), "\n\n".join(evald), source, len(calib), len(evald))


def default_split(eval_every: int = DEFAULT_EVAL_EVERY) -> TextSplit:
    return split_documents(default_documents(), eval_every, source="pydoc_data.topics")


def resolve_texts(
    calib_text: str | Path | None = None,
    eval_text: str | Path | None = None,
    eval_every: int = DEFAULT_EVAL_EVERY,
) -> TextSplit:
    """Calibration and evaluation text from what the user gave.

    A ``Path`` is a file to read, a ``str`` is the text itself. Neither: the default pydoc split. Only
    calibration text: it is split into both parts. Only evaluation text: calibration uses the default
    pydoc calibration part. Both: each is used whole for its purpose.
    """

    def docs_of(x: str | Path) -> tuple[list[str], str]:
        if isinstance(x, Path):
            return file_documents(x), str(x)
        return text_documents(x), "given text"

    if eval_text is None:
        if calib_text is None:
            return default_split(eval_every)
        docs, src = docs_of(calib_text)
        return split_documents(docs, eval_every, src)
    edocs, esrc = docs_of(eval_text)
    if calib_text is None:
        d = default_split(eval_every)
        return TextSplit(
            d.calibration,
            "\n\n".join(edocs),
            f"calibration: {d.source}; evaluation: {esrc}",
            d.n_calibration_docs,
            len(edocs),
        )
    cdocs, csrc = docs_of(calib_text)
    return TextSplit(
        "\n\n".join(cdocs),
        "\n\n".join(edocs),
        f"calibration: {csrc}; evaluation: {esrc}",
        len(cdocs),
        len(edocs),
    )


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """All token ids of ``text`` as a 1-D LongTensor, without special tokens (windows add the tokenizer's
    start tokens themselves, see :func:`start_tokens`)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def start_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer itself puts before any text: the BOS of Llama-3, Gemma, Mistral, or nothing.

    Every calibration and evaluation window starts with them, as the model's own inputs do in use: a
    model trained with a BOS (Gemma-3 declares ``add_bos_token=True``) scores text without it far worse
    (Gemma-3-270M: perplexity 38.5 without, 15.6 with), and calibrating on inputs the model never sees
    misleads GPTQ. Read from the tokenizer's behaviour, not from a flag, so a template post-processor
    and a ``add_bos_token`` setting are both honoured; trailing special tokens (an EOS some tokenizers
    append) are not window material and are left out.
    """
    probe = "Hello world"
    plain = tokenizer(probe, add_special_tokens=False, verbose=False)["input_ids"]
    full = tokenizer(probe, verbose=False)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i])
    return []  # the tokenizer rewrites the text around special tokens: add nothing rather than guess


def _with_start(start: list[int], body: torch.Tensor) -> torch.Tensor:
    """``[n, len(start) + body_len]`` windows: the start tokens, then the text."""
    if not start:
        return body
    head = torch.tensor(start, dtype=body.dtype).expand(body.shape[0], len(start))
    return torch.cat([head, body], dim=1)


def calibration_windows(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    n_samples: int = DEFAULT_CALIB_SAMPLES,
    seq_len: int = DEFAULT_SEQ_LEN,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[n_samples, seq_len]`` token windows at seeded random offsets in ``text``, each starting with the
    tokenizer's start tokens (:func:`start_tokens`) followed by ``seq_len - len(start)`` text tokens."""
    if n_samples < 1 or seq_len < 2:
        raise ValueError(f"n_samples={n_samples} and seq_len={seq_len} must be >= 1 and >= 2")
    ids = tokenize(tokenizer, text) if ids is None else ids
    start = start_tokens(tokenizer)
    full_len, seq_len = seq_len, seq_len - len(start)
    if seq_len < 1:
        raise ValueError(f"seq_len={full_len} leaves no room for text after {len(start)} start token(s)")
    if ids.numel() < seq_len:
        raise TextTooShort(
            f"calibration text is too short: windows of {seq_len} tokens need at least {seq_len} tokens "
            f"(ideally {n_samples * seq_len} for {n_samples} distinct windows), found {ids.numel()}. "
            "Give a longer text file or lower the sequence length."
        )
    if ids.numel() < n_samples * seq_len:
        log.warning(
            "calibration text has %d tokens; %d windows of %d will overlap", ids.numel(), n_samples, seq_len
        )
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len + 1, (n_samples,), generator=g)
    return _with_start(start, torch.stack([ids[s : s + seq_len] for s in starts.tolist()]))


def eval_windows(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    n_windows: int = DEFAULT_EVAL_WINDOWS,
    seq_len: int = DEFAULT_SEQ_LEN,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The first ``n_windows`` consecutive non-overlapping windows of ``text``, ``seq_len`` tokens each
    including the tokenizer's start tokens (:func:`start_tokens`), so every text token is scored once."""
    if n_windows < 1 or seq_len < 2:
        raise ValueError(f"n_windows={n_windows} and seq_len={seq_len} must be >= 1 and >= 2")
    ids = tokenize(tokenizer, text) if ids is None else ids
    start = start_tokens(tokenizer)
    if seq_len - len(start) < 1:
        raise ValueError(f"seq_len={seq_len} leaves no room for text after {len(start)} start token(s)")
    seq_len -= len(start)
    need = n_windows * seq_len
    if ids.numel() < need:
        raise TextTooShort(
            f"evaluation text is too short: {n_windows} windows of {seq_len} tokens need {need} tokens, "
            f"found {ids.numel()}. Give a longer text or fewer/shorter windows."
        )
    return _with_start(start, ids[:need].reshape(n_windows, seq_len).clone())
