"""The Compress page's model check runs in a child process with memory and time limits (issue 15)."""

from __future__ import annotations

import json
import resource
import time

import pytest

from compressors.models import ModelLoadError
from jobs import preflight
from tests.jobs import checkpoints as ck


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ck.tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def test_the_child_gives_the_same_answer_as_an_inspection_here(tiny):
    assert preflight.check_model(str(tiny)) == preflight.inspect_model(str(tiny))


def test_a_hostile_config_gets_a_clear_message_in_seconds_and_the_server_does_not_grow(tmp_path):
    cfg = dict(ck.HUGE_CONFIG, num_hidden_layers=10_000_000)
    folder = ck.config_only_checkpoint(tmp_path / "hostile", cfg)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    with pytest.raises(ModelLoadError, match="num_hidden_layers = 10,000,000"):
        preflight.check_model(str(folder))
    assert time.monotonic() - t < 60
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50_000  # kB


def test_an_inspection_over_its_memory_limit_is_stopped_with_the_reason(tiny):
    with pytest.raises(ModelLoadError, match="needed more than the 200 MB allowed"):
        preflight.check_model(str(tiny), memory_mb=200)


def test_an_inspection_over_its_time_limit_is_stopped_with_the_reason(tiny):
    with pytest.raises(ModelLoadError, match="took longer than 0.2 s"):
        preflight.check_model(str(tiny), timeout_s=0.2)


def test_a_refusal_in_the_child_keeps_its_message(tmp_path):
    folder = ck.config_only_checkpoint(tmp_path / "neg", dict(ck.HUGE_CONFIG, hidden_size=-64))
    with pytest.raises(ModelLoadError, match="hidden_size = -64"):
        preflight.check_model(str(folder))
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == -64
