"""Calibration and evaluation text never overlap; windows are deterministic; short text is explained."""

import pytest
import torch

from compressors.text import (
    TextTooShort,
    calibration_windows,
    default_documents,
    default_split,
    eval_windows,
    resolve_texts,
    split_documents,
    start_tokens,
)
from tests.compressors.tiny import tiny_bos_tokenizer, tiny_tokenizer


def test_default_split_is_disjoint_deterministic_and_about_a_fifth():
    docs = default_documents()
    a, b = default_split(), default_split()
    assert a == b
    cal = set(a.calibration.split("\n\n"))
    ev = set(a.evaluation.split("\n\n"))
    assert not (cal & ev)
    assert a.n_calibration_docs + a.n_evaluation_docs == len(docs)
    assert 0.15 < len(a.evaluation) / (len(a.evaluation) + len(a.calibration)) < 0.3


def test_split_assigns_whole_documents():
    docs = [f"doc {i}" for i in range(10)]
    s = split_documents(docs, eval_every=5)
    assert s.evaluation == "doc 4\n\ndoc 9"
    assert "doc 4" not in s.calibration and s.n_calibration_docs == 8


def test_resolve_texts_from_file_and_string(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("\n\n".join(f"paragraph {i} " * 5 for i in range(10)))
    s = resolve_texts(f)
    assert "paragraph 4" in s.evaluation and "paragraph 4" not in s.calibration
    both = resolve_texts("calibration only", "evaluation only")
    assert (both.calibration, both.evaluation) == ("calibration only", "evaluation only")


def test_calibration_windows_are_seeded_and_shaped():
    tok = tiny_tokenizer()
    text = default_split().calibration[:20000]
    a = calibration_windows(tok, text, 8, 64, seed=1)
    assert a.shape == (8, 64) and a.dtype == torch.long
    assert torch.equal(a, calibration_windows(tok, text, 8, 64, seed=1))
    assert not torch.equal(a, calibration_windows(tok, text, 8, 64, seed=2))


def test_eval_windows_are_consecutive_and_non_overlapping():
    tok = tiny_tokenizer()
    text = default_split().evaluation[:20000]
    w = eval_windows(tok, text, 4, 32)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert w.reshape(-1).tolist() == ids[:128]


def test_too_short_text_says_needed_and_found():
    tok = tiny_tokenizer()
    with pytest.raises(TextTooShort, match=r"need 1024 tokens, found \d+"):
        eval_windows(tok, "a short text", 2, 512)
    with pytest.raises(TextTooShort, match=r"at least 512 tokens.*found \d+"):
        calibration_windows(tok, "a short text", 4, 512)
    with pytest.raises(TextTooShort, match="at least 2"):
        split_documents(["only one"])


def test_start_tokens_follow_the_tokenizer():
    assert start_tokens(tiny_tokenizer()) == []
    bos = tiny_bos_tokenizer()
    assert start_tokens(bos) == [bos.bos_token_id]
    assert bos("text")["input_ids"][0] == bos.bos_token_id  # the fixture really adds it


def test_windows_start_with_the_bos_the_tokenizer_declares():
    """Gemma-3 and Llama-3 tokenizers add a BOS; windows without it measure a model out of its use."""
    tok = tiny_bos_tokenizer()
    bos = tok.bos_token_id
    text = default_split().evaluation[:20000]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    w = eval_windows(tok, text, 4, 32)
    assert w.shape == (4, 32)
    assert w[:, 0].tolist() == [bos] * 4
    assert w[:, 1:].reshape(-1).tolist() == ids[: 4 * 31], "every text token is scored once, in order"
    c = calibration_windows(tok, default_split().calibration[:20000], 8, 64, seed=1)
    assert c.shape == (8, 64) and c[:, 0].tolist() == [bos] * 8
    assert (c[:, 1:] != bos).all()
