"""What a finished run becomes in its row: RunMetrics columns, artifacts, generations, timings."""

from __future__ import annotations

from jobs.execute import result_columns


def test_result_columns_store_each_figure_once_under_the_page_names():
    result = {
        "before": {"perplexity": 10.0, "size_on_disk_bytes": 4000, "n_params": 1000, "generation": "hi"},
        "after": {
            "perplexity": 10.5,
            "size_on_disk_bytes": 600,
            "bits_per_weight_compressed": 4.25,
            "generation": "ho",
            "generation_prompt": "Say",
        },
        "artifacts": {"checkpoint_dir": "/x/model", "archive": None},
        "timings": {"compress": 1.5, "note": "not a number"},
        "compress_peak_rss_bytes": 123,
        "evaluation": {"windows": 4, "seq_len": 512, "reason": "bounded by the compression", "chosen": True},
    }
    cols = result_columns(result)
    assert cols["before_metrics"] == {
        "perplexity": 10.0,
        "size_bytes": 4000,
        "params": 1000,
        "generation": "hi",
    }
    after = cols["after_metrics"]
    assert after["size_bytes"] == 600 and after["bits_per_weight"] == 4.25
    assert after["compress_peak_rss_bytes"] == 123
    assert after["evaluation"]["reason"] == "bounded by the compression"  # the run result page says why
    assert cols["samples"] == {"prompt": "Say", "before": "hi", "after": "ho"}
    assert cols["artifacts"] == {"checkpoint_dir": "/x/model"} and cols["timings"] == {"compress": 1.5}
