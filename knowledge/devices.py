"""Devices: the accelerators and CPUs a model is deployed on, with what their hardware can run.

A hardware *kind* (``knowledge.schema.Hardware``: nvidia-gpu, cpu, ...) is too coarse to decide
whether a recipe runs: FP8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper), the
Marlin 4-bit kernels need 8.0 (Ampere), bf16 needs Ampere on NVIDIA, AMX needs a 4th-generation Xeon.
A :class:`Device` names its generation (``arch``, and ``compute_capability`` on NVIDIA), its memory,
and a set of ``supports`` flags from the fixed vocabulary :data:`FEATURES`, so a recipe's hardware
requirement is a subset test rather than prose. Each entry cites the vendor's spec page.

The table is ``knowledge/data/devices.yaml``, validated on load (unknown keys, unknown feature
flags and duplicate ids are errors naming the file, the entry and the field).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from knowledge.entries import close_matches, load_entries
from knowledge.schema import Hardware

#: The bundled table of devices.
DEVICES_FILE = Path(__file__).resolve().parent / "data" / "devices.yaml"

#: What a device's ``supports`` may name, and what each flag means.
FEATURES: Mapping[str, str] = {
    "fp8": "FP8 (E4M3/E5M2) matrix math in hardware: NVIDIA compute capability >= 8.9, AMD CDNA3",
    "bf16": "bfloat16 arithmetic at full speed (NVIDIA >= 8.0, AMD CDNA2+, AVX512-BF16/AMX CPUs, Apple M2+)",
    "fp16": "float16 arithmetic at full speed",
    "int8-tc": "INT8 tensor-core / matrix-unit math (W8A8 kernels such as SmoothQuant's)",
    "int4-tc": "INT4 tensor-core math (Turing and Ampere; dropped from Hopper)",
    "marlin": "NVIDIA compute capability >= 8.0, what vLLM's Marlin mixed-precision 4/8-bit GEMM kernels require",
    "sparse-2of4": "2:4 structured-sparsity tensor cores (NVIDIA Ampere and newer)",
    "amx": "Intel Advanced Matrix Extensions (bf16/int8 tiles; Sapphire Rapids and newer)",
    "avx512": "AVX-512 vector instructions",
    "avx512-vnni": "AVX-512 VNNI int8 dot products",
    "avx2": "AVX2 vector instructions",
    "neon": "Arm NEON (Advanced SIMD)",
    "sve": "Arm Scalable Vector Extension",
    "metal": "Apple Metal GPU compute (llama.cpp's and MLX's GPU backend on Macs)",
    "npu": "a neural processing unit usable for LLM inference (Qualcomm Hexagon, Apple Neural Engine, Intel NPU)",
    "cuda": "runs CUDA (NVIDIA's runtime; what vLLM, TensorRT-LLM and most kernels need)",
    "rocm": "runs ROCm/HIP (AMD's runtime; vLLM and llama.cpp support it)",
}


class DeviceError(ValueError):
    """A device id is not in the bundled table; the message lists the close matches."""


class Device(BaseModel):
    """One accelerator or CPU: its generation, its memory and what it supports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Short id, e.g. 'h100-sxm', 'rtx-4090', 'm3-max-64gb'.")
    name: str
    hardware: Hardware
    arch: str = Field(
        description="Generation: 'hopper', 'ada', 'ampere', 'cdna3', 'apple-m3', 'sapphire-rapids'."
    )
    compute_capability: float | None = Field(default=None, description="NVIDIA only, e.g. 9.0, 8.9, 8.0.")
    memory_gb: float = Field(gt=0, description="Memory the device (or the machine, for CPUs) offers, GB.")
    supports: frozenset[str] = Field(description="Feature flags from knowledge.devices.FEATURES.")
    source: str = Field(description="Vendor spec page the numbers come from.")

    @field_validator("supports")
    @classmethod
    def _known_features(cls, v: frozenset[str]) -> frozenset[str]:
        unknown = sorted(v - FEATURES.keys())
        if unknown:
            raise ValueError(
                f"unknown feature(s) {', '.join(repr(u) for u in unknown)}{close_matches(unknown[0], list(FEATURES))}; "
                f"allowed: {', '.join(FEATURES)}"
            )
        return v

    @field_validator("source")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError(f"source {v!r} must be the https url of the vendor's spec page")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Device:
        nvidia = self.hardware is Hardware.NVIDIA_GPU
        if nvidia != (self.compute_capability is not None):
            raise ValueError("compute_capability is given for NVIDIA GPUs and only for them")
        if nvidia and "cuda" not in self.supports:
            raise ValueError("an NVIDIA GPU supports 'cuda'")
        if self.hardware is Hardware.AMD_GPU and "rocm" not in self.supports:
            raise ValueError("an AMD GPU supports 'rocm'")
        if self.compute_capability is not None:
            # flags that follow from the generation must agree with it (a typo here would offer FP8
            # on an Ampere card, the mistake the recommender is meant to stop making)
            cc = self.compute_capability
            for flag, minimum in (("fp8", 8.9), ("marlin", 8.0), ("bf16", 8.0), ("sparse-2of4", 8.0)):
                if (flag in self.supports) != (cc >= minimum):
                    have = "lists" if flag in self.supports else "lacks"
                    raise ValueError(
                        f"compute capability {cc} {have} {flag!r}; NVIDIA GPUs have it from {minimum} on"
                    )
        return self

    def has(self, *features: str) -> bool:
        """True when the device supports every named feature."""
        return set(features) <= self.supports


@lru_cache(maxsize=4)
def _load_devices(path: Path) -> tuple[Device, ...]:
    return tuple(load_entries(path, "devices", Device))


def bundled_devices(path: Path | str = DEVICES_FILE) -> dict[str, Device]:
    """The bundled devices by id, in file order (``knowledge/data/devices.yaml``, validated on load)."""
    return {d.id: d for d in _load_devices(Path(path).resolve())}


def load_device(id: str) -> Device:
    """The bundled device ``id`` (any case); :class:`DeviceError` with the close matches otherwise."""
    devices = bundled_devices()
    key = id.strip().lower()
    if key in devices:
        return devices[key]
    raise DeviceError(
        f"unknown device {id!r}{close_matches(key, list(devices))}; known devices: {', '.join(devices)}"
    )
