"""engine.quality: recipe rows first, then the method at the same bits; family preference; a fit of the
drop against log size; a range around the point; lossless is 0 and no rows is unknown."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import pytest

from engine.quality import (
    BASIS_CONFIG,
    BASIS_LOSSLESS,
    BASIS_METHOD,
    BASIS_UNKNOWN,
    QualityIndex,
    estimate_quality,
    index_for,
    row_drop_pct,
)
from knowledge.loader import load_all
from knowledge.schema import Evidence


def row(
    value: float,
    *,
    baseline: float = 10.0,
    method: str = "gptq",
    recipe: str | None = "gptq-w4a16-g128",
    bits: float | None = 4,
    group_size: int | None = 128,
    family: str | None = "llama-2",
    params: float | None = 7e9,
    metric: str = "perplexity",
    **extra: Any,
) -> Evidence:
    data: dict[str, Any] = {
        "method": method,
        "model": f"{family}-{params}",
        "setting": f"{bits}-bit g{group_size} {value}",
        "metric": metric,
        "dataset": "WikiText2",
        "value": value,
        "baseline": baseline,
        "source": {"paper": "Test", "locator": "Table 1", "tag": "primary", "url": "https://example.org"},
        "recipe": recipe,
        "bits": bits,
        "group_size": group_size,
        "family": family,
        "params": params,
    }
    data.update(extra)
    return Evidence.model_validate(data)


def q(evidence: tuple[Evidence, ...], **over: Any) -> Any:
    args: dict[str, Any] = {
        "recipe_id": "gptq-w4a16-g128",
        "method_id": "gptq",
        "bits": 4,
        "group_size": 128,
        "lossless": False,
        "params": 7e9,
        "family": "llama-2",
        "evidence": evidence,
    }
    args.update(over)
    return estimate_quality(**args)


def test_lossless_is_zero_whatever_the_rows_say():
    rows = (row(20.0),)  # a 100% rise on the recipe's own row
    est = q(rows, lossless=True)
    assert (est.drop_pct, est.low_pct, est.high_pct, est.basis) == (0.0, 0.0, 0.0, BASIS_LOSSLESS)


def test_no_rows_is_unknown_never_zero():
    est = q((), recipe_id="awq-w4a16-g128", method_id="awq")
    assert est.basis == BASIS_UNKNOWN and est.drop_pct is None and est.low_pct is None and est.rows == 0
    assert "unknown" in est.note
    # rows of another method or other bits do not count either
    other = (row(11.0, method="rtn", recipe="rtn-w4a16-g128"), row(11.0, bits=3, recipe="gptq-w3a16-g128"))
    assert q(other, recipe_id="gptq-w8a16", bits=8, group_size=-1).basis == BASIS_UNKNOWN


def test_recipe_rows_first_then_same_method_and_bits_nearest_group():
    rows = (
        row(10.5),  # the recipe's own row: +5%
        row(12.0, recipe=None, group_size=-1),  # same method, per-channel: +20%
    )
    est = q(rows)
    assert est.basis == BASIS_CONFIG and est.drop_pct == pytest.approx(5.0) and est.rows == 1
    # act-order has no rows: falls back to the gptq 4-bit rows of the nearest group size (128, not -1)
    est = q(rows, recipe_id="gptq-w4a16-g128-actorder")
    assert est.basis == BASIS_METHOD and est.drop_pct == pytest.approx(5.0)
    # a per-channel request gets the per-channel row
    est = q(rows, recipe_id="gptq-w4a16-g128-actorder", group_size=-1)
    assert est.drop_pct == pytest.approx(20.0)


def test_accuracy_rows_count_as_relative_loss():
    acc = row(68.0, baseline=70.0, metric="accuracy")
    assert row_drop_pct(acc) == pytest.approx(100 * 2 / 70)
    assert row_drop_pct(row(10.5)) == pytest.approx(5.0)


def test_family_preferred_when_it_has_rows():
    rows = (
        row(10.2, family="llama-2"),  # +2%
        row(11.0, family="opt"),  # +10%
    )
    est = q(rows, family="llama-2")
    assert est.family_match and est.drop_pct == pytest.approx(2.0) and est.rows == 1
    est = q(rows, family="opt")
    assert est.family_match and est.drop_pct == pytest.approx(10.0)
    # an unseen family uses every row and says so
    est = q(rows, family="qwen2")
    assert not est.family_match and est.rows == 2 and "no qwen2 rows" in est.note
    assert est.drop_pct == pytest.approx(6.0)


def test_size_fit_shrinks_the_drop_for_bigger_models():
    # +8% at 7B, +4% at 70B: the fit is linear in log10(params)
    rows = (row(10.8, params=7e9), row(10.4, params=70e9))
    small, mid, big = (q(rows, params=p).drop_pct for p in (7e9, math.sqrt(7e9 * 70e9), 70e9))
    assert small == pytest.approx(8.0) and big == pytest.approx(4.0) and mid == pytest.approx(6.0)
    assert small > mid > big
    # the opposite data give the opposite direction: the fit follows the rows, it is not assumed
    rev = (row(10.4, params=7e9), row(10.8, params=70e9))
    assert q(rev, params=7e9).drop_pct < q(rev, params=70e9).drop_pct


def test_outside_the_sizes_measured_reads_the_nearest_size_and_widens_the_range():
    rows = (row(10.8, params=7e9), row(10.4, params=70e9))
    est = q(rows, params=700e9)
    assert est.drop_pct == pytest.approx(4.0)  # clamped to the 70B end of the fit
    assert est.low_pct == pytest.approx(0.0)  # the fit extrapolated one decade further
    assert "nearest measured size" in est.note


def test_one_size_uses_the_nearest_size_median():
    rows = (row(10.3, params=7e9), row(10.5, params=7e9), row(10.1, params=7e9), row(12.0, params=1.3e9))
    # 7B and 1.3B are two sizes: the fit is used; with only 7B rows the median of the nearest size
    only7 = rows[:3]
    est = q(only7, params=13e9)
    assert est.drop_pct == pytest.approx(3.0) and (est.low_pct, est.high_pct) == pytest.approx((1.0, 5.0))
    assert "nearest size" in est.note


@pytest.mark.parametrize("params", [1e9, 7e9, 13e9, 30e9, 70e9, 400e9])
def test_range_contains_the_point(params):
    rows = (
        row(10.9, params=7e9),
        row(10.6, params=7e9, dataset="C4"),
        row(10.5, params=13e9),
        row(10.1, params=70e9),
        row(10.3, params=70e9, dataset="C4"),
    )
    est = q(rows, params=params)
    assert est.low_pct is not None and est.high_pct is not None and est.drop_pct is not None
    assert est.low_pct <= est.drop_pct <= est.high_pct
    assert est.high_pct > est.low_pct  # the rows disagree, so the range is not a point


def test_to_dict_round_numbers_and_fields():
    d = q((row(10.5),)).to_dict()
    assert d == {
        "drop_pct": 5.0,
        "low_pct": 5.0,
        "high_pct": 5.0,
        "basis": "config",
        "rows": 1,
        "family_match": True,
        "note": d["note"],
    }
    assert d["note"].startswith("gptq-w4a16-g128: 1 row(s) on llama-2 7B")


def test_rows_without_quality_metric_or_baseline_are_ignored():
    speed = row(2.0, baseline=1.0, metric="speedup")
    nobase = row(10.5, baseline=None)
    assert q((speed, nobase)).basis == BASIS_UNKNOWN


def test_index_is_built_once_per_evidence_tuple():
    rows = (row(10.5),)
    assert index_for(rows) is index_for(rows)
    assert index_for(tuple(rows)) is index_for(rows)  # tuple(t) is t
    assert index_for(list(rows)) is not index_for(rows)


def test_bad_params_is_an_error():
    with pytest.raises(ValueError, match="params"):
        q((), params=0)


# --- on the bundled evidence ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evidence() -> tuple[Evidence, ...]:
    return load_all().evidence


def test_bundled_gptq_g128_rests_on_its_own_rows(evidence):
    est = q(evidence, recipe_id="gptq-w3a16-g128", bits=3, family="llama-1")
    assert est.basis == BASIS_CONFIG and est.family_match and est.drop_pct is not None
    assert 0 < est.drop_pct < 30


def test_bundled_speed_of_sixty_lookups(evidence):
    recipes = [("gptq-w4a16-g128", "gptq", 4.0, 128), ("sparsegpt-50", "sparsegpt", None, None)] * 30
    index_for(evidence)
    times = []
    for params in (7e9, 8e9, 70e9, 13e9, 3e9):
        t = time.perf_counter()
        for rid, mid, bits, gs in recipes:
            q(evidence, recipe_id=rid, method_id=mid, bits=bits, group_size=gs, params=params)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.005  # 60 estimates well under the recommender's 20 ms


def test_quality_index_can_be_used_directly(evidence):
    idx = QualityIndex(evidence)
    est = idx.estimate(
        "wanda-50", "wanda", bits=None, group_size=None, lossless=False, params=7e9, family="llama-2"
    )
    assert est.basis == BASIS_CONFIG and est.family_match


def test_a_fit_never_reads_outside_the_measured_drops():
    """One collapsed model (perplexity 2e10) among ordinary rows must not drive the fit to an absurd
    negative drop at another size (found by the recipe recommender on Llama 3.1 70B)."""
    from knowledge.schema import Evidence

    def row(model: str, params: float, value: float, baseline: float) -> Evidence:
        return Evidence.model_validate(
            {
                "method": "magnitude-pruning",
                "model": model,
                "setting": f"50% unstructured, {model}",
                "metric": "perplexity",
                "value": value,
                "baseline": baseline,
                "params": params,
                "source": {"paper": "Test", "locator": "Table 1", "tag": "primary"},
            }
        )

    rows = (
        row("BLOOM-560M", 5.6e8, 2e10, 22.42),
        row("Llama-2-7B", 7e9, 14.89, 5.12),
        row("Llama-2-13B", 13e9, 6.37, 4.57),
        row("Llama-2-70B", 70e9, 4.98, 3.12),
    )
    q = estimate_quality(
        "magnitude-pruning",
        "magnitude-pruning",
        bits=None,
        group_size=None,
        lossless=False,
        params=70e9,
        family=None,
        evidence=rows,
    )
    drops = [(r.value - r.baseline) / r.baseline * 100 for r in rows]
    assert q.drop_pct is not None and q.low_pct is not None and q.high_pct is not None
    assert min(drops) <= q.drop_pct <= max(drops)
    assert -100.0 <= q.low_pct <= q.drop_pct <= q.high_pct
