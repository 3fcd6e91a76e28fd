"""Recipes: what an engineer deploys. A method (an idea on the phase x impact map) with a configuration.

A method such as GPTQ is a cell on the paper's map; a *recipe* is one way of deploying it that costs
something definite: GPTQ W4A16 with groups of 128, its stored bits per weight (scales and zeros
counted), the tensors it leaves in 16 bits, the output format, the engines that load that format and
the commands that produce and serve it, the hardware it needs (kinds, minimum NVIDIA compute
capability, number formats and kernels such as ``fp8`` or ``marlin``), and what it needs from the user
(calibration text, training). The recommender ranks recipes; every recipe belongs to exactly one
method, so the map and the paper's view stay per method.

Recipes are data (``knowledge/data/recipes/*.yaml``, top-level key ``recipes:``), validated like
methods by :mod:`knowledge.loader`: unknown keys are errors, and the method, the format, the engines
and the bundled compressor must exist (``shrinkwise kb validate``). Every fact carries a source.

Commands are templates: ``{model}`` is the checkpoint to compress or serve (a hub id or a folder),
``{out}`` the output folder or file. :func:`compress_command` writes Shrinkwise's own command from the
bundled compressor's flags, so a recipe's flags are written once.

Example::

    from knowledge.catalog import load_catalog
    cat = load_catalog(include_measured=False)
    r = cat.recipes["gptq-w4a16-g128"]
    r.storage.linear, r.format, [e.engine.value for e in r.engines]
    compress_command(r, "meta-llama/Llama-3.1-8B")
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, field_validator

from knowledge.schema import Hardware, Method, ServingEngine, _Strict

#: Training a recipe needs: none (one-shot), low (LoRA-scale, hours on one GPU), high (pre-training scale).
TRAINING_LEVELS: tuple[str, ...] = ("none", "low", "high")


def support_flags() -> frozenset[str]:
    """What a device may support: the vocabulary of ``knowledge.devices.FEATURES`` (imported late:
    the devices module reads its data file through the loader, which imports this module)."""
    from knowledge.devices import FEATURES

    return frozenset(FEATURES)


ConfigValue = str | int | float | bool


class Storage(_Strict):
    """Stored bits per weight of each tensor class, scales, zeros, indices and outliers counted.

    The same four classes as ``engine.memory.TensorBits``. ``linear`` is the decoder's linear layers
    (what quantizers quantize); for pruning it is the effective bits per original weight position
    (2:4 sparsity with a bitmask: 16 x 0.5 + 1 = 9).
    """

    linear: float = Field(gt=0, le=32)
    embedding: float = Field(default=16.0, gt=0, le=32)
    lm_head: float = Field(default=16.0, gt=0, le=32)
    other: float = Field(default=16.0, gt=0, le=32)


class HardwareNeeds(_Strict):
    """What the device must offer. Checked against ``knowledge.devices.Device`` when a device is named."""

    hardware: list[Hardware] = Field(min_length=1, description="Hardware kinds it runs on at all.")
    min_compute_capability: float | None = Field(
        default=None, ge=3.0, le=20.0, description="NVIDIA GPUs only: the lowest SM version with its kernel."
    )
    supports: list[str] = Field(
        default_factory=list, description="Flags every device must have (e.g. fp8 for W8A8 FP8)."
    )
    supports_any: list[str] = Field(
        default_factory=list, description="At least one of these (e.g. avx2/avx512/amx: an x86 runtime)."
    )

    @field_validator("supports", "supports_any")
    @classmethod
    def _known_flags(cls, v: list[str]) -> list[str]:
        known = support_flags()
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown support flag(s) {bad}; use {', '.join(sorted(known))}")
        return v


class EngineUse(_Strict):
    """One engine that loads the recipe's output, the command that serves it, and its own limits."""

    engine: ServingEngine
    serve: str = Field(min_length=3, description="Command (template with {model}/{out}) that serves it.")
    min_compute_capability: float | None = Field(default=None, ge=3.0, le=20.0)
    supports: list[str] = Field(default_factory=list)
    hardware: list[Hardware] | None = Field(
        default=None, description="Kinds this engine runs the recipe on (default: the recipe's)."
    )
    note: str | None = None

    @field_validator("supports")
    @classmethod
    def _known_flags(cls, v: list[str]) -> list[str]:
        return HardwareNeeds._known_flags(v)


