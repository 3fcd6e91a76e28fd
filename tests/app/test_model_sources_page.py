"""The Compress page's sources for large models (issue 12): the models folder (listed, or a typed path
refused outside it), the local Hugging Face cache, a hub id (offline: what to do instead), the upload's
pointer to these, and the bounded evaluation stated before the run. Tiny random models only."""

from __future__ import annotations

import shutil

import pytest

from jobs import queue
from tests.app.conftest import open_page
from tests.jobs.checkpoints import tiny_checkpoint
from tests.jobs.test_model_sources import fake_cache_repo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_the_models_folder_is_listed_and_a_path_outside_is_refused(home, tiny, tmp_path, monkeypatch):
    root = tmp_path / "models"
    shutil.copytree(tiny, root / "org" / "tiny-llama")
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(root))
    monkeypatch.delenv("SHRINKWISE_MODEL_ROOTS")  # the suite's temp-folder root (tests/conftest.py)
    at = open_page("compress", {"source": "path"})
    (pick,) = [s for s in at.selectbox if s.key == "cmp_folder_pick"]
    assert any(o.startswith("org/tiny-llama (") for o in pick.options)
    assert pick.value.startswith("org/tiny-llama") and not at.error
    assert metrics(at)["Architecture"] == "LlamaForCausalLM"
    at = open_page("compress", {"source": "path", "path": str(tiny)})  # outside the root
    (err,) = [e.value for e in at.error]
    assert f"outside the models folder {root.resolve()}" in err and "SHRINKWISE_MODELS_DIR" in err
    assert "Architecture" not in metrics(at)


def test_a_model_in_the_hugging_face_cache_is_selectable(home, tiny, tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    snap = fake_cache_repo(cache, "someorg/tiny-llama", {p.name: p.read_bytes() for p in tiny.iterdir()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    at = open_page("compress", {"source": "hf"})
    (pick,) = [s for s in at.selectbox if s.key == "cmp_hf_pick"]
    assert pick.value.startswith("someorg/tiny-llama (main)")
    assert not at.error and metrics(at)["Architecture"] == "LlamaForCausalLM"
    assert any("snapshots" in c.value and snap.name in c.value for c in at.caption)  # the folder read
    at.button(key="cmp_run").click().run()
    (run,) = queue.list_runs()  # the job reads the snapshot folder, and is named after the repository
    assert run.model_ref == str(snap) and run.model_name.startswith("someorg/tiny-llama (")


def test_a_hub_id_offline_says_what_to_do(home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    at = open_page("compress", {"source": "hub"})
    at.text_input(key="cmp_hub_id").input("someorg/somemodel").run()
    at.button(key="cmp_hub_go").click().run()
    (err,) = [e.value for e in at.error]
    assert "cannot download someorg/somemodel" in err and "offline" in err
    assert "under the models folder" in err
    assert at.button(key="cmp_run").disabled


def test_the_upload_names_the_ways_for_larger_models(home, tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    at = open_page("compress", {"source": "upload"})
    caption = " ".join(c.value for c in at.caption)
    assert f"under the models folder {tmp_path / 'models'}" in caption
    assert "Hugging Face cache" in caption and "hub id" in caption


def test_the_bounded_evaluation_is_stated_before_the_run(home, tiny):
    at = open_page("compress", {"source": "path", "path": str(tiny), "compressor": "rtn"})
    assert at.checkbox(key="cmp_auto_eval").value
    assert any(c.value.startswith("Evaluation: 20 windows of 512 tokens (the default") for c in at.caption)
    at = open_page(
        "compress", {"source": "path", "path": str(tiny), "compressor": "rtn", "eval_windows": "3"}
    )
    assert not at.checkbox(key="cmp_auto_eval").value
    assert any(
        c.value.startswith("Evaluation: 3 windows of 512 tokens (set by the user)") for c in at.caption
    )


def test_a_hub_id_is_downloaded_with_progress_and_then_used(home, tiny, tmp_path, monkeypatch):
    """Against the loopback hub (tests/jobs/fake_hub.py): the download runs in the background while the
    page shows it, lands under the models folder, and the model is then inspected like any folder."""
    import huggingface_hub.constants

    from tests.jobs.fake_hub import FakeHub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("SHRINKWISE_MODELS_DIR", str(tmp_path / "models"))
    files = {p.name: p.read_bytes() for p in tiny.iterdir() if p.is_file()}
    with FakeHub("someorg/tiny-llama", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        at = open_page("compress", {"source": "hub"})
        at.text_input(key="cmp_hub_id").input("someorg/tiny-llama").run()
        at.button(key="cmp_hub_go").click().run()
    assert not at.error, [e.value for e in at.error]
    folder = (tmp_path / "models" / "someorg" / "tiny-llama").resolve()
    assert any("is downloaded to" in c.value for c in at.caption)
    assert (folder / "config.json").is_file() and metrics(at)["Architecture"] == "LlamaForCausalLM"


def test_the_run_result_says_which_evaluation_windows_and_why(home, tmp_path):
    from knowledge.db import session
    from knowledge.tables import CompressionRun
    from tests.app.test_history_page import finished_run

    rid = finished_run("big-model", "rtn", 100.0, 21.0, tmp=tmp_path, bits=4)
    with session() as s:
        row = s.get(CompressionRun, rid)
        row.after_metrics = {
            **(row.after_metrics or {}),
            "eval_tokens": 2048,
            "eval_windows": 4,
            "eval_seq_len": 512,
            "evaluation": {
                "windows": 4,
                "seq_len": 512,
                "reason": "bounded by the compression",
                "chosen": True,
            },
        }
        s.add(row)
    at = open_page("run_result", {"run": str(rid)})
    assert any(
        "Perplexity on 2,048 held-out tokens (4 windows of 512, bounded by the compression)" in c.value
        for c in at.caption
    ), [c.value for c in at.caption]
