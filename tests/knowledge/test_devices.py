"""Devices: the bundled table loads and is consistent with what each generation supports; lookups and
bad entries fail with one precise line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from knowledge.devices import FEATURES, Device, DeviceError, bundled_devices, load_device
from knowledge.loader import DataFileError
from knowledge.schema import Hardware


def _entry(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "test-gpu",
        "name": "Test GPU",
        "hardware": "nvidia-gpu",
        "arch": "ampere",
        "compute_capability": 8.0,
        "memory_gb": 40,
        "supports": ["cuda", "bf16", "fp16", "int8-tc", "marlin", "sparse-2of4"],
        "source": "https://example.com/spec",
    }
    data.update(over)
    return data


def test_bundled_devices_load_with_known_features() -> None:
    devices = bundled_devices()
    for d in devices.values():
        assert d.supports <= FEATURES.keys()
        assert d.source.startswith("https://")


def test_load_device_any_case_and_close_matches() -> None:
    assert load_device("H100-SXM").id == "h100-sxm"
    with pytest.raises(DeviceError, match=r"unknown device 'h100' \(did you mean 'h100-sxm'"):
        load_device("h100")


def test_fp8_on_an_ampere_gpu_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"compute capability 8.0 lists 'fp8'; NVIDIA GPUs have it from 8.9"):
        Device.model_validate(_entry(supports=[*_entry()["supports"], "fp8"]))


def test_unknown_feature_suggests_the_right_one() -> None:
    with pytest.raises(ValueError, match=r"unknown feature\(s\) 'avx-512'.*did you mean 'avx512'"):
        Device.model_validate(_entry(hardware="cpu", compute_capability=None, supports=["avx-512"]))


def test_compute_capability_only_on_nvidia() -> None:
    with pytest.raises(ValueError, match="compute_capability is given for NVIDIA GPUs and only for them"):
        Device.model_validate(_entry(hardware="amd-gpu", supports=["rocm", "bf16"]))


def test_bad_devices_file_names_file_entry_and_field(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": [_entry(), _entry(id="other", memroy_gb=1)]}, sort_keys=False))
    with pytest.raises(DataFileError) as exc:
        bundled_devices(path)
    (msg,) = [str(p) for p in exc.value.problems]
    assert "entry #2 (id 'other'): memroy_gb: unknown key 'memroy_gb' (did you mean 'memory_gb'?)" in msg


def test_duplicate_device_ids_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": [_entry(), _entry()]}, sort_keys=False))
    with pytest.raises(DataFileError, match=r"entry #2 \(id 'test-gpu'\): id: duplicate id 'test-gpu'"):
        bundled_devices(path)


def test_hardware_kind_is_the_schema_enum() -> None:
    assert load_device("h100-sxm").hardware is Hardware.NVIDIA_GPU


def test_bundled_table_covers_the_generations_the_recommender_distinguishes() -> None:
    devices = bundled_devices()
    assert len(devices) >= 20
    assert {d.hardware for d in devices.values()} == set(Hardware)
    archs = {d.arch for d in devices.values()}
    assert {"volta", "turing", "ampere", "ada", "hopper", "blackwell"} <= archs
    assert {"cdna2", "cdna3"} <= archs
    assert {"apple-m1", "apple-m2", "apple-m3", "apple-m4"} <= archs
    cpus = [d for d in devices.values() if d.hardware is Hardware.CPU]
    assert any(d.supports & {"avx2"} and not d.supports & {"avx512"} for d in cpus)  # AVX2-only x86
    assert any(d.has("avx512") and not d.has("amx") for d in cpus)
    assert any(d.has("amx") for d in cpus)
    assert any(d.has("sve") for d in cpus)  # Arm servers


def test_fp8_exactly_where_the_hardware_has_it() -> None:
    """FP8 on Ada/Hopper/Blackwell and CDNA3; not on Ampere (the mistake the issue describes)."""
    devices = bundled_devices()
    assert devices["h100-sxm"].has("fp8") and devices["rtx-4090"].has("fp8") and devices["mi300x"].has("fp8")
    assert not devices["a100-80gb"].has("fp8") and not devices["t4"].has("fp8")
    assert devices["a100-80gb"].has("marlin", "bf16") and not devices["t4"].has("marlin")
    assert not devices["h100-sxm"].has("int4-tc")  # dropped from Hopper


def test_every_feature_flag_is_used_and_described() -> None:
    used = set().union(*(d.supports for d in bundled_devices().values()))
    assert used == set(FEATURES)
    assert all(len(text) > 10 for text in FEATURES.values())