class BundledCompressor(_Strict):
    """Shrinkwise's own compressor that produces this recipe, with the exact settings."""

    id: str = Field(min_length=2, description="A compressors.base.CompressorId (the method's compressor).")
    flags: dict[str, ConfigValue] = Field(default_factory=dict)


class RecipeSource(_Strict):
    what: str = Field(min_length=3, description="Which fact it backs: 'vLLM FP8 needs SM 8.9'.")
    url: str = Field(min_length=8)


class Recipe(_Strict):
    """A method with a concrete configuration: the unit the recommender ranks."""

    id: str = Field(pattern=r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
    method: str
    name: str = Field(min_length=1)
    summary: str = Field(min_length=1, max_length=300)
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    storage: Storage
    kv_bits: float | None = Field(default=None, gt=0, le=16, description="KV-cache bits (KV recipes).")
    param_fraction: float = Field(default=1.0, gt=0, le=1.0, description="Share of parameters kept.")
    changes: list[str] | None = Field(
        default=None, description="What it rewrites, when narrower than its method's (a KV-cache setting)."
    )
    lossless: bool = False
    load_time: bool = Field(
        default=False, description="Applied when the engine loads the model: the checkpoint stays as it is."
    )
    format: str
    engines: list[EngineUse] = Field(min_length=1)
    requires: HardwareNeeds
    calibration: bool
    training: str = "none"
    compressor: BundledCompressor | None = None
    produce: str | None = Field(
        default=None, description="The standard tool's command that writes the checkpoint (none: load-time)."
    )
    sources: list[RecipeSource] = Field(min_length=1)

    @field_validator("training")
    @classmethod
    def _training(cls, v: str) -> str:
        if v not in TRAINING_LEVELS:
            raise ValueError(f"{v!r} is not one of {', '.join(TRAINING_LEVELS)}")
        return v

    # --- derived ----------------------------------------------------------------------------------

    @property
    def bits(self) -> float | None:
        """The configured bit width (``config.bits``), if any."""
        b = self.config.get("bits")
        return float(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else None

    @property
    def group_size(self) -> int | None:
        g = self.config.get("group_size")
        return int(g) if isinstance(g, int) and not isinstance(g, bool) else None

    @property
    def keeps_checkpoint(self) -> bool:
        """The original checkpoint stays usable: load-time quantization or lossless decoding."""
        return self.load_time or self.lossless

    @property
    def engine_ids(self) -> tuple[str, ...]:
        return tuple(e.engine.value for e in self.engines)

    def engine(self, engine_id: str) -> EngineUse | None:
        for e in self.engines:
            if e.engine.value == engine_id:
                return e
        return None

    def config_text(self) -> str:
        """``bits=4, group_size=128, act_order=false`` (how the CLI and the cards show it)."""
        return ", ".join(f"{k}={_flag(v)}" for k, v in self.config.items()) or "default"


def _flag(v: ConfigValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


#: Flags of ``shrinkwise compress`` that are shortcuts for ``--set key=value``.
_SHORTCUTS = {"bits": "--bits", "group_size": "--group-size", "sparsity": "--sparsity"}


def compress_command(recipe: Recipe, model: str = "{model}", out: str | None = None) -> str | None:
    """Shrinkwise's command that produces ``recipe`` with its bundled compressor (None when none).

    >>> # shrinkwise compress meta-llama/Llama-3.1-8B --method gptq --bits 4 --group-size 128 ...
    """
    comp = recipe.compressor
    if comp is None:
        return None
    parts = ["shrinkwise", "compress", _quote(model), "--method", comp.id]
    for key, value in comp.flags.items():
        if key in _SHORTCUTS:
            parts += [_SHORTCUTS[key], _flag(value)]
        else:
            parts += ["--set", f"{key}={_flag(value)}"]
    parts += ["--out", _quote(out or f"out/{recipe.id}")]
    return " ".join(parts)


def run_it_query(recipe: Recipe) -> dict[str, str] | None:
    """The Compress page's query parameters that open it with this recipe's compressor and settings."""
    comp = recipe.compressor
    if comp is None:
        return None
    query = {"method": recipe.method, "compressor": comp.id}
    query.update({k: _flag(v) for k, v in comp.flags.items()})
    return query


def _quote(text: str) -> str:
    return text if text.startswith("{") else shlex.quote(text)


def fill(template: str | None, model: str, out: str | None = None) -> str | None:
    """A command template with ``{model}`` and ``{out}`` filled in (other braces are kept)."""
    if template is None:
        return None
    return template.replace("{model}", model).replace("{out}", out or "out")


def default_recipe(method: Method) -> Recipe:
    """The recipe of a method that has no recipe of its own: its knowledge-base defaults.

    Its storage is the method's ``footprint`` (bits per weight times the share of parameters kept,
    applied to the linear layers; 16-bit embeddings), its format the method's first output format, its engines those the method lists and
    its hardware the method's targets. Used for methods without recipe data, so every method can
    still be ranked (and for tests that build methods by hand).
    """
    fp = method.footprint
    bits = fp.bits_per_weight
    if fp.sparsity_stored and fp.sparsity:
        bits = bits * (1.0 - fp.sparsity) + 1.0
    bits *= fp.param_fraction  # effective bits per original weight position (see Storage)
    engines: list[EngineUse] = []
    for out in method.formats:
        for eng in out.engines:
            if all(e.engine is not eng for e in engines):
                engines.append(EngineUse(engine=eng, serve=f"load {{model}} with {eng.value}"))
    if not engines:
        engines.append(EngineUse(engine=ServingEngine.CUSTOM, serve="run the method's reference code"))
    fmt = method.formats[0].format.split()[0] if method.formats else "runtime-only"
    gradients = method.requirements.gradients
    compute = method.requirements.training_compute.value
    training = "none" if not gradients else ("high" if compute in ("medium", "high") else "low")
    return Recipe(
        id=method.id,
        method=method.id,
        name=method.name,
        summary=method.summary[:300],
        config={},
        storage=Storage(linear=min(32.0, bits)),
        param_fraction=fp.param_fraction,
        lossless=False,
        load_time=False,
        format=fmt,
        engines=engines,
        requires=HardwareNeeds(hardware=[h.target for h in method.hardware]),
        calibration=method.requirements.calibration_data,
        training=training,
        compressor=BundledCompressor(id=method.compressor) if method.compressor else None,
        produce=None,
        sources=[RecipeSource(what="the method's knowledge-base entry", url=method.citation.url)],
    )


def recipes_for(
    methods: Mapping[str, Method] | Iterable[Method], recipes: Mapping[str, Recipe] | Iterable[Recipe] | None
) -> dict[str, Recipe]:
    """Every recipe of ``recipes`` whose method is among ``methods``, plus a default recipe for each
    method that has none (see :func:`default_recipe`), keyed by recipe id in id order."""
    by_id = dict(methods) if isinstance(methods, Mapping) else {m.id: m for m in methods}
    given: list[Recipe] = []
    if recipes is not None:
        given = list(recipes.values()) if isinstance(recipes, Mapping) else list(recipes)
    out: dict[str, Recipe] = {}
    covered: set[str] = set()
    for r in given:
        if r.method in by_id:
            out[r.id] = r
            covered.add(r.method)
    for mid, m in by_id.items():
        if mid not in covered and mid not in out:
            out[mid] = default_recipe(m)
    return dict(sorted(out.items()))


def describe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the JSON output shows it (configuration, storage, format, engines, commands)."""
    return {
        "id": recipe.id,
        "method": recipe.method,
        "name": recipe.name,
        "config": dict(recipe.config),
        "storage": recipe.storage.model_dump(),
        "kv_bits": recipe.kv_bits,
        "lossless": recipe.lossless,
        "load_time": recipe.load_time,
        "format": recipe.format,
        "calibration": recipe.calibration,
        "training": recipe.training,
        "sources": [s.model_dump() for s in recipe.sources],
    }
