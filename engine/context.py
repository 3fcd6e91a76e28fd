"""The flat, typed set of symbols that rule conditions may use, and how they are filled.

A rule in ``engine/rules/rules.yaml`` sees one flat mapping: the user's constraints as ``c_*`` and one
method (with its estimates) as ``m_*``. The table :data:`SYMBOLS` gives each symbol a rule-engine type
and, for enumerations, the allowed values, so that a misspelt symbol, a type mismatch (``m_fits > 3``)
or a misspelt value (``c_priority == 'predictabilty'``) fails when the rules are loaded, not when a user
asks for a recommendation. Optional constraints are never null here (``c_memory_gb`` is 0 with
``c_has_memory_budget`` false) so that every comparison is well typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rule_engine
from rule_engine import DataType

from knowledge.schema import (
    BackwardCompatibility,
    Changes,
    Family,
    Grade,
    Hardware,
    HardwareDependence,
    Impact,
    Method,
    Phase,
    QualityDrop,
    ServingEngine,
    SizeReduction,
)

from .axes import Position
from .constraints import Constraints, Priority, TargetEngine, TrainingBudget, Workload
from .estimates import Estimate, grade_tables


@dataclass(frozen=True)
class Symbol:
    type: Any  # a rule_engine DataType
    doc: str
    domain: tuple[str, ...] | None = None  # allowed string values (of the scalar or of the array items)


_S, _F, _B = DataType.STRING, DataType.FLOAT, DataType.BOOLEAN
_A = DataType.ARRAY(DataType.STRING)

SYMBOLS: dict[str, Symbol] = {
    # --- constraints ---
    "c_phases": Symbol(_A, "phases the user can intervene in", tuple(Phase.values())),
    "c_keep_original": Symbol(_B, "the original weights must stay usable"),
    "c_priority": Symbol(_S, "predictability, balanced or adaptivity", tuple(Priority.values())),
    "c_hardware": Symbol(_S, "target hardware", tuple(Hardware.values())),
    "c_model_params": Symbol(_F, "number of parameters"),
    "c_model_params_b": Symbol(_F, "number of parameters, billions"),
    "c_baseline_memory_gb": Symbol(_F, "weights in 16 bits, GB"),
    "c_has_memory_budget": Symbol(_B, "a memory budget was given"),
    "c_memory_gb": Symbol(_F, "memory budget for weights + KV cache, GB (0 when none)"),
    "c_max_quality_drop": Symbol(_F, "acceptable quality drop, percent"),
    "c_calibration_data": Symbol(_B, "calibration text is available"),
    "c_training_budget": Symbol(_S, "none, low or high", tuple(TrainingBudget.values())),
    "c_can_train": Symbol(_B, "training budget is not none"),
    "c_workload": Symbol(_S, "chat, long-context, batch or multimodal", tuple(Workload.values())),
    "c_has_serving_engine": Symbol(_B, "a serving engine was named"),
    "c_serving_engine": Symbol(_S, "the serving engine ('' when none)", ("",) + tuple(TargetEngine.values())),
    "c_model_frozen": Symbol(
        _B, "the model cannot be changed: keep the original, or inference is the only phase"
    ),
    "c_pretraining": Symbol(
        _B, "pre-training is allowed and the training budget is high (training from scratch)"
    ),
    "c_has_device": Symbol(_B, "a device was named"),
    "c_device": Symbol(_S, "the device's name ('' when none)"),
    "c_device_fp8": Symbol(_B, "the named device has FP8 tensor cores"),
    "c_context_length": Symbol(_F, "tokens per sequence"),
    "c_batch_size": Symbol(_F, "concurrent sequences"),
    "c_long_context": Symbol(_B, "the workload is long-context or the context is at least 32k tokens"),
    "c_batch_serving": Symbol(_B, "the workload is batch or at least 8 sequences are served at once"),
    # --- method ---
    "m_id": Symbol(_S, "method id"),
    "m_name": Symbol(_S, "method name"),
    "m_phase": Symbol(_S, "phase of application", tuple(Phase.values())),
    "m_impact": Symbol(_S, "static or dynamic", tuple(Impact.values())),
    "m_family": Symbol(_S, "family", tuple(Family.values())),
    "m_changes": Symbol(_A, "what it changes", tuple(Changes.values())),
    "m_hardware": Symbol(_A, "hardware targets with a real gain", tuple(Hardware.values())),
    "m_engines": Symbol(_A, "serving engines that load its output formats", tuple(ServingEngine.values())),
    "m_formats": Symbol(_A, "output formats"),
    "m_has_formats": Symbol(_B, "it writes at least one output format"),
    "m_calibration": Symbol(_B, "needs calibration data"),
    "m_gradients": Symbol(_B, "needs gradients (training)"),
    "m_training_compute": Symbol(_S, "training compute grade", tuple(Grade.values())),
    "m_retraining_from_scratch": Symbol(_B, "only applies when training from scratch"),
    "m_size_reduction": Symbol(_S, "Table 1 grade", tuple(SizeReduction.values())),
    "m_quality_grade": Symbol(_S, "Table 1 quality-drop grade", tuple(QualityDrop.values())),
    "m_hardware_dependence": Symbol(_S, "Table 1 grade", tuple(HardwareDependence.values())),
    "m_backward_compatibility": Symbol(_S, "Table 1 grade", tuple(BackwardCompatibility.values())),
    "m_size_score": Symbol(_F, "size-reduction grade as 0..1 (engine/data/grades.yaml)"),
    "m_quality_grade_score": Symbol(_F, "quality-drop grade as -1..1 (engine/data/grades.yaml)"),
    "m_weight_quantizer": Symbol(_B, "a quantization method that rewrites the weights"),
    "m_bits_per_weight": Symbol(_F, "stored bits per weight"),
    "m_param_fraction": Symbol(_F, "share of parameters left"),
    "m_compute_fraction": Symbol(_F, "share of compute left per token (1 when unknown)"),
    "m_memory_gb": Symbol(_F, "the recipe's weights + KV cache, GB"),
    "m_memory_saved_gb": Symbol(_F, "GB saved against 16-bit weights"),
    "m_fits": Symbol(_B, "weights + KV cache fit the memory budget (true when no budget)"),
    "m_quality_drop_pct": Symbol(_F, "expected quality drop, percent (0 when unknown: see r_quality_known)"),
    "m_quality_from_evidence": Symbol(_B, "the quality estimate comes from evidence rows"),
    "m_evidence_count": Symbol(_F, "number of evidence rows"),
    "m_phase_position": Symbol(_F, "0 at pre-training .. 1 at inference"),
    "m_predictability": Symbol(_F, "predictability position 0..1 (claim 3)"),
    "m_adaptivity": Symbol(_F, "adaptivity position 0..1 (claim 3)"),
    "m_in_paper": Symbol(_B, "one of the paper's eight"),
    "m_fills_gap": Symbol(_B, "dynamic at pre-/post-training: the paper's gap"),
    "m_has_compressor": Symbol(_B, "Shrinkwise bundles a compressor for it"),
    "m_compressor": Symbol(_S, "bundled compressor id ('' when none)"),
    # --- recipe (the unit that is ranked; the m_* estimate symbols above are the recipe's) ---
    "r_id": Symbol(_S, "recipe id"),
    "r_name": Symbol(_S, "recipe name"),
    "r_format": Symbol(_S, "output format id"),
    "r_engines": Symbol(_A, "engines that load the recipe's output", tuple(ServingEngine.values())),
    "r_engines_here": Symbol(
        _A,
        "of those, the engines usable here (device, hardware, named engine)",
        tuple(ServingEngine.values()),
    ),
    "r_research_only": Symbol(_B, "only the method's research code runs it (engine 'custom')"),
    "r_engine_problem": Symbol(_S, "why no usable engine runs it ('' when one does)"),
    "r_device_problem": Symbol(_S, "what the hardware or device lacks ('' when nothing)"),
    "r_lossless": Symbol(_B, "outputs are exactly the original model's"),
    "r_load_time": Symbol(_B, "applied when loading: the checkpoint stays as it is"),
    "r_keeps_checkpoint": Symbol(_B, "load-time or lossless: the original stays usable"),
    "r_calibration": Symbol(_B, "needs calibration text"),
    "r_training": Symbol(_S, "training it needs", ("none", "low", "high")),
    "r_linear_bits": Symbol(_F, "stored bits per linear weight"),
    "r_kv_bits": Symbol(_F, "KV-cache bits (16 when unchanged)"),
    "r_changes_weights": Symbol(_B, "its stored weights are smaller than 16-bit"),
    "r_weight_saving": Symbol(_F, "share of the 16-bit weight memory saved, 0..1"),
    "r_kv_saving": Symbol(_F, "share of the 16-bit KV cache saved, 0..1"),
    "r_kv_share": Symbol(_F, "share of the 16-bit deployment's memory that is KV cache, 0..1"),
    "r_weights_gb": Symbol(_F, "weights after the recipe, GB"),
    "r_kv_cache_gb": Symbol(_F, "KV cache after the recipe, GB"),
    "r_quality_known": Symbol(_B, "the quality estimate rests on evidence (or the recipe is lossless)"),
    "r_quality_basis": Symbol(
        _S, "lossless, config, method or unknown", ("lossless", "config", "method", "unknown")
    ),
    "r_quality_margin": Symbol(_F, "1 - drop / budget when known and within it, else 0"),
    "r_fp8_tensor_cores": Symbol(_B, "W8A8 FP8 on a device with FP8 tensor cores"),
    "r_has_compressor": Symbol(_B, "a bundled compressor produces it"),
    "r_gguf": Symbol(_B, "a GGUF recipe (llama.cpp)"),
}


def rule_context() -> rule_engine.Context:
    """A typed rule-engine context: unknown symbols and type mismatches fail when a rule is parsed."""
    resolver = rule_engine.type_resolver_from_dict({name: s.type for name, s in SYMBOLS.items()})
    return rule_engine.Context(type_resolver=resolver)


def constraint_symbols(c: Constraints, baseline_memory_gb: float | None = None) -> dict[str, Any]:
    """The ``c_*`` half of the context (built once per recommendation).

    ``baseline_memory_gb`` is the 16-bit deployment's weights (from the shape when there is one).
    """
    device = None
    if c.device:
        from knowledge.devices import load_device

        device = load_device(c.device)
    phases = tuple(p.value for p in c.phases)
    return {
        "c_phases": phases,
        "c_keep_original": c.keep_original,
        "c_priority": c.priority.value,
        "c_hardware": c.hardware.value,
        "c_model_params": float(c.model_params),
        "c_model_params_b": float(c.model_params) / 1e9,
        "c_baseline_memory_gb": (
            float(baseline_memory_gb) if baseline_memory_gb is not None else float(c.model_params) * 2.0 / 1e9
        ),
        "c_has_memory_budget": c.memory_gb is not None,
        "c_memory_gb": float(c.memory_gb or 0.0),
        "c_max_quality_drop": float(c.max_quality_drop),
        "c_calibration_data": c.calibration_data,
        "c_training_budget": c.training_budget.value,
        "c_can_train": c.training_budget is not TrainingBudget.NONE,
        "c_workload": c.workload.value,
        "c_has_serving_engine": c.serving_engine is not None,
        "c_serving_engine": c.serving_engine.value if c.serving_engine else "",
        "c_model_frozen": c.keep_original or phases == ("inference",),
        "c_pretraining": "pre-training" in phases and c.training_budget is TrainingBudget.HIGH,
        "c_has_device": device is not None,
        "c_device": device.name if device is not None else "",
        "c_device_fp8": device is not None and "fp8" in device.supports,
        "c_context_length": float(c.context_length),
        "c_batch_size": float(c.batch_size),
        "c_long_context": c.workload is Workload.LONG_CONTEXT or c.context_length >= 32768,
        "c_batch_serving": c.workload is Workload.BATCH or c.batch_size >= 8,
    }


#: Symbols that depend on the method alone, cached per Method object (methods are immutable).
_STATIC_CACHE: dict[int, tuple[Method, dict[str, Any]]] = {}
_STATIC_CACHE_MAX = 4096


def _static_method_symbols(m: Method) -> dict[str, Any]:
    hit = _STATIC_CACHE.get(id(m))
    if hit is not None and hit[0] is m:
        return hit[1]
    grades = grade_tables()
    engines: list[str] = []
    for f in m.formats:
        for e in f.engines:
            if e.value not in engines:
                engines.append(e.value)
    changes = tuple(ch.value for ch in m.changes)
    out = {
        "m_id": m.id,
        "m_name": m.name,
        "m_phase": m.phase.value,
        "m_impact": m.impact.value,
        "m_family": m.family.value,
        "m_changes": changes,
        "m_hardware": tuple(h.target.value for h in m.hardware),
        "m_engines": tuple(engines),
        "m_formats": tuple(f.format for f in m.formats),
        "m_has_formats": bool(m.formats),
        "m_calibration": m.requirements.calibration_data,
        "m_gradients": m.requirements.gradients,
        "m_training_compute": m.requirements.training_compute.value,
        "m_retraining_from_scratch": m.requirements.retraining_from_scratch,
        "m_size_reduction": m.grades.size_reduction.value,
        "m_quality_grade": m.grades.quality_drop.value,
        "m_hardware_dependence": m.grades.hardware_dependence.value,
        "m_backward_compatibility": m.grades.backward_compatibility.value,
        "m_size_score": grades["size_reduction_score"][m.grades.size_reduction.value],
        "m_quality_grade_score": grades["quality_grade_score"][m.grades.quality_drop.value],
        "m_weight_quantizer": m.family is Family.QUANTIZATION and "weights" in changes,
        "m_compute_fraction": float(m.footprint.compute_fraction or 1.0),
        "m_in_paper": m.in_paper,
        "m_fills_gap": m.fills_gap,
        "m_has_compressor": bool(m.compressor),
        "m_compressor": m.compressor or "",
    }
    if len(_STATIC_CACHE) >= _STATIC_CACHE_MAX:
        _STATIC_CACHE.clear()
    _STATIC_CACHE[id(m)] = (m, out)
    return out


def method_symbols(
    m: Method, est: Estimate, pos: Position, evidence_count: int, baseline_memory_gb: float
) -> dict[str, Any]:
    """The ``m_*`` half of the context for one method and its estimate."""
    out = dict(_static_method_symbols(m))
    out.update(
        {
            "m_bits_per_weight": float(est.bits_per_weight),
            "m_param_fraction": float(est.param_fraction),
            "m_memory_gb": float(est.memory_gb),
            "m_memory_saved_gb": float(baseline_memory_gb - est.memory_gb),
            "m_fits": est.fits is not False,
            "m_quality_drop_pct": float(est.quality_drop_pct),
            "m_quality_from_evidence": est.quality_basis == "evidence",
            "m_evidence_count": float(evidence_count),
            "m_phase_position": pos.phase_position,
            "m_predictability": pos.predictability,
            "m_adaptivity": pos.adaptivity,
        }
    )
    return out


def display(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """The context as rule sentences show it: arrays joined with commas, empty ones as 'none'."""
    out: dict[str, Any] = {}
    for k, v in ctx.items():
        if isinstance(v, tuple):
            out[k] = ", ".join(v) if v else "none"
        else:
            out[k] = v
    return out


def sample_display() -> dict[str, Any]:
    """A context of the right types, for checking the placeholders of rule sentences at load time."""
    sample: dict[str, Any] = {}
    for name, s in SYMBOLS.items():
        if s.type == _F:
            sample[name] = 1.0
        elif s.type == _B:
            sample[name] = True
        else:
            sample[name] = "x"
    return sample
