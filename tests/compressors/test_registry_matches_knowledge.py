"""Every registered compressor agrees with the knowledge-base entries of the methods it implements.

Driven by the registry and the data files alone: a new compressor is checked as soon as its module
registers it and its method's entry names it (``compressor: <id>``), with no list here to extend. The
flags compared are the ones the pages and the recommender read from one side or the other, so a
disagreement would show a user one thing and run another: the lifecycle cell (phase, impact), what the
run needs (calibration text, gradients/training, a GPU) and whether the weights change.
"""

from __future__ import annotations

import pytest

from compressors.base import CompressionError, all_compressors, check_pairing, default_method
from knowledge.ids import MethodId
from knowledge.loader import load_methods
from knowledge.schema import Grade, Hardware, Method

COMPRESSORS = all_compressors()
METHODS: dict[str, Method] = {m.id: m for m in load_methods()}
PAIRS = [(cid, mid) for cid, cls in COMPRESSORS.items() for mid in cls.implements]
GPUS = {Hardware.NVIDIA_GPU, Hardware.AMD_GPU}


def disagreements(cid: str, m: Method) -> list[str]:
    """What the compressor ``cid`` declares that the method's data entry contradicts, in words."""
    cls = COMPRESSORS[cid]
    r = m.requirements
    problems = []

    def differ(what: str, ours: object, theirs: object) -> None:
        if ours != theirs:
            problems.append(f"{what}: compressor says {ours!r}, {m.id}'s data entry says {theirs!r}")

    differ("phase", cls.phase, m.phase.value)
    differ("impact", cls.impact, m.impact.value)
    differ("needs calibration data", cls.needs_calibration, r.calibration_data)
    differ("needs gradients", cls.needs_gradients, r.gradients)
    differ("trains (training compute above none)", cls.needs_gradients, r.training_compute is not Grade.NONE)
    if cls.needs_gpu:
        differ(
            "needs a GPU (a GPU among the hardware targets)",
            True,
            bool(GPUS & {h.target for h in m.hardware}),
        )
    weights_untouched = not {"weights", "architecture"} & {c.value for c in m.changes}
    differ(
        "leaves the weights untouched (output format 'dynamic')",
        cls.output_format == "dynamic",
        weights_untouched,
    )
    return problems


def test_the_registry_is_not_empty_and_every_compressor_implements_a_method():
    assert COMPRESSORS and PAIRS
    for cid, cls in COMPRESSORS.items():
        assert cls.implements, cid
        assert default_method(cid) == cls.implements[0]


@pytest.mark.parametrize(("cid", "mid"), PAIRS, ids=[f"{c}->{m}" for c, m in PAIRS])
def test_compressor_flags_agree_with_its_methods_entry(cid, mid):
    m = METHODS.get(mid)
    assert m is not None, f"compressor {cid!r} implements {mid!r}, which is no method of knowledge/data"
    assert m.compressor == cid, f"{mid}'s data entry should say `compressor: {cid}`, it says {m.compressor!r}"
    problems = disagreements(cid, m)
    assert not problems, f"{cid} vs {mid}:\n" + "\n".join(problems)


def test_every_method_that_names_a_compressor_is_implemented_by_it():
    for m in METHODS.values():
        if m.compressor is None:
            continue
        assert m.compressor in COMPRESSORS, (
            f"{m.id} names compressor {m.compressor!r}, which is not registered"
        )
        assert m.id in COMPRESSORS[m.compressor].implements, (
            f"{m.id} names compressor {m.compressor!r}, whose implements {COMPRESSORS[m.compressor].implements} "
            "does not list it"
        )


def test_compressor_ids_that_are_not_method_ids_are_refused_as_methods():
    """The bug this guards: a run stored as method="magnitude" (a compressor id) is filed nowhere."""
    for cid in COMPRESSORS:
        if cid not in METHODS:
            with pytest.raises(CompressionError, match="does not implement"):
                check_pairing(MethodId(cid), cid)
    for cid, mid in PAIRS:
        check_pairing(mid, cid)
        for other in {m for c, m in PAIRS if c != cid} - set(COMPRESSORS[cid].implements):
            with pytest.raises(CompressionError, match=f"{other!r} is run by"):
                check_pairing(other, cid)


def test_the_checker_catches_a_disagreement():
    """The comparison is not vacuous: flip one flag of a real entry and it is reported."""
    cid, mid = PAIRS[0]
    m = METHODS[mid]
    flipped = m.model_copy(
        update={
            "requirements": m.requirements.model_copy(
                update={"calibration_data": not m.requirements.calibration_data}
            )
        }
    )
    assert any("calibration" in p for p in disagreements(cid, flipped))


def test_the_int8_compressor_is_filed_only_under_methods_whose_footprint_it_writes():
    """The recommender's footprint of a method is what its bundled compressor must deliver: the bundled
    dynamic-int8 compressor writes 8-bit weights, so it is never credited to the paper's INT4 CPU
    runtime (cpu-inference, 4.25 bits), whose page would otherwise promise half the size."""
    comp = COMPRESSORS["cpu-inference"]
    assert [METHODS[m].footprint.bits_per_weight for m in comp.implements] == [8.0]
    assert METHODS[MethodId("cpu-inference")].compressor is None
