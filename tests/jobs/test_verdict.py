"""The one-line verdict and the good/bad tones of the result page's before/after table (jobs.ui)."""

from __future__ import annotations

from jobs.ui import BAD, GOOD, comparison_rows, comparison_tones, method_label, verdict


def test_smaller_worse_perplexity_and_faster():
    before = {"size_bytes": 3.1e9, "perplexity": 10.0, "decode_tokens_per_s": 10.0}
    after = {"size_bytes": 1e9, "perplexity": 10.82, "decode_tokens_per_s": 17.0}
    assert verdict("4-bit GPTQ", before, after) == (
        "4-bit GPTQ: 3.1× smaller, perplexity +8.2%, decode 1.7× faster on this machine"
    )


def test_larger_better_perplexity_and_slower():
    before = {"size_bytes": 1e9, "perplexity": 10.0, "decode_tokens_per_s": 20.0}
    after = {"size_bytes": 1.5e9, "perplexity": 9.5, "decode_tokens_per_s": 10.0}
    assert (
        verdict("RTN", before, after)
        == "RTN: 1.5× larger, perplexity -5.0%, decode 2.0× slower on this machine"
    )


def test_missing_figures_are_left_out():
    before = {"size_bytes": 4000, "perplexity": 10.0}
    after = {"size_bytes": 1000, "perplexity": 10.5, "decode_tokens_per_s": 12.0}
    assert verdict("x", before, after) == "x: 4.0× smaller, perplexity +5.0%"
    assert verdict("x", {"perplexity": None}, {"size_bytes": 0}) == "x: no before/after figures to compare"
    assert verdict(
        "x", {"size_bytes": 100, "decode_tokens_per_s": 5.0}, {"size_bytes": 101, "decode_tokens_per_s": 5.01}
    ) == ("x: the same size, decode as fast on this machine")


def test_method_label_names_the_bits():
    assert method_label("GPTQ", {"bits": 4, "group_size": 128}) == "4-bit GPTQ"
    assert method_label("GPTQ", {"bits": "3"}) == "3-bit GPTQ"
    assert method_label("Wanda", {"sparsity": 0.5}) == "Wanda"


def test_tones_follow_lower_is_better_and_line_up_with_the_rows():
    before = {
        "perplexity": 10.0,
        "size_bytes": 4000,
        "decode_tokens_per_s": 10.0,
        "sparsity": 0.0,
        "params": 5,
    }
    after = {
        "perplexity": 11.0,
        "size_bytes": 1000,
        "decode_tokens_per_s": 12.0,
        "sparsity": 0.5,
        "params": 5,
        "compress_peak_rss_bytes": 10,
    }
    rows, tones = comparison_rows(before, after), comparison_tones(before, after)
    assert len(rows) == len(tones)
    tone = {r["figure"]: t for r, t in zip(rows, tones, strict=True)}
    assert tone["Perplexity (held-out)"] == BAD
    assert tone["Size on disk"] == GOOD
    assert tone["Decode tokens/s"] == GOOD
    assert tone["Sparsity of linear layers"] == GOOD
    assert tone["Parameters"] == "" and tone["Peak memory while compressing"] == ""
