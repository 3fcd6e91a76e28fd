"""The pre-run estimate covers every stage a run times (load, measure before, compress, save, measure
after, export), from the model's shape and this machine's throughput (pinned in tests), and reuses what
the machine has measured already (the original's measurement)."""

from __future__ import annotations

import pytest

from compressors.base import Calibration, ModelShape
from compressors.run import RUN_STAGES, estimate_stages
from jobs import preflight

SMOLLM2 = ModelShape(
    n_params=134_515_008,
    n_layers=30,
    hidden_size=576,
    intermediate_size=1536,
    vocab_size=49152,
    n_heads=9,
    n_kv_heads=3,
)


def test_every_stage_is_estimated_and_the_total_is_their_sum():
    stages = estimate_stages(SMOLLM2, 60.0, size_on_disk_bytes=538_000_000)
    assert list(stages) == [*RUN_STAGES, "total"]
    assert all(stages[k] > 0 for k in RUN_STAGES), stages
    assert stages["compress"] == 60.0
    assert stages["total"] == pytest.approx(sum(stages[k] for k in RUN_STAGES))


def test_measuring_follows_the_evaluation_budget_and_a_reused_measurement():
    small = estimate_stages(SMOLLM2, 1.0, eval_windows=4, eval_seq_len=512)
    large = estimate_stages(SMOLLM2, 1.0, eval_windows=40, eval_seq_len=512)
    assert large["measure before"] > 5 * small["measure before"]
    assert large["measure after"] > 5 * small["measure after"]
    # the original measured before on this machine: reused (0 s), and the result takes about as long
    reused = estimate_stages(SMOLLM2, 1.0, eval_windows=40, before_seconds=123.0)
    assert reused["measure before"] == 0.0
    assert reused["measure after"] == pytest.approx(123.0 + reused["load"])  # loaded back, then measured
    assert estimate_stages(SMOLLM2, 1.0, export=False)["export"] == 0.0


def test_preflight_gives_the_stages_for_the_runs_text_budget():
    class Info:  # what the Compress page has from the bounded inspection
        shape = SMOLLM2
        size_on_disk_bytes = 538_000_000

    cost = preflight.estimate_cost(
        "gptq", Info(), {"bits": 4, "group_size": 64}, Calibration(16, 512), eval_windows=4, eval_seq_len=256
    )
    assert list(cost.stages) == [*RUN_STAGES, "total"]
    assert cost.stages["compress"] == pytest.approx(cost.estimate.seconds)
    assert cost.stages["measure before"] == pytest.approx(
        estimate_stages(SMOLLM2, 0.0, eval_windows=4, eval_seq_len=256)["measure before"]
    )
